import Foundation

/// A strict RFC 8259 syntax check that says where a config file goes wrong (line and column),
/// which Foundation's decoder does not, and refuses what it lets through (trailing commas).
struct JSONSyntax {
    struct Failure: Error {
        var line: Int
        var column: Int
        var message: String
    }

    private let bytes: [UInt8]
    private var at = 0

    private init(_ bytes: [UInt8]) { self.bytes = bytes }

    /// The first syntax error in `data`, or nil when it is one JSON value.
    static func firstError(in data: Data) -> Failure? {
        var p = JSONSyntax(Array(data))
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

    private func fail(_ message: String) -> Failure {
        let p = position(at)
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
        guard depth < 64 else { throw fail("nested more than 64 deep") }
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
        at += 1
        skipSpace()
        if next == UInt8(ascii: "}") {
            at += 1
            return
        }
        while true {
            skipSpace()
            guard next == UInt8(ascii: "\"") else { throw fail("a key in double quotes should come here") }
            try string()
            skipSpace()
            try expect(":", "':' should follow the key")
            skipSpace()
            try value(depth: depth + 1)
            skipSpace()
            if next == UInt8(ascii: ",") {
                at += 1
                skipSpace()
                if next == UInt8(ascii: "}") { throw fail("a comma before '}' (JSON has no trailing commas)") }
                continue
            }
            try expect("}", "',' or '}' should come here")
            return
        }
    }

    private mutating func array(depth: Int) throws(Failure) {
        at += 1
        skipSpace()
        if next == UInt8(ascii: "]") {
            at += 1
            return
        }
        while true {
            skipSpace()
            try value(depth: depth + 1)
            skipSpace()
            if next == UInt8(ascii: ",") {
                at += 1
                skipSpace()
                if next == UInt8(ascii: "]") { throw fail("a comma before ']' (JSON has no trailing commas)") }
                continue
            }
            try expect("]", "',' or ']' should come here")
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
                    at += 1
                    for _ in 0..<4 {
                        guard let h = next, (h >= 0x30 && h <= 0x39) || (h | 0x20 >= 0x61 && h | 0x20 <= 0x66) else {
                            throw fail("\\u should be followed by four hex digits")
                        }
                        at += 1
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
        for c in word.utf8 {
            guard next == c else { throw fail("not a JSON value (true, false and null are lower case; strings need double quotes)") }
            at += 1
        }
    }
}
