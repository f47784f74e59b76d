/// A CBOR data item restricted to what KI_ana hashes, signs and sends: integers, byte and
/// text strings, arrays, maps, booleans and null. No floats, no tags, no indefinite lengths.
///
/// `encoded` produces RFC 8949 §4.2.1 core deterministic encoding: shortest-form heads,
/// definite lengths, map keys sorted by the bytewise order of their encodings.
/// `CBOR.decode` accepts only that encoding, so every accepted value re-encodes to the
/// exact bytes it came from.
public indirect enum CBOR: Hashable, Sendable {
    case unsigned(UInt64)
    /// The integer `-1 - n`.
    case negative(UInt64)
    case bytes([UInt8])
    case text(String)
    case array([CBOR])
    case map([CBOR: CBOR])
    case bool(Bool)
    case null

    /// Limits applied while decoding untrusted bytes.
    public struct Limits: Sendable {
        public var maxDepth: Int
        public var maxItems: Int
        public init(maxDepth: Int = 32, maxItems: Int = 1 << 20) {
            self.maxDepth = maxDepth
            self.maxItems = maxItems
        }
    }

    public init(_ v: Int) { self = v >= 0 ? .unsigned(UInt64(v)) : .negative(UInt64(-(v + 1))) }
    public init(_ v: UInt64) { self = .unsigned(v) }
    public init(_ s: String) { self = .text(s) }
    public init(_ b: [UInt8]) { self = .bytes(b) }

    // MARK: encoding

    /// The deterministic encoding of this item.
    public var encoded: [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(128)
        encode(into: &out)
        return out
    }

    public func encode(into out: inout [UInt8]) {
        switch self {
        case .unsigned(let v): CBOR.head(0, v, &out)
        case .negative(let v): CBOR.head(1, v, &out)
        case .bytes(let b):
            CBOR.head(2, UInt64(b.count), &out)
            out.append(contentsOf: b)
        case .text(let s):
            var s = s
            s.withUTF8 { u in
                CBOR.head(3, UInt64(u.count), &out)
                out.append(contentsOf: u)
            }
        case .array(let items):
            CBOR.head(4, UInt64(items.count), &out)
            for i in items { i.encode(into: &out) }
        case .map(let m):
            CBOR.head(5, UInt64(m.count), &out)
            // Text keys (the common case) sort without being encoded first: their encodings
            // order by UTF-8 length, then bytewise, which is the deterministic order.
            if m.keys.allSatisfy({ if case .text = $0 { return true } else { return false } }) {
                var pairs: [(String.UTF8View, CBOR, CBOR)] = []
                pairs.reserveCapacity(m.count)
                for (k, v) in m { if case .text(let t) = k { pairs.append((t.utf8, k, v)) } }
                pairs.sort { $0.0.count != $1.0.count ? $0.0.count < $1.0.count : $0.0.lexicographicallyPrecedes($1.0) }
                for (_, k, v) in pairs {
                    k.encode(into: &out)
                    v.encode(into: &out)
                }
            } else {
                var pairs: [([UInt8], CBOR)] = []
                pairs.reserveCapacity(m.count)
                for (k, v) in m { pairs.append((k.encoded, v)) }
                pairs.sort { $0.0.lexicographicallyPrecedes($1.0) }
                for (k, v) in pairs {
                    out.append(contentsOf: k)
                    v.encode(into: &out)
                }
            }
        case .bool(let b): out.append(b ? 0xF5 : 0xF4)
        case .null: out.append(0xF6)
        }
    }

    @inline(__always)
    static func head(_ major: UInt8, _ v: UInt64, _ out: inout [UInt8]) {
        let m = major << 5
        if v < 24 {
            out.append(m | UInt8(v))
        } else if v <= 0xFF {
            out.append(m | 24)
            out.append(UInt8(v))
        } else if v <= 0xFFFF {
            out.append(m | 25)
            out.append(UInt8(v >> 8))
            out.append(UInt8(v & 0xFF))
        } else if v <= 0xFFFF_FFFF {
            out.append(m | 26)
            for s in stride(from: 24, through: 0, by: -8) { out.append(UInt8((v >> UInt64(s)) & 0xFF)) }
        } else {
            out.append(m | 27)
            for s in stride(from: 56, through: 0, by: -8) { out.append(UInt8((v >> UInt64(s)) & 0xFF)) }
        }
    }

    // MARK: decoding

    /// Decodes exactly one deterministic CBOR item from `bytes`; trailing bytes are an error.
    public static func decode(_ bytes: [UInt8], limits: Limits = Limits()) throws(KianaCoreError) -> CBOR {
        try bytes.withUnsafeBufferPointer { buf throws(KianaCoreError) -> CBOR in
            var d = Decoder(buf: buf, limits: limits)
            let v = try d.item(depth: 0)
            guard d.pos == buf.count else {
                throw KianaCoreError(.malformedEncoding, "\(buf.count - d.pos) trailing bytes after CBOR item")
            }
            return v
        }
    }

    struct Decoder {
        let buf: UnsafeBufferPointer<UInt8>
        let limits: Limits
        var pos = 0
        var items = 0

        init(buf: UnsafeBufferPointer<UInt8>, limits: Limits) {
            self.buf = buf
            self.limits = limits
        }

        func fail(_ why: String) -> KianaCoreError {
            KianaCoreError(.malformedEncoding, "\(why) at byte \(pos)")
        }

        mutating func byte() throws(KianaCoreError) -> UInt8 {
            guard pos < buf.count else { throw fail("unexpected end of input") }
            defer { pos += 1 }
            return buf[pos]
        }

        /// Reads a head; returns (major, argument) and enforces shortest form.
        mutating func head() throws(KianaCoreError) -> (UInt8, UInt64) {
            let ib = try byte()
            let major = ib >> 5
            let ai = ib & 0x1F
            if major == 7 { return (7, UInt64(ai)) }
            switch ai {
            case 0..<24: return (major, UInt64(ai))
            case 24:
                let v = UInt64(try byte())
                guard v >= 24 else { throw fail("non-shortest integer encoding") }
                return (major, v)
            case 25, 26, 27:
                let n = 1 << (ai - 24)
                guard buf.count - pos >= n else { throw fail("unexpected end of input") }
                var v: UInt64 = 0
                for _ in 0..<n {
                    v = v << 8 | UInt64(buf[pos])
                    pos += 1
                }
                let minimum: UInt64 = n == 2 ? 0x100 : n == 4 ? 0x1_0000 : 0x1_0000_0000
                guard v >= minimum else { throw fail("non-shortest integer encoding") }
                return (major, v)
            case 31: throw fail("indefinite length is not deterministic")
            default: throw fail("reserved additional information \(ai)")
            }
        }

        mutating func length(_ v: UInt64) throws(KianaCoreError) -> Int {
            guard v <= UInt64(buf.count - pos) else { throw fail("length \(v) exceeds remaining input") }
            return Int(v)
        }

        mutating func item(depth: Int) throws(KianaCoreError) -> CBOR {
            guard depth <= limits.maxDepth else { throw fail("nesting deeper than \(limits.maxDepth)") }
            items += 1
            guard items <= limits.maxItems else { throw fail("more than \(limits.maxItems) items") }
            let start = pos
            let (major, v) = try head()
            switch major {
            case 0: return .unsigned(v)
            case 1: return .negative(v)
            case 2:
                let n = try length(v)
                defer { pos += n }
                return .bytes(Array(buf[pos..<pos + n]))
            case 3:
                let n = try length(v)
                let slice = UnsafeBufferPointer(rebasing: buf[pos..<pos + n])
                guard let s = String(validating: slice, as: UTF8.self) else {
                    throw fail("invalid UTF-8 in text string")
                }
                pos += n
                return .text(s)
            case 4:
                // Each item takes at least one byte, so a count above the remaining bytes is a lie.
                let n = try length(v)
                var a: [CBOR] = []
                a.reserveCapacity(n)
                for _ in 0..<n { a.append(try item(depth: depth + 1)) }
                return .array(a)
            case 5:
                let n = try length(v)
                var m: [CBOR: CBOR] = [:]
                m.reserveCapacity(n)
                var prevKey: UnsafeBufferPointer<UInt8>? = nil
                for _ in 0..<n {
                    let ks = pos
                    let k = try item(depth: depth + 1)
                    let key = UnsafeBufferPointer(rebasing: buf[ks..<pos])
                    if let p = prevKey {
                        guard p.lexicographicallyPrecedes(key) else {
                            pos = ks
                            throw p.elementsEqual(key) ? fail("duplicate map key") : fail("map keys not in deterministic order")
                        }
                    }
                    prevKey = key
                    // Distinct key bytes can still be equal keys: Swift's String compares by
                    // canonical equivalence ("é" precomposed vs "e" + U+0301). Such a map would
                    // lose a value and no longer re-encode to its input, so it is refused.
                    guard m.updateValue(try item(depth: depth + 1), forKey: k) == nil else {
                        pos = ks
                        throw fail("map keys that differ only in Unicode normalisation")
                    }
                }
                return .map(m)
            case 6:
                pos = start
                throw fail("tags are not accepted")
            default:  // 7
                switch v {
                case 20: return .bool(false)
                case 21: return .bool(true)
                case 22: return .null
                case 25, 26, 27:
                    pos = start
                    throw fail("floating-point values are not accepted")
                default:
                    pos = start
                    throw fail("simple value \(v) is not accepted")
                }
            }
        }
    }
}

// MARK: typed access

extension CBOR {
    /// Typed accessors used when mapping decoded items onto structs; each throws a clear
    /// `.invalidStructure` error naming the field.
    public func mapValue(_ what: String) throws(KianaCoreError) -> [CBOR: CBOR] {
        guard case .map(let m) = self else { throw KianaCoreError(.invalidStructure, "\(what) must be a map") }
        return m
    }

    public func arrayValue(_ what: String) throws(KianaCoreError) -> [CBOR] {
        guard case .array(let a) = self else { throw KianaCoreError(.invalidStructure, "\(what) must be an array") }
        return a
    }

    public func uintValue(_ what: String) throws(KianaCoreError) -> UInt64 {
        guard case .unsigned(let v) = self else { throw KianaCoreError(.invalidStructure, "\(what) must be an unsigned integer") }
        return v
    }

    public func textValue(_ what: String) throws(KianaCoreError) -> String {
        guard case .text(let v) = self else { throw KianaCoreError(.invalidStructure, "\(what) must be a text string") }
        return v
    }

    public func bytesValue(_ what: String, count: Int? = nil) throws(KianaCoreError) -> [UInt8] {
        guard case .bytes(let v) = self else { throw KianaCoreError(.invalidStructure, "\(what) must be a byte string") }
        if let count, v.count != count {
            throw KianaCoreError(.invalidStructure, "\(what) must be \(count) bytes, not \(v.count)")
        }
        return v
    }
}

extension Dictionary where Key == CBOR, Value == CBOR {
    /// The value under text key `key`, or an `.invalidStructure` error naming it.
    public func required(_ key: String, in what: String) throws(KianaCoreError) -> CBOR {
        guard let v = self[.text(key)] else { throw KianaCoreError(.invalidStructure, "\(what) is missing \"\(key)\"") }
        return v
    }

    /// Rejects keys other than `allowed`, so unknown fields cannot ride along unsigned-for.
    public func onlyKeys(_ allowed: Set<String>, in what: String) throws(KianaCoreError) {
        for k in keys {
            guard case .text(let s) = k, allowed.contains(s) else {
                throw KianaCoreError(.invalidStructure, "\(what) has unexpected field \(k)")
            }
        }
    }
}

extension CBOR: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral {
    public init(stringLiteral value: String) { self = .text(value) }
    public init(integerLiteral value: Int) { self.init(value) }
}

/// Namespace for the allowed-key sets of each decoded structure.
enum KeySets {}
