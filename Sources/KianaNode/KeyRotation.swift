import Foundation
import KianaCore
import KianaStore

/// Moving this device's seat to a new identity key (decision 99). The new keys are written
/// beside the current ones first (`identity.next.key`, `transport.next.key`, 0600), then the old
/// key writes a rotation vote the new key co-signs, then the next keys replace the current ones.
/// Every step can be repeated: a crash or a timeout leaves a state `rotate` (or `serve`) finishes.
public enum KeyRotation {
    /// Where the rotation stands.
    public struct Progress: Sendable {
        public var old: DeviceID
        public var new: DeviceID
        /// Height of the block holding the rotation vote.
        public var block: UInt64
        /// Whether other authorities exist (then they must learn the rotation from this device).
        public var othersExist: Bool
    }

    /// Writes the next keys (unless a rotation is already under way) and the rotation vote
    /// (unless the chain already holds it). The node must be an authority. With other
    /// authorities and no serving node, nothing is done: they could not learn the new key.
    public static func begin(directory: DataDirectory, serving: Bool, now: UInt64 = currentMillis()) throws -> Progress {
        let node = try Node.open(directory: directory)
        let old = node.identity
        let membership = try node.store.membership()
        let next: DeviceIdentity
        if let pending = try loadNext(directory) {
            next = pending
        } else {
            guard membership.authorities.contains(old.publicKey) else {
                throw KianaNodeError(.notAuthority, "this device (\(old.deviceID)) is not an authority; only an authority's key can be rotated")
            }
            let others = membership.authorities.subtracting([old.publicKey])
            guard others.isEmpty || serving else {
                throw KianaNodeError(
                    .notRunning,
                    "\(others.count) other authorit\(others.count == 1 ? "y" : "ies") must learn the new key from this device: start it (`kiana serve`) so it is linked to them, then run `kiana device rotate` again")
            }
            next = DeviceIdentity.generate()
            try DataDirectory.writeSecret(Array(next.transportKey.rawRepresentation), to: directory.nextTransportKeyPath)
            // The identity key last: its presence means the next identity is complete.
            try DataDirectory.writeSecret(Array(next.signingKey.rawRepresentation), to: directory.nextIdentityKeyPath)
        }
        if membership.authorities.contains(next.publicKey) {
            // The vote is on the chain already (a repeated run).
            guard let block = try rotationBlock(node, to: next.publicKey) else {
                throw KianaNodeError(.internal, "the new key is an authority but no rotation to it is on the chain")
            }
            return Progress(old: old.deviceID, new: next.deviceID, block: block, othersExist: membership.authorities.count > 1)
        }
        guard membership.authorities.contains(old.publicKey) else {
            throw KianaNodeError(.notAuthority, "this device (\(old.deviceID)) is no longer an authority, so it cannot hand its seat on")
        }
        try node.requireWritable()
        guard let network = try node.network() else { throw KianaNodeError(.notInitialized, "no ledger here yet") }
        let r = try node.store.write(vote: Vote.rotation(network: network, old: old.publicKey, new: next), identity: old, now: now)
        return Progress(old: old.deviceID, new: next.deviceID, block: r.block.height, othersExist: membership.authorities.count > 1)
    }

    /// Height of the canonical block holding a rotation to `key`, if any.
    static func rotationBlock(_ node: Node, to key: [UInt8]) throws -> UInt64? {
        for b in try node.store.blocks(from: 1, through: .max).reversed() {
            for e in b.entries where e.kind == .authorityVote {
                if let v = try? Vote(payload: e.payload), v.isRotation, v.target == key { return b.height }
            }
        }
        return nil
    }

    /// The next identity, if a rotation is under way.
    public static func loadNext(_ directory: DataDirectory) throws(KianaNodeError) -> DeviceIdentity? {
        guard FileManager.default.fileExists(atPath: directory.nextIdentityKeyPath) else { return nil }
        let s = try DataDirectory.readSecret(directory.nextIdentityKeyPath)
        let t = try DataDirectory.readSecret(directory.nextTransportKeyPath)
        do throws(KianaCoreError) {
            return try DeviceIdentity(signingKeyRaw: s, transportKeyRaw: t)
        } catch {
            throw KianaNodeError(.keyFile, "the next key files in \(directory.path) are damaged: \(error.message)")
        }
    }

    /// Replaces the current keys with the next ones once the chain has made the next key an
    /// authority; true if it did. The old private key is gone afterwards (it can no longer sign
    /// anything accepted). Each rename is atomic; a crash between the two leaves the new
    /// identity with the old transport key, which is valid (the identity signs whichever
    /// transport key it presents) and is finished by the next call.
    @discardableResult
    public static func promoteIfRotated(directory: DataDirectory) throws -> Bool {
        let fm = FileManager.default
        let identityPending = fm.fileExists(atPath: directory.nextIdentityKeyPath)
        let transportPending = fm.fileExists(atPath: directory.nextTransportKeyPath)
        guard identityPending || transportPending else { return false }
        if identityPending {
            guard let next = try loadNext(directory) else { return false }
            let node = try Node.open(directory: directory, forReading: true)
            guard try node.store.membership().authorities.contains(next.publicKey) else { return false }
        }
        if transportPending { try rename(directory.nextTransportKeyPath, to: directory.transportKeyPath) }
        if identityPending { try rename(directory.nextIdentityKeyPath, to: directory.identityKeyPath) }
        return true
    }

    static func rename(_ from: String, to: String) throws(KianaNodeError) {
        guard Foundation.rename(from, to) == 0 else {
            throw KianaNodeError(.io, "cannot move \(from) to \(to): \(String(cString: strerror(errno)))")
        }
    }

    /// Whether a member linked to the serving node reports a head at or past `height` on this
    /// device's chain (it holds the rotation and can pass it on).
    public static func acknowledged(directory: DataDirectory, height: UInt64) throws -> Bool {
        let peers = try NodeControl.connect(directory).peers()
        let node = try Node.open(directory: directory, forReading: true)
        for p in peers where p.member && p.state == "connected" {
            guard let h = p.height, h >= height, let head = p.head.flatMap(Hex.decode) else { continue }
            if try node.store.canonicalHashes(at: [h]).first == head { return true }
        }
        return false
    }
}
