import KianaCore

/// One message of the link protocol, carried as CBOR `{"k": kind, "t": type, "i": id, "v":
/// version, "b": body}` inside the encrypted transport.
///
/// A request (`k` 0) gets exactly one response (1) or error (2) with the same ID, or a stream of
/// items (3) closed by an end (4). Notifications (5) get no answer. An unknown kind or request
/// type is answered with an error and the link stays up.
public struct LinkMessage: Sendable, Equatable {
    public enum Kind: UInt64, Sendable {
        case request = 0
        case response = 1
        case error = 2
        case item = 3
        case end = 4
        case notify = 5
    }

    public var kind: Kind
    public var type: String
    public var id: UInt64
    public var version: UInt64
    public var body: CBOR

    /// The link protocol versions this build speaks; `hello` picks the highest common one.
    public static let supportedVersions: [UInt64] = [1]
    public static let maxTypeLength = 64

    public init(kind: Kind, type: String, id: UInt64 = 0, version: UInt64 = 1, body: CBOR = .map([:])) {
        self.kind = kind
        self.type = type
        self.id = id
        self.version = version
        self.body = body
    }

    public var encoded: [UInt8] {
        CBOR.map(["k": .unsigned(kind.rawValue), "t": .text(type), "i": .unsigned(id), "v": .unsigned(version), "b": body]).encoded
    }

    /// What a received message turned out to be: a message, or something well-formed enough to
    /// answer with an error (an unknown kind), or garbage (the link is closed).
    public enum Decoded: Sendable, Equatable {
        case message(LinkMessage)
        case unknownKind(id: UInt64, kind: UInt64)
    }

    static let limits = CBOR.Limits(maxDepth: 16, maxItems: 1 << 16)

    public static func decode(_ bytes: [UInt8]) throws(KianaNetError) -> Decoded {
        do throws(KianaCoreError) {
            let m = try CBOR.decode(bytes, limits: limits).mapValue("link message")
            try m.onlyKeys(["k", "t", "i", "v", "b"], in: "link message")
            let k = try m.required("k", in: "link message").uintValue("kind")
            let t = try m.required("t", in: "link message").textValue("type")
            let i = try m.required("i", in: "link message").uintValue("id")
            let v = try m.required("v", in: "link message").uintValue("version")
            let b = try m.required("b", in: "link message")
            guard !t.isEmpty, t.utf8.count <= maxTypeLength else {
                throw KianaCoreError(.invalidStructure, "message type must be 1...\(maxTypeLength) bytes")
            }
            guard let kind = Kind(rawValue: k) else { return .unknownKind(id: i, kind: k) }
            return .message(LinkMessage(kind: kind, type: t, id: i, version: v, body: b))
        } catch {
            throw KianaNetError(.protocolViolation, "malformed link message: \(error.message)", cause: error)
        }
    }

    /// An error answer to request `id`.
    public static func error(to id: UInt64, type: String, code: ErrorCode, _ message: String) -> LinkMessage {
        LinkMessage(kind: .error, type: type, id: id, body: .map(["code": .text(code.rawValue), "message": .text(message)]))
    }
}

/// The first bytes a dialer sends, in the clear, before the Noise handshake: they tell the
/// listener which prologue to use. They are part of the prologue, so altering them breaks the
/// handshake.
///
/// `"KIANA" ‖ version 1 ‖ mode ‖ 8-byte network tag` (15 bytes). The tag is the first 8 bytes of
/// SHA-256(network ID) for a member link and zero for pairing, where the joiner has no network.
public struct LinkPreamble: Sendable, Equatable {
    public enum Mode: UInt8, Sendable {
        case member = 0
        case pairing = 1
    }
    public static let size = 15
    static let magic = Array("KIANA".utf8)

    public var mode: Mode
    public var networkTag: [UInt8]

    public init(mode: Mode, network: [UInt8]?) {
        self.mode = mode
        self.networkTag = network.map { Self.tag($0) } ?? [UInt8](repeating: 0, count: 8)
    }

    public static func tag(_ network: [UInt8]) -> [UInt8] { Array(SHA.hash(network).prefix(8)) }

    public var encoded: [UInt8] { Self.magic + [1, mode.rawValue] + networkTag }

    public init(decoding b: [UInt8]) throws(KianaNetError) {
        guard b.count == Self.size, Array(b[0..<5]) == Self.magic else {
            throw KianaNetError(.handshake, "not a KI_ana link (bad preamble)")
        }
        guard b[5] == 1 else { throw KianaNetError(.handshake, "unsupported link version \(b[5])") }
        guard let mode = Mode(rawValue: b[6]) else { throw KianaNetError(.handshake, "unknown link mode \(b[6])") }
        self.mode = mode
        self.networkTag = Array(b[7..<15])
    }

    /// The Noise prologue: domain, these bytes, and (member links) the full network ID.
    public func prologue(network: [UInt8]?) -> [UInt8] {
        Array("KIANA-LINK-V1".utf8) + encoded + (mode == .member ? (network ?? []) : [])
    }
}

/// The short authentication string both sides of a pairing show: six digits from the Noise
/// handshake hash, so a man in the middle (who has a different hash with each side) is caught
/// when the owner compares them.
public enum PairingCode {
    public static func code(handshakeHash: [UInt8]) -> String {
        let d = SHA.hash(Array("KIANA-SAS-V1".utf8) + handshakeHash)
        let v = (UInt32(d[0]) << 24 | UInt32(d[1]) << 16 | UInt32(d[2]) << 8 | UInt32(d[3])) % 1_000_000
        let s = String(v)
        let padded = String(repeating: "0", count: 6 - s.count) + s
        return String(padded.prefix(3)) + " " + String(padded.suffix(3))
    }

    /// Compares what the owner typed with the code, ignoring spaces and dashes.
    public static func matches(_ typed: String, _ code: String) -> Bool {
        let clean = typed.filter { $0.isNumber }
        return clean.count == 6 && clean == code.filter { $0.isNumber }
    }
}
