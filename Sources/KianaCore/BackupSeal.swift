import Crypto
import CryptoExtras
import Foundation

/// The sealed backup format (docs/decisions.md 96), pure: no files here.
///
///     "KIANABK1" | u32 header length | header (CBOR map) | frames…
///     frame = u32 length | ChaCha20-Poly1305 ciphertext+tag of up to `chunk` plaintext bytes
///
/// The key is scrypt(passphrase, salt, N, r, p) with the parameters in the header; frame i's nonce
/// is the header's 7-byte prefix, i as u32 big-endian, and 1 for the last frame (0 otherwise), so
/// frames cannot be reordered, dropped or the stream cut short unnoticed. Every frame authenticates
/// the magic and the header as associated data. `check` (HMAC of a constant under the key) tells a
/// wrong passphrase from a damaged file.
public enum BackupSeal {
    public static let magic = Array("KIANABK1".utf8)
    public static let chunk = 1 << 20
    /// The most a header may ask of the reader's memory and time: scrypt N ≤ 2^20, r ≤ 16, p ≤ 4.
    public static let maxLogN = 20

    public struct Parameters: Sendable, Equatable {
        public var logN: Int
        public var r: Int
        public var p: Int
        /// scrypt with N = 2^16, r = 8, p = 1: 64 MiB and about half a second here.
        public static let standard = Parameters(logN: 16, r: 8, p: 1)
        public init(logN: Int, r: Int, p: Int) {
            self.logN = logN
            self.r = r
            self.p = p
        }
    }

    public struct Header: Sendable, Equatable {
        public var parameters: Parameters
        public var salt: [UInt8]
        public var noncePrefix: [UInt8]
        public var check: [UInt8]
        /// Milliseconds since 1970 when the backup was made.
        public var created: UInt64

        public var cbor: CBOR {
            .map([
                .text("kdf"): .text("scrypt"), .text("logN"): CBOR(parameters.logN), .text("r"): CBOR(parameters.r),
                .text("p"): CBOR(parameters.p), .text("salt"): .bytes(salt), .text("nonce"): .bytes(noncePrefix),
                .text("check"): .bytes(check), .text("created"): .unsigned(created), .text("chunk"): CBOR(BackupSeal.chunk),
            ])
        }

        /// The bytes before the first frame.
        public var prefix: [UInt8] {
            let h = cbor.encoded
            return BackupSeal.magic + BackupSeal.u32(h.count) + h
        }

        public init(parameters: Parameters, salt: [UInt8], noncePrefix: [UInt8], check: [UInt8], created: UInt64) {
            self.parameters = parameters
            self.salt = salt
            self.noncePrefix = noncePrefix
            self.check = check
            self.created = created
        }

        /// Reads the header from the bytes after the magic and length; refuses parameters beyond
        /// the limits before any work is done.
        public init(decoding bytes: [UInt8]) throws(KianaCoreError) {
            let m = try CBOR.decode(bytes, limits: .init(maxDepth: 2, maxItems: 32)).mapValue("backup header")
            let map = m
            try map.onlyKeys(["kdf", "logN", "r", "p", "salt", "nonce", "check", "created", "chunk"], in: "backup header")
            guard try map.required("kdf", in: "backup header").textValue("kdf") == "scrypt" else {
                throw KianaCoreError(.invalidStructure, "backup header: unknown key derivation")
            }
            guard try map.required("chunk", in: "backup header").uintValue("chunk") == UInt64(BackupSeal.chunk) else {
                throw KianaCoreError(.invalidStructure, "backup header: unknown frame size")
            }
            let logN = try map.required("logN", in: "backup header").uintValue("logN")
            let r = try map.required("r", in: "backup header").uintValue("r")
            let p = try map.required("p", in: "backup header").uintValue("p")
            guard (10...UInt64(BackupSeal.maxLogN)).contains(logN), (1...16).contains(r), (1...4).contains(p) else {
                throw KianaCoreError(.invalidStructure, "backup header: scrypt parameters out of bounds (N 2^\(logN), r \(r), p \(p))")
            }
            parameters = Parameters(logN: Int(logN), r: Int(r), p: Int(p))
            salt = try map.required("salt", in: "backup header").bytesValue("salt", count: 16)
            noncePrefix = try map.required("nonce", in: "backup header").bytesValue("nonce", count: 7)
            check = try map.required("check", in: "backup header").bytesValue("check", count: 16)
            created = try map.required("created", in: "backup header").uintValue("created")
        }
    }

    static func u32(_ n: Int) -> [UInt8] { withUnsafeBytes(of: UInt32(n).bigEndian, Array.init) }

    static func derive(_ passphrase: [UInt8], _ salt: [UInt8], _ p: Parameters) throws(KianaCoreError) -> SymmetricKey {
        do {
            return try KDF.Scrypt.deriveKey(from: passphrase, salt: salt, outputByteCount: 32, rounds: 1 << p.logN, blockSize: p.r, parallelism: p.p)
        } catch {
            throw KianaCoreError(.internal, "scrypt failed: \(error)")
        }
    }

    static func checkValue(_ key: SymmetricKey) -> [UInt8] {
        Array(HMAC<SHA256>.authenticationCode(for: Array("kiana backup passphrase check".utf8), using: key).prefix(16))
    }

    static func nonce(_ prefix: [UInt8], _ index: UInt32, last: Bool) -> ChaChaPoly.Nonce {
        // Sizes are fixed (7 + 4 + 1 = 12), so this cannot fail.
        try! ChaChaPoly.Nonce(data: prefix + withUnsafeBytes(of: index.bigEndian, Array.init) + [last ? 1 : 0])
    }

    /// Seals a plaintext stream frame by frame.
    public struct Sealer: Sendable {
        public let header: Header
        let key: SymmetricKey
        let aad: [UInt8]
        var index: UInt32 = 0
        var finished = false

        /// Derives the key (scrypt: the slow part) with fresh random salt and nonce prefix.
        public init(passphrase: [UInt8], parameters: Parameters = .standard, created: UInt64) throws(KianaCoreError) {
            var rng = SystemRandomNumberGenerator()
            let salt = (0..<16).map { _ in UInt8.random(in: 0...255, using: &rng) }
            let prefix = (0..<7).map { _ in UInt8.random(in: 0...255, using: &rng) }
            key = try BackupSeal.derive(passphrase, salt, parameters)
            header = Header(parameters: parameters, salt: salt, noncePrefix: prefix, check: BackupSeal.checkValue(key), created: created)
            aad = header.prefix
        }

        /// One frame (length and ciphertext) for up to `BackupSeal.chunk` plaintext bytes; the
        /// last frame must say so.
        public mutating func seal(_ plaintext: [UInt8], last: Bool) throws(KianaCoreError) -> [UInt8] {
            guard !finished, plaintext.count <= BackupSeal.chunk else { throw KianaCoreError(.invalidInput, "frame after the last, or too large") }
            guard index < UInt32.max else { throw KianaCoreError(.tooLarge, "backup too large") }
            let box: ChaChaPoly.SealedBox
            do { box = try ChaChaPoly.seal(plaintext, using: key, nonce: BackupSeal.nonce(header.noncePrefix, index, last: last), authenticating: aad) } catch {
                throw KianaCoreError(.internal, "sealing failed: \(error)")
            }
            index += 1
            finished = last
            let body = Array(box.ciphertext) + Array(box.tag)
            return BackupSeal.u32(body.count) + body
        }
    }

    /// Opens a sealed stream frame by frame.
    public struct Opener: Sendable {
        public let header: Header
        let key: SymmetricKey
        let aad: [UInt8]
        var index: UInt32 = 0
        /// True once the last frame was opened.
        public private(set) var finished = false

        /// Checks the passphrase against the header; `.unauthorized` when it is wrong.
        public init(header: Header, passphrase: [UInt8]) throws(KianaCoreError) {
            self.header = header
            key = try BackupSeal.derive(passphrase, header.salt, header.parameters)
            guard BackupSeal.checkValue(key) == header.check else { throw KianaCoreError(.unauthorized, "wrong passphrase") }
            aad = header.prefix
        }

        /// The largest frame body a reader should accept (a chunk and its tag).
        public static let maxFrame = BackupSeal.chunk + 16

        /// The plaintext of the next frame (its body, without the length). `.corrupt` when the
        /// frame was altered, reordered or cut.
        public mutating func open(_ body: [UInt8]) throws(KianaCoreError) -> [UInt8] {
            guard !finished else { throw KianaCoreError(.corrupt, "data after the last frame") }
            guard body.count >= 16, body.count <= Self.maxFrame else { throw KianaCoreError(.corrupt, "frame \(index) has a bad length") }
            for last in [false, true] {
                if let box = try? ChaChaPoly.SealedBox(
                    nonce: BackupSeal.nonce(header.noncePrefix, index, last: last), ciphertext: body.dropLast(16), tag: body.suffix(16)),
                    let plain = try? ChaChaPoly.open(box, using: key, authenticating: aad)
                {
                    index += 1
                    finished = last
                    return Array(plain)
                }
            }
            throw KianaCoreError(.corrupt, "frame \(index) does not authenticate: the backup is damaged")
        }
    }
}

/// The files inside a backup, as one plaintext stream: for each file, u16 name length, the
/// name, u64 size, the bytes; a zero name length ends it. Only `allowed` names are accepted.
public enum BackupFiles {
    public static let allowed: Set<String> = ["identity.key", "transport.key", "api.token", "config.json", "kiana.sqlite"]

    public static func entryHeader(name: String, size: UInt64) -> [UInt8] {
        let n = Array(name.utf8)
        return withUnsafeBytes(of: UInt16(n.count).bigEndian, Array.init) + n + withUnsafeBytes(of: size.bigEndian, Array.init)
    }

    public static let end: [UInt8] = [0, 0]

    /// What parsing the stream yields.
    public enum Event: Sendable, Equatable {
        case begin(name: String, size: UInt64)
        case bytes([UInt8])
        case end
    }

    /// Parses the plaintext stream incrementally, whatever the frame boundaries.
    public struct Reader: Sendable {
        var pending: [UInt8] = []
        var remaining: UInt64 = 0
        var inFile = false
        public private(set) var ended = false
        var seen: Set<String> = []

        public init() {}

        public mutating func feed(_ bytes: [UInt8]) throws(KianaCoreError) -> [Event] {
            pending += bytes
            var out: [Event] = []
            while !pending.isEmpty {
                if inFile {
                    let n = Int(min(UInt64(pending.count), remaining))
                    out.append(.bytes(Array(pending.prefix(n))))
                    pending.removeFirst(n)
                    remaining -= UInt64(n)
                    if remaining == 0 { inFile = false }
                    continue
                }
                guard !ended else { throw KianaCoreError(.corrupt, "bytes after the end of the backup's files") }
                guard pending.count >= 2 else { break }
                let length = Int(UInt16(pending[0]) << 8 | UInt16(pending[1]))
                if length == 0 {
                    pending.removeFirst(2)
                    ended = true
                    out.append(.end)
                    continue
                }
                guard length <= 64 else { throw KianaCoreError(.corrupt, "a file name in the backup is too long") }
                guard pending.count >= 2 + length + 8 else { break }
                guard let name = String(validating: pending[2..<(2 + length)], as: UTF8.self), BackupFiles.allowed.contains(name) else {
                    throw KianaCoreError(.corrupt, "the backup holds a file it may not: \(String(decoding: pending[2..<(2 + length)], as: UTF8.self))")
                }
                guard seen.insert(name).inserted else { throw KianaCoreError(.corrupt, "the backup holds \(name) twice") }
                let size = pending[(2 + length)..<(2 + length + 8)].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
                pending.removeFirst(2 + length + 8)
                out.append(.begin(name: name, size: size))
                remaining = size
                inFile = size > 0
            }
            return out
        }
    }
}
