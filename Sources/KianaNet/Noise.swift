import Crypto
import Foundation
import KianaCore

/// Noise_XX_25519_ChaChaPoly_SHA256 (Noise Protocol Framework, revision 34), the handshake of
/// KI_ana's device links. Pure state machine: the caller moves the bytes.
///
/// Messages: `-> e`, `<- e, ee, s, es`, `-> s, se`. After the third message both sides `split()`
/// into two `NoiseCipher`s. The prologue binds the network ID, so devices of different networks
/// cannot complete a handshake.
public struct NoiseHandshake: Sendable {
    public static let protocolName = Array("Noise_XX_25519_ChaChaPoly_SHA256".utf8)
    public static let maxMessage = 65535

    public enum Role: Sendable { case initiator, responder }

    let role: Role
    let s: Curve25519.KeyAgreement.PrivateKey
    var e: Curve25519.KeyAgreement.PrivateKey?
    var re: [UInt8]?
    /// The remote static key, known after message 2 (initiator) or 3 (responder).
    public private(set) var remoteStatic: [UInt8]?
    var ck: [UInt8]
    var h: [UInt8]
    var k: [UInt8]?
    var n: UInt64 = 0
    var step = 0
    let fixedEphemeral: Curve25519.KeyAgreement.PrivateKey?

    /// - Parameter ephemeral: only for tests that need reproducible messages.
    public init(role: Role, staticKey: Curve25519.KeyAgreement.PrivateKey, prologue: [UInt8], ephemeral: Curve25519.KeyAgreement.PrivateKey? = nil) {
        self.role = role
        self.s = staticKey
        self.fixedEphemeral = ephemeral
        h = Self.protocolName  // exactly 32 bytes, so used as is
        ck = h
        mixHash(prologue)
    }

    public var isComplete: Bool { step == 3 }
    /// The handshake hash (channel binding), final once `isComplete`.
    public var handshakeHash: [UInt8] { h }

    static func fail(_ why: String) -> KianaNetError { KianaNetError(.handshake, "Noise handshake failed: \(why)") }

    mutating func mixHash(_ data: [UInt8]) { h = SHA.hash(h + data) }

    static func hmac(_ key: [UInt8], _ data: [UInt8]) -> [UInt8] {
        Array(HMAC<SHA256>.authenticationCode(for: data, using: SymmetricKey(data: key)))
    }

    static func hkdf(_ ck: [UInt8], _ ikm: [UInt8]) -> ([UInt8], [UInt8]) {
        let temp = hmac(ck, ikm)
        let o1 = hmac(temp, [1])
        let o2 = hmac(temp, o1 + [2])
        return (o1, o2)
    }

    mutating func mixKey(_ ikm: [UInt8]) {
        let (a, b) = Self.hkdf(ck, ikm)
        ck = a
        k = b
        n = 0
    }

    static func nonce(_ n: UInt64) -> ChaChaPoly.Nonce {
        var bytes = [UInt8](repeating: 0, count: 12)
        for i in 0..<8 { bytes[4 + i] = UInt8((n >> (8 * UInt64(i))) & 0xFF) }
        return try! ChaChaPoly.Nonce(data: bytes)
    }

    static func seal(_ key: [UInt8], _ n: UInt64, ad: [UInt8], _ plain: [UInt8]) -> [UInt8] {
        let box = try! ChaChaPoly.seal(plain, using: SymmetricKey(data: key), nonce: nonce(n), authenticating: ad)
        return Array(box.ciphertext) + Array(box.tag)
    }

    static func open(_ key: [UInt8], _ n: UInt64, ad: [UInt8], _ cipher: [UInt8]) throws(KianaNetError) -> [UInt8] {
        guard cipher.count >= 16 else { throw fail("ciphertext shorter than its tag") }
        do {
            let box = try ChaChaPoly.SealedBox(nonce: nonce(n), ciphertext: cipher.dropLast(16), tag: cipher.suffix(16))
            return Array(try ChaChaPoly.open(box, using: SymmetricKey(data: key), authenticating: ad))
        } catch {
            throw fail("authentication failed")
        }
    }

    mutating func encryptAndHash(_ p: [UInt8]) -> [UInt8] {
        guard let key = k else {
            mixHash(p)
            return p
        }
        let c = Self.seal(key, n, ad: h, p)
        n += 1
        mixHash(c)
        return c
    }

    mutating func decryptAndHash(_ c: [UInt8]) throws(KianaNetError) -> [UInt8] {
        guard let key = k else {
            mixHash(c)
            return c
        }
        let p = try Self.open(key, n, ad: h, c)
        n += 1
        mixHash(c)
        return p
    }

    static func dh(_ priv: Curve25519.KeyAgreement.PrivateKey, _ pub: [UInt8]) throws(KianaNetError) -> [UInt8] {
        do {
            let p = try Curve25519.KeyAgreement.PublicKey(rawRepresentation: pub)
            return try priv.sharedSecretFromKeyAgreement(with: p).withUnsafeBytes { Array($0) }
        } catch {
            throw fail("invalid Diffie-Hellman public key")
        }
    }

    /// Writes the next handshake message carrying `payload`.
    public mutating func writeMessage(_ payload: [UInt8] = []) throws(KianaNetError) -> [UInt8] {
        var out: [UInt8] = []
        switch (role, step) {
        case (.initiator, 0):
            let eph = fixedEphemeral ?? .init()
            e = eph
            let pub = Array(eph.publicKey.rawRepresentation)
            out += pub
            mixHash(pub)
        case (.responder, 1):
            let eph = fixedEphemeral ?? .init()
            e = eph
            let pub = Array(eph.publicKey.rawRepresentation)
            out += pub
            mixHash(pub)
            mixKey(try Self.dh(eph, re!))
            out += encryptAndHash(Array(s.publicKey.rawRepresentation))
            mixKey(try Self.dh(s, re!))
        case (.initiator, 2):
            out += encryptAndHash(Array(s.publicKey.rawRepresentation))
            mixKey(try Self.dh(s, re!))
        default:
            throw Self.fail("not this side's turn to write")
        }
        out += encryptAndHash(payload)
        guard out.count <= Self.maxMessage else { throw Self.fail("message too large") }
        step += 1
        return out
    }

    /// Reads the peer's next handshake message and returns its payload.
    public mutating func readMessage(_ msg: [UInt8]) throws(KianaNetError) -> [UInt8] {
        guard msg.count <= Self.maxMessage else { throw Self.fail("message too large") }
        var rest = msg[...]
        func take(_ count: Int) throws(KianaNetError) -> [UInt8] {
            guard rest.count >= count else { throw Self.fail("message truncated") }
            defer { rest = rest.dropFirst(count) }
            return Array(rest.prefix(count))
        }
        switch (role, step) {
        case (.responder, 0):
            let pub = try take(32)
            re = pub
            mixHash(pub)
        case (.initiator, 1):
            let pub = try take(32)
            re = pub
            mixHash(pub)
            mixKey(try Self.dh(e!, pub))
            let rs = try decryptAndHash(try take(48))
            remoteStatic = rs
            mixKey(try Self.dh(e!, rs))
        case (.responder, 2):
            let rs = try decryptAndHash(try take(48))
            remoteStatic = rs
            mixKey(try Self.dh(e!, rs))
        default:
            throw Self.fail("not this side's turn to read")
        }
        let payload = try decryptAndHash(Array(rest))
        step += 1
        return payload
    }

    /// The transport ciphers (send, receive) once the handshake is complete.
    public func split() throws(KianaNetError) -> (send: NoiseCipher, receive: NoiseCipher) {
        guard isComplete else { throw Self.fail("handshake not complete") }
        let (k1, k2) = Self.hkdf(ck, [])
        let c1 = NoiseCipher(key: k1)
        let c2 = NoiseCipher(key: k2)
        return role == .initiator ? (c1, c2) : (c2, c1)
    }
}

/// One direction of a Noise transport: ChaChaPoly with a 64-bit counter nonce.
public struct NoiseCipher: Sendable {
    var key: [UInt8]
    public private(set) var nonce: UInt64 = 0

    init(key: [UInt8]) { self.key = key }

    /// Noise §11.3 `Rekey()`: the key becomes the first 32 bytes of ENCRYPT(k, 2^64-1, "", 32
    /// zero bytes). The nonce counter continues. Both sides call it at the same message count.
    public mutating func rekey() {
        key = Array(NoiseHandshake.seal(key, UInt64.max, ad: [], [UInt8](repeating: 0, count: 32)).prefix(32))
    }

    public mutating func encrypt(_ plain: [UInt8]) throws(KianaNetError) -> [UInt8] {
        guard plain.count <= NoiseHandshake.maxMessage - 16 else { throw NoiseHandshake.fail("transport message too large") }
        guard nonce < UInt64.max - 1 else { throw NoiseHandshake.fail("nonce exhausted") }
        defer { nonce += 1 }
        return NoiseHandshake.seal(key, nonce, ad: [], plain)
    }

    /// Decrypts the next message; a replayed, reordered or altered message fails.
    public mutating func decrypt(_ cipher: [UInt8]) throws(KianaNetError) -> [UInt8] {
        guard cipher.count <= NoiseHandshake.maxMessage else { throw NoiseHandshake.fail("transport message too large") }
        let p = try NoiseHandshake.open(key, nonce, ad: [], cipher)
        nonce += 1
        return p
    }
}
