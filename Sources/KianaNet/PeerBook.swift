import Foundation
import KianaCore

/// What this device knows about each member's sync: its last stated head, when we last synced
/// with it, refusals either way, and the peers cut off for a back-off after sending what our
/// ledger refused. One pull per peer runs at a time; a request for another while one runs is
/// remembered and served by one more pass.
public actor PeerBook {
    public struct Peer: Sendable {
        public var head: SyncHead?
        public var lastSync: Date?
        /// Why our ledger last refused this peer's blocks (rule and message), and when.
        public var refusedHere: String?
        /// Why the peer last refused ours, as it told us.
        public var refusedThere: String?
        public var lastError: String?
        var pulling = false
        var again: SyncHead??
    }

    var peers: [[UInt8]: Peer] = [:]
    /// Peers cut off until the instant, with the reason.
    var cutOff: [[UInt8]: (until: ContinuousClock.Instant, reason: String)] = [:]
    /// Blocks that arrived from a peer (hash → peer key), newest few hundred: relays skip the source.
    var sources: [[UInt8]: [UInt8]] = [:]
    var sourceOrder: [[UInt8]] = []

    public init() {}

    public func peer(_ key: [UInt8]) -> Peer? { peers[key] }

    func heard(_ key: [UInt8], head: SyncHead) {
        peers[key, default: Peer()].head = head
    }

    /// Starts a pull from `key` unless one runs; then the running one makes one more pass.
    func beginPull(_ key: [UInt8], head: SyncHead?) -> Bool {
        if peers[key] == nil { peers[key] = Peer() }
        if peers[key]!.pulling {
            peers[key]!.again = .some(head)
            return false
        }
        peers[key]!.pulling = true
        return true
    }

    /// Whether a pull from any member runs now.
    var pulling: Bool { peers.values.contains { $0.pulling } }

    /// Ends a pass: the head to pull again for, if another request came in meanwhile.
    func endPull(_ key: [UInt8], synced: Bool, error: String?) -> SyncHead?? {
        var p = peers[key, default: Peer()]
        if synced { p.lastSync = Date() }
        p.lastError = error
        let again = p.again
        p.again = nil
        if again == nil { p.pulling = false }
        peers[key] = p
        return again
    }

    /// A block from this member was taken (or we already had it): we are in step with it now.
    func synced(_ key: [UInt8]) {
        peers[key, default: Peer()].lastSync = Date()
    }

    func refusedHere(_ key: [UInt8], reason: String, backoff: Duration) {
        peers[key, default: Peer()].refusedHere = reason
        cutOff[key] = (ContinuousClock.now + backoff, reason)
    }

    func refusedThere(_ key: [UInt8], reason: String) {
        peers[key, default: Peer()].refusedThere = reason
    }

    /// Why a member is cut off now, if it is.
    func cutOffReason(_ key: [UInt8]) -> String? {
        guard let c = cutOff[key] else { return nil }
        if c.until <= .now {
            cutOff[key] = nil
            return nil
        }
        return c.reason
    }

    /// Sync requests a member may make: a bucket of `burst` tokens refilled at `rate` a second.
    var buckets: [[UInt8]: (tokens: Double, at: ContinuousClock.Instant)] = [:]

    /// Takes one token for a sync request from `key`; false when the member is over its rate.
    public func allowRequest(_ key: [UInt8], rate: Double, burst: Double) -> Bool {
        let now = ContinuousClock.now
        var b = buckets[key] ?? (burst, now)
        let elapsed = now - b.at
        b.tokens = min(burst, b.tokens + elapsed / .seconds(1) * rate)
        b.at = now
        guard b.tokens >= 1 else {
            buckets[key] = b
            return false
        }
        b.tokens -= 1
        buckets[key] = b
        return true
    }

    /// Members cut off now, with why.
    func activeCutOffs() -> [(key: [UInt8], reason: String)] {
        let now = ContinuousClock.now
        return cutOff.filter { $0.value.until > now }.map { ($0.key, $0.value.reason) }
    }

    func received(_ hash: [UInt8], from key: [UInt8]) {
        if sources.updateValue(key, forKey: hash) == nil { sourceOrder.append(hash) }
        if sourceOrder.count > 512 { sources[sourceOrder.removeFirst()] = nil }
    }

    func source(of hash: [UInt8]) -> [UInt8]? { sources[hash] }
}
