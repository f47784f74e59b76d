import Foundation

/// A strict RFC 8259 syntax check that says where JSON goes wrong (line and column), which
/// Foundation's decoder does not, and refuses what it lets through (trailing commas); escapes
/// must make valid Unicode (no lone UTF-16 surrogate).
public struct JSONSyntax: Sendable {
    public struct Failure: Error, Sendable {
        public var line: Int
        public var column: Int
        public var message: String
    }

    private let bytes: [UInt8]
    private var at = 0

    private init(_ bytes: [UInt8]) { self.bytes = bytes }

    /// The first syntax error in `data`, or nil when it is one JSON value.
    public static func firstError(in data: Data) -> Failure? {
        var p = JSONSyntax([UInt8](data))
        if let bad = p.firstInvalidUTF8() {
            p.at = bad
            return p.fail("not valid UTF-8")
        }
        do throws(Failure) {
            p.skipSpace()
            try p.value(depth: 0)
            p.skipSpace()
            if p.at < p.bytes.count { throw p.fail("more text after the JSON value") }
            return nil
        } catch {
            return error
        }
    }

    /// The offset of the first byte that is not part of valid UTF-8, if any.
    private func firstInvalidUTF8() -> Int? {
        var iterator = bytes.makeIterator()
        var parser = Unicode.UTF8.ForwardParser()
        var offset = 0
        while true {
            switch parser.parseScalar(from: &iterator) {
            case .valid(let scalar): offset += scalar.count
            case .emptyInput: return nil
            case .error: return offset
            }
        }
    }

    /// Line and column (in characters) of byte `offset`, both from 1.
    private func position(_ offset: Int) -> (line: Int, column: Int) {
        var line = 1
        var column = 1
        for b in bytes[..<min(offset, bytes.count)] {
            if b == 0x0A {
                line += 1
                column = 1
            } else if b & 0xC0 != 0x80 {
                column += 1
            }
        }
        return (line, column)
    }

    private func fail(_ message: String, at offset: Int? = nil) -> Failure {
        let p = position(offset ?? at)
        return Failure(line: p.line, column: p.column, message: message)
    }

    private var next: UInt8? { at < bytes.count ? bytes[at] : nil }

    private mutating func skipSpace() {
        while let b = next, b == 0x20 || b == 0x09 || b == 0x0A || b == 0x0D { at += 1 }
    }

    private mutating func expect(_ c: Character, _ message: String) throws(Failure) {
        guard next == c.asciiValue else { throw fail(message) }
        at += 1
    }

    private mutating func value(depth: Int) throws(Failure) {
        guard depth < 512 else { throw fail("nested more than 512 deep") }
        guard let b = next else { throw fail("the file ends where a value should be") }
        switch b {
        case UInt8(ascii: "{"): try object(depth: depth)
        case UInt8(ascii: "["): try array(depth: depth)
        case UInt8(ascii: "\""): try string()
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): try number()
        case UInt8(ascii: "t"): try literal("true")
        case UInt8(ascii: "f"): try literal("false")
        case UInt8(ascii: "n"): try literal("null")
        default:
            let shown = b >= 0x20 && b < 0x7F ? "'\(Character(UnicodeScalar(b)))'" : String(format: "byte 0x%02X", b)
            throw fail("\(shown) where a value should be (strings need double quotes; true, false and null are lower case)")
        }
    }

    private mutating func object(depth: Int) throws(Failure) {
        try members(closedBy: "}", depth: depth) { p throws(Failure) in
            guard p.next == UInt8(ascii: "\"") else { throw p.fail("a key in double quotes should come here") }
            try p.string()
            p.skipSpace()
            try p.expect(":", "':' should follow the key")
            p.skipSpace()
            try p.value(depth: depth + 1)
        }
    }

    private mutating func array(depth: Int) throws(Failure) {
        try members(closedBy: "]", depth: depth) { p throws(Failure) in try p.value(depth: depth + 1) }
    }

    /// The members of an object or array after its opening bracket: none, or `member`s
    /// separated by commas, up to `close` (a comma right before it is refused).
    private mutating func members(closedBy close: Character, depth: Int, _ member: (inout JSONSyntax) throws(Failure) -> Void) throws(Failure) {
        at += 1
        skipSpace()
        if next == close.asciiValue {
            at += 1
            return
        }
        while true {
            skipSpace()
            try member(&self)
            skipSpace()
            if next == UInt8(ascii: ",") {
                at += 1
                skipSpace()
                if next == close.asciiValue { throw fail("a comma before '\(close)' (JSON has no trailing commas)") }
                continue
            }
            try expect(close, "',' or '\(close)' should come here")
            return
        }
    }

    private mutating func string() throws(Failure) {
        at += 1
        while let b = next {
            switch b {
            case UInt8(ascii: "\""):
                at += 1
                return
            case UInt8(ascii: "\\"):
                at += 1
                guard let e = next else { break }
                if e == UInt8(ascii: "u") {
                    at -= 1
                    let start = at
                    let unit = try hexEscape()
                    if (0xDC00...0xDFFF).contains(unit) {
                        throw fail("a lone UTF-16 low surrogate escape (\\u\(String(unit, radix: 16)))", at: start)
                    }
                    if (0xD800...0xDBFF).contains(unit) {
                        guard next == UInt8(ascii: "\\"), (try? peekHexEscape()).map({ (0xDC00...0xDFFF).contains($0) }) == true else {
                            throw fail("a lone UTF-16 high surrogate escape (\\u\(String(unit, radix: 16)) without its low half)", at: start)
                        }
                        _ = try hexEscape()
                    }
                } else {
                    guard "\"\\/bfnrt".utf8.contains(e) else { throw fail("an escape JSON does not have (\\\"  \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX)") }
                    at += 1
                }
            case 0..<0x20:
                throw fail("a control character inside a string (write a line break as \\n)")
            default:
                at += 1
            }
        }
        throw fail("the string is not closed")
    }

    /// Reads `\uXXXX` at the current position and returns its code unit.
    private mutating func hexEscape() throws(Failure) -> Int {
        guard next == UInt8(ascii: "\\") else { throw fail("an escape should come here") }
        at += 1
        guard next == UInt8(ascii: "u") else { throw fail("an escape should come here") }
        at += 1
        var unit = 0
        for _ in 0..<4 {
            guard let h = next, let v = Int(String(UnicodeScalar(h)), radix: 16) else { throw fail("\\u should be followed by four hex digits") }
            unit = unit << 4 | v
            at += 1
        }
        return unit
    }

    /// The code unit of a `\uXXXX` escape at the current position, without moving.
    private func peekHexEscape() throws(Failure) -> Int {
        var copy = self
        return try copy.hexEscape()
    }

    private mutating func digits() -> Int {
        let start = at
        while let b = next, b >= 0x30 && b <= 0x39 { at += 1 }
        return at - start
    }

    private mutating func number() throws(Failure) {
        if next == UInt8(ascii: "-") { at += 1 }
        if next == UInt8(ascii: "0") {
            at += 1
        } else {
            guard digits() > 0 else { throw fail("a digit should come here") }
        }
        if next == UInt8(ascii: ".") {
            at += 1
            guard digits() > 0 else { throw fail("a digit should follow the decimal point") }
        }
        if next == UInt8(ascii: "e") || next == UInt8(ascii: "E") {
            at += 1
            if next == UInt8(ascii: "+") || next == UInt8(ascii: "-") { at += 1 }
            guard digits() > 0 else { throw fail("a digit should follow the exponent") }
        }
    }

    private mutating func literal(_ word: String) throws(Failure) {
        let start = at
        for c in word.utf8 {
            guard next == c else { throw fail("not a JSON value (true, false and null are lower case; strings need double quotes)", at: start) }
            at += 1
        }
    }
}
