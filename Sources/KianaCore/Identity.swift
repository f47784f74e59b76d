import Crypto

/// A device's human-readable ID: the first 75 bits of SHA-256(identity public key) in
/// Crockford base32, plus a Luhn mod 32 check character, shown as `XXXX-XXXX-XXXX-XXXX`.
/// The check character catches every single mistyped character and most swaps.
public struct DeviceID: Hashable, Sendable, Comparable, CustomStringConvertible {
    static let alphabet = Array("0123456789ABCDEFGHJKMNPQRSTVWXYZ".utf8)
    static let dataLength = 15

    /// The 16 characters without separators.
    public let compact: String

    public init(publicKey: [UInt8]) {
        let digest = SHA.hash(publicKey)
        var chars = [UInt8]()
        var acc: UInt32 = 0
        var bits = 0
        var i = 0
        while chars.count < DeviceID.dataLength {
            if bits < 5 {
                acc = acc << 8 | UInt32(digest[i])
                i += 1
                bits += 8
            }
            bits -= 5
            chars.append(DeviceID.alphabet[Int((acc >> UInt32(bits)) & 31)])
        }
        chars.append(DeviceID.alphabet[DeviceID.checkValue(chars)])
        compact = String(decoding: chars, as: UTF8.self)
    }

    /// Parses a typed device ID: case-insensitive, hyphens and spaces ignored, O→0 and I/L→1.
    public init(parsing text: String) throws(KianaCoreError) {
        var chars = [UInt8]()
        for c in text.uppercased().utf8 {
            switch c {
            case UInt8(ascii: "-"), UInt8(ascii: " "): continue
            case UInt8(ascii: "O"): chars.append(UInt8(ascii: "0"))
            case UInt8(ascii: "I"), UInt8(ascii: "L"): chars.append(UInt8(ascii: "1"))
            default:
                guard DeviceID.alphabet.contains(c) else {
                    throw KianaCoreError(.invalidDeviceID, "device ID \"\(text)\" has a character outside Crockford base32")
                }
                chars.append(c)
            }
        }
        guard chars.count == DeviceID.dataLength + 1 else {
            throw KianaCoreError(.invalidDeviceID, "device ID \"\(text)\" must have 16 characters, not \(chars.count)")
        }
        guard DeviceID.alphabet[DeviceID.checkValue(Array(chars.prefix(DeviceID.dataLength)))] == chars.last else {
            throw KianaCoreError(.invalidDeviceID, "device ID \"\(text)\" has a wrong check character (mistyped?)")
        }
        compact = String(decoding: chars, as: UTF8.self)
    }

    /// Luhn mod N (N = 32) check value over base32 characters.
    static func checkValue(_ chars: [UInt8]) -> Int {
        var factor = 2
        var sum = 0
        for c in chars.reversed() {
            let v = alphabet.firstIndex(of: c)!
            var addend = factor * v
            factor = factor == 2 ? 1 : 2
            addend = addend / 32 + addend % 32
            sum += addend
        }
        return (32 - sum % 32) % 32
    }

    public var description: String {
        let u = Array(compact.utf8)
        return stride(from: 0, to: u.count, by: 4).map { String(decoding: u[$0..<min($0 + 4, u.count)], as: UTF8.self) }.joined(separator: "-")
    }

    public static func < (a: DeviceID, b: DeviceID) -> Bool { a.compact < b.compact }
}

/// A device's keys: the Ed25519 identity key that signs entries and blocks, and the separate
/// X25519 key used by the transport.
public struct DeviceIdentity: Sendable {
    public let signingKey: Curve25519.Signing.PrivateKey
    public let transportKey: Curve25519.KeyAgreement.PrivateKey

    public init(signingKey: Curve25519.Signing.PrivateKey, transportKey: Curve25519.KeyAgreement.PrivateKey) {
        self.signingKey = signingKey
        self.transportKey = transportKey
    }

    /// Fresh random keys.
    public static func generate() -> DeviceIdentity {
        DeviceIdentity(signingKey: .init(), transportKey: .init())
    }

    /// Keys from their 32-byte raw private representations.
    public init(signingKeyRaw: [UInt8], transportKeyRaw: [UInt8]) throws(KianaCoreError) {
        do {
            signingKey = try .init(rawRepresentation: signingKeyRaw)
            transportKey = try .init(rawRepresentation: transportKeyRaw)
        } catch {
            throw KianaCoreError(.invalidKey, "key file does not hold a 32-byte key", cause: "\(error)")
        }
    }

    /// The 32-byte Ed25519 public key.
    public var publicKey: [UInt8] { Array(signingKey.publicKey.rawRepresentation) }
    public var transportPublicKey: [UInt8] { Array(transportKey.publicKey.rawRepresentation) }
    public var deviceID: DeviceID { DeviceID(publicKey: publicKey) }

    public func sign(_ message: [UInt8]) -> [UInt8] {
        // Signing only fails on a broken key, which the type rules out.
        Array(try! signingKey.signature(for: message))
    }
}

/// Ed25519 verification with a clear Bool result.
public enum Signature {
    public static func verify(_ signature: [UInt8], message: [UInt8], publicKey: [UInt8]) -> Bool {
        guard signature.count == 64, let key = try? Curve25519.Signing.PublicKey(rawRepresentation: publicKey) else {
            return false
        }
        return key.isValidSignature(signature, for: message)
    }
}
