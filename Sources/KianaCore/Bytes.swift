import Crypto

/// Hex and base64 helpers for byte arrays.
public enum Hex {
    private static let digits = Array("0123456789abcdef".utf8)

    public static func encode<S: Sequence>(_ bytes: S) -> String where S.Element == UInt8 {
        var out = [UInt8]()
        out.reserveCapacity(bytes.underestimatedCount * 2)
        for b in bytes {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 0xF)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Decodes lower- or upper-case hex; nil on odd length or a non-hex character.
    public static func decode(_ text: String) -> [UInt8]? {
        let u = Array(text.utf8)
        guard u.count % 2 == 0 else { return nil }
        var out = [UInt8]()
        out.reserveCapacity(u.count / 2)
        var i = 0
        while i < u.count {
            guard let hi = nibble(u[i]), let lo = nibble(u[i + 1]) else { return nil }
            out.append(hi << 4 | lo)
            i += 2
        }
        return out
    }

    private static func nibble(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}

/// SHA-256 helpers returning plain byte arrays.
public enum SHA {
    public static func hash(_ bytes: [UInt8]) -> [UInt8] {
        Array(SHA256.hash(data: bytes))
    }

    /// SHA-256 over a one-byte prefix and parts added one by one, each preceded by its length
    /// (4 bytes, big-endian) so that no two lists of parts hash alike.
    public struct Framed {
        var h = SHA256()
        public init(prefix: UInt8) { withUnsafeBytes(of: prefix) { h.update(bufferPointer: $0) } }
        public mutating func add(_ part: [UInt8]) {
            withUnsafeBytes(of: UInt32(truncatingIfNeeded: part.count).bigEndian) { h.update(bufferPointer: $0) }
            part.withUnsafeBytes { h.update(bufferPointer: $0) }
        }
        public func finish() -> [UInt8] { Array(h.finalize()) }
    }

    /// SHA-256 over a one-byte prefix followed by `parts`, without concatenating first.
    public static func hash(prefix: UInt8, _ parts: [UInt8]...) -> [UInt8] {
        var h = SHA256()
        withUnsafeBytes(of: prefix) { h.update(bufferPointer: $0) }
        for p in parts { h.update(data: p) }
        return Array(h.finalize())
    }
}
