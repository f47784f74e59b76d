/// Wire framing of a device link. Dependency-free so the fuzz target can compile it alone.
///
/// Two layers:
/// - `FrameDecoder`: the TCP byte stream carries frames `u16 big-endian length ‖ body`, each body
///   one Noise message (handshake or transport), so a frame is at most 65,535 bytes and a
///   zero-length frame is invalid.
/// - `MessageDecoder`: the decrypted transport stream carries link messages
///   `u32 big-endian length ‖ CBOR`, at most `maxMessage` bytes; a message longer than one Noise
///   payload spans several frames.
public struct FrameDecoder: Sendable {
    public static let maxFrame = 65535
    var buffer: [UInt8] = []
    var start = 0

    public init() {}

    /// Bytes received but not yet returned as a frame.
    public var pendingCount: Int { buffer.count - start }

    /// Appends received bytes.
    public mutating func append<C: Collection>(_ bytes: C) where C.Element == UInt8 {
        if start > 0 && start == buffer.count {
            buffer.removeAll(keepingCapacity: true)
            start = 0
        }
        buffer.append(contentsOf: bytes)
    }

    /// The next complete frame, or nil when more bytes are needed.
    public mutating func next() throws(KianaNetError) -> [UInt8]? {
        guard buffer.count - start >= 2 else {
            compact()
            return nil
        }
        let length = Int(buffer[start]) << 8 | Int(buffer[start + 1])
        guard length > 0 else { throw KianaNetError(.protocolViolation, "empty frame") }
        guard buffer.count - start >= 2 + length else {
            compact()
            return nil
        }
        let frame = Array(buffer[(start + 2)..<(start + 2 + length)])
        start += 2 + length
        return frame
    }

    mutating func compact() {
        if start > 4096 && start * 2 > buffer.count {
            buffer.removeFirst(start)
            start = 0
        }
    }

    /// `body` with its length prefix.
    public static func encode(_ body: [UInt8]) throws(KianaNetError) -> [UInt8] {
        guard !body.isEmpty, body.count <= maxFrame else {
            throw KianaNetError(.protocolViolation, "frame body of \(body.count) bytes is outside 1...\(maxFrame)")
        }
        return [UInt8(body.count >> 8), UInt8(body.count & 0xFF)] + body
    }
}

/// Reassembles length-prefixed link messages from decrypted transport payloads.
public struct MessageDecoder: Sendable {
    /// The largest link message accepted (4 MiB): a batch of blocks fits, a flood does not.
    public static let defaultMaxMessage = 4 << 20
    public let maxMessage: Int
    var frames = FrameDecoderCore()

    public init(maxMessage: Int = MessageDecoder.defaultMaxMessage) {
        self.maxMessage = maxMessage
    }

    public mutating func append<C: Collection>(_ bytes: C) where C.Element == UInt8 {
        frames.append(bytes)
    }

    /// The next complete message, or nil when more bytes are needed. An announced length of
    /// zero or above `maxMessage` fails before anything is buffered for it.
    public mutating func next() throws(KianaNetError) -> [UInt8]? {
        guard frames.available >= 4 else { return nil }
        let h = frames.peek(4)
        let length = Int(h[0]) << 24 | Int(h[1]) << 16 | Int(h[2]) << 8 | Int(h[3])
        guard length > 0 else { throw KianaNetError(.protocolViolation, "empty link message") }
        guard length <= maxMessage else {
            throw KianaNetError(.protocolViolation, "link message of \(length) bytes exceeds the limit of \(maxMessage)")
        }
        guard frames.available >= 4 + length else { return nil }
        frames.skip(4)
        return frames.take(length)
    }

    /// `message` with its length prefix, cut into pieces that each fit one Noise payload.
    public static func encode(_ message: [UInt8], maxMessage: Int = defaultMaxMessage, chunk: Int = 65535 - 16) throws(KianaNetError) -> [[UInt8]] {
        guard !message.isEmpty, message.count <= maxMessage else {
            throw KianaNetError(.protocolViolation, "link message of \(message.count) bytes is outside 1...\(maxMessage)")
        }
        let n = message.count
        let all = [UInt8(n >> 24 & 0xFF), UInt8(n >> 16 & 0xFF), UInt8(n >> 8 & 0xFF), UInt8(n & 0xFF)] + message
        var out: [[UInt8]] = []
        var i = 0
        while i < all.count {
            let j = min(i + chunk, all.count)
            out.append(Array(all[i..<j]))
            i = j
        }
        return out
    }
}

/// A byte queue with cheap consumption from the front.
struct FrameDecoderCore: Sendable {
    var buffer: [UInt8] = []
    var start = 0
    var available: Int { buffer.count - start }

    mutating func append<C: Collection>(_ bytes: C) where C.Element == UInt8 {
        if start == buffer.count {
            buffer.removeAll(keepingCapacity: true)
            start = 0
        }
        buffer.append(contentsOf: bytes)
    }

    /// The next `n` bytes, indexed from 0 (a slice would keep the buffer's indices: the fuzz
    /// target found the decoder reading `h[0]` out of range for a second buffered message).
    func peek(_ n: Int) -> [UInt8] { Array(buffer[start..<(start + n)]) }
    mutating func skip(_ n: Int) { start += n }
    mutating func take(_ n: Int) -> [UInt8] {
        let out = Array(buffer[start..<(start + n)])
        start += n
        if start > 65536 && start * 2 > buffer.count {
            buffer.removeFirst(start)
            start = 0
        }
        return out
    }
}
