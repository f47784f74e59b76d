import KianaCore

/// The handshake payload that ties a Noise static key to a device identity (libp2p style):
/// `{"id": Ed25519 identity key, "sig": Ed25519 signature over "KIANA-NOISE-V1" ‖ static key}`.
/// Whoever completes the handshake with that static key is therefore the holder of `id`.
public enum HandshakeIdentity {
    static let domain = Array("KIANA-NOISE-V1".utf8)
    public static let maxPayload = 1024

    /// The payload `identity` sends with its transport (Noise static) key.
    public static func payload(for identity: DeviceIdentity) -> [UInt8] {
        let staticKey = identity.transportPublicKey
        return CBOR.map(["id": .bytes(identity.publicKey), "sig": .bytes(identity.sign(domain + staticKey))]).encoded
    }

    /// Checks a received payload against the static key the peer proved in the handshake and
    /// returns the peer's identity key.
    public static func verify(_ payload: [UInt8], remoteStatic: [UInt8]) throws(KianaNetError) -> [UInt8] {
        guard payload.count <= maxPayload else { throw KianaNetError(.handshake, "handshake identity payload too large") }
        let id: [UInt8]
        let sig: [UInt8]
        do throws(KianaCoreError) {
            let m = try CBOR.decode(payload).mapValue("identity payload")
            try m.onlyKeys(["id", "sig"], in: "identity payload")
            id = try m.required("id", in: "identity payload").bytesValue("identity key", count: 32)
            sig = try m.required("sig", in: "identity payload").bytesValue("identity signature", count: 64)
        } catch {
            throw KianaNetError(.handshake, "malformed handshake identity payload: \(error.message)")
        }
        guard Signature.verify(sig, message: domain + remoteStatic, publicKey: id) else {
            throw KianaNetError(.handshake, "handshake identity signature does not cover the peer's static key")
        }
        return id
    }
}
