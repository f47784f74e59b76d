import Foundation
import KianaCore
import KianaStore

/// Moving this device's seat to a new identity key (decision 99), in steps that can each be
/// repeated after a crash or a timeout:
/// 1. the new keys are written to `rotation.next.key` (one file, atomically);
/// 2. the old key writes the rotation vote the new key co-signs;
/// 3. another authority is seen holding it (`rotation.confirmed`), or none exists;
/// 4. the new keys are written over the current ones and the next file is removed.
/// The switch (4) happens only after 3: other devices refuse links from a key their chain does
/// not know, so a device that switched before one of them held the rotation could never hand it
/// on, and its seat would be lost. Until then the node keeps its old key and passes the rotation on.
public enum KeyRotation {
    /// Where the rotation stands.
    public struct Progress: Sendable {
        public var old: DeviceID
        public var new: DeviceID
        /// Height of the block holding the rotation vote.
        public var block: UInt64
        /// Whether other authorities exist (then one must hold the rotation before the switch).
        public var othersExist: Bool
    }

    /// Writes the next keys (unless a rotation is under way) and the rotation vote (unless the
    /// chain holds it). With other authorities and no serving node nothing new is written: they
    /// could not learn the new key.
    public static func begin(directory: DataDirectory, serving: Bool, now: UInt64 = currentMillis()) throws -> Progress {
        let node = try Node.open(directory: directory)
        let old = node.identity
        let membership = try node.store.membership()
        let pending = try loadNext(directory)
        if let next = pending, membership.authorities.contains(next.publicKey) {
            // The vote is on the chain already (a repeated run).
            guard let block = try rotationBlock(node, to: next.publicKey) else {
                throw KianaNodeError(.internal, "the new key is an authority but no rotation to it is on the chain")
            }
            return Progress(old: old.deviceID, new: next.deviceID, block: block, othersExist: membership.authorities.count > 1)
        }
        guard membership.authorities.contains(old.publicKey) else {
            throw KianaNodeError(.notAuthority, "this device (\(old.deviceID)) is not an authority; only an authority's key can be rotated")
        }
        let others = membership.authorities.subtracting([old.publicKey])
        guard others.isEmpty || serving else { throw mustServe(others.count) }
        try node.requireWritable()
        let next: DeviceIdentity
        if let pending {
            next = pending
        } else {
            next = DeviceIdentity.generate()
            try DataDirectory.writeSecret(Array(next.signingKey.rawRepresentation) + Array(next.transportKey.rawRepresentation), to: directory.nextKeysPath)
        }
        guard let network = try node.network() else { throw KianaNodeError(.notInitialized, "no ledger here yet") }
        let r = try node.store.write(vote: Vote.rotation(network: network, old: old.publicKey, new: next), identity: old, now: now)
        return Progress(old: old.deviceID, new: next.deviceID, block: r.block.height, othersExist: !others.isEmpty)
    }

    static func mustServe(_ others: Int) -> KianaNodeError {
        KianaNodeError(
            .notRunning,
            "\(others) other authorit\(others == 1 ? "y" : "ies") must learn the new key from this device: start it (`kiana serve`) so it is linked to them, then run `kiana device rotate` again")
    }

    /// Height of the canonical block holding a rotation to `key`, if any (newest blocks first).
    static func rotationBlock(_ node: Node, to key: [UInt8]) throws -> UInt64? {
        guard var top = try node.store.head()?.height else { return nil }
        while top > 0 {
            let from = top > 256 ? top - 255 : 1
            for b in try node.store.blocks(from: from, through: top).reversed() {
                for e in b.entries where e.kind == .authorityVote {
                    if let v = try? Vote(payload: e.payload), v.isRotation, v.target == key { return b.height }
                }
            }
            top = from - 1
        }
        return nil
    }

    /// The next identity, if a rotation is under way.
    public static func loadNext(_ directory: DataDirectory) throws(KianaNodeError) -> DeviceIdentity? {
        guard FileManager.default.fileExists(atPath: directory.nextKeysPath) else { return nil }
        let both = try DataDirectory.readSecret(directory.nextKeysPath, count: 64)
        do throws(KianaCoreError) {
            return try DeviceIdentity(signingKeyRaw: Array(both[0..<32]), transportKeyRaw: Array(both[32..<64]))
        } catch {
            throw KianaNodeError(.keyFile, "\(directory.nextKeysPath) is damaged: \(error.message)")
        }
    }

    /// Records that another authority holds the rotation to `next` (or that none exists).
    public static func markConfirmed(directory: DataDirectory, next: DeviceIdentity) throws(KianaNodeError) {
        try DataDirectory.writeSecret(next.publicKey, to: directory.rotationConfirmedPath)
    }

    /// Writes the next keys over the current ones once the chain has made the next key an
    /// authority and another authority holds that (or the next key is the only authority);
    /// true if it did. Repeating it after a crash finishes it. The old private key is gone
    /// afterwards (it can no longer sign anything accepted).
    @discardableResult
    public static func promoteIfRotated(directory: DataDirectory) throws -> Bool {
        guard let next = try loadNext(directory) else { return false }
        if try directory.loadIdentity().publicKey == next.publicKey {
            // Switched already; a kill came before the clean-up.
            unlink(directory.nextKeysPath)
            unlink(directory.rotationConfirmedPath)
            return true
        }
        let node = try Node.open(directory: directory, forReading: true)
        let authorities = try node.store.membership().authorities
        guard authorities.contains(next.publicKey) else { return false }
        let confirmed = (try? DataDirectory.readSecret(directory.rotationConfirmedPath)) == next.publicKey
        guard confirmed || authorities == [next.publicKey] else { return false }
        try DataDirectory.writeSecret(Array(next.transportKey.rawRepresentation), to: directory.transportKeyPath)
        try DataDirectory.writeSecret(Array(next.signingKey.rawRepresentation), to: directory.identityKeyPath)
        // The next keys first: a rotation with next keys and no confirmation is one still waiting.
        unlink(directory.nextKeysPath)
        unlink(directory.rotationConfirmedPath)
        return true
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

    /// Holds `rotation.lock` for one `kiana device rotate` at a time.
    public static func lock(_ directory: DataDirectory) throws(KianaNodeError) -> DirectoryLock {
        let fd = open(directory.rotationLockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw KianaNodeError(.dataDirectory, "cannot open \(directory.rotationLockPath): \(String(cString: strerror(errno)))") }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            close(fd)
            throw KianaNodeError(.locked, "another `kiana device rotate` is running on \(directory.path)")
        }
        return DirectoryLock(fd: fd)
    }
}
