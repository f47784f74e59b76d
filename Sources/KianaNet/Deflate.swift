import CZlib

/// zlib-format deflate (RFC 1950/1951) through Debian's zlib, for sync batches. Inflating is
/// bounded: the caller states the exact size it accepts, and anything that would inflate to
/// more (a decompression bomb) or to a different size is refused.
public enum Deflate {
    /// Compresses `bytes` at `level` (1 fastest … 9 smallest).
    public static func compress(_ bytes: [UInt8], level: Int32 = 6) -> [UInt8] {
        var outLen = compressBound(uLong(bytes.count))
        var out = [UInt8](repeating: 0, count: Int(outLen))
        let rc = out.withUnsafeMutableBufferPointer { o in
            bytes.withUnsafeBufferPointer { i in
                compress2(o.baseAddress, &outLen, i.baseAddress, uLong(bytes.count), level)
            }
        }
        // compressBound guarantees room, so only memory exhaustion can fail here.
        precondition(rc == Z_OK, "zlib compress2 failed (\(rc))")
        out.removeLast(out.count - Int(outLen))
        return out
    }

    /// Inflates `bytes`, which must hold exactly `size` bytes (at most `limit`).
    public static func decompress(_ bytes: [UInt8], size: Int, limit: Int) throws(KianaNetError) -> [UInt8] {
        guard size >= 0, size <= limit else {
            throw KianaNetError(.tooLarge, "a compressed batch claims \(size) bytes; at most \(limit) are accepted")
        }
        var out = [UInt8](repeating: 0, count: max(size, 1))
        var outLen = uLong(size)
        let rc = out.withUnsafeMutableBufferPointer { o in
            bytes.withUnsafeBufferPointer { i in
                uncompress(o.baseAddress, &outLen, i.baseAddress, uLong(bytes.count))
            }
        }
        guard rc == Z_OK, Int(outLen) == size else {
            throw KianaNetError(.protocolViolation, "a compressed batch does not inflate to its stated \(size) bytes (zlib \(rc))")
        }
        if size == 0 { return [] }
        return out
    }
}
