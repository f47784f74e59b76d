import KianaCore
import KianaStore

/// What the peer layer needs from a ledger: read the chain, answer block requests, import
/// verified blocks. Nothing here signs or writes entries: votes and sealing pending entries are
/// the node's (see `PeerNetwork.Hooks`). `LedgerStore` is the real one; tests use an in-memory
/// chain, so block exchange is tested without SQLite or sockets.
public protocol SyncStore: Sendable {
    /// The network ID (genesis hash), nil before genesis.
    func network() throws -> [UInt8]?
    func head() throws -> LedgerHead?
    /// Authorities and pending votes at the head (admission of member links).
    func membership() throws -> Membership
    func containsBlock(_ hash: [UInt8]) throws -> Bool
    /// The height of `hash` on the canonical chain, if it is on it.
    func canonicalHeight(of hash: [UInt8]) throws -> UInt64?
    /// Canonical block hashes in height order.
    func blockHashes() throws -> [[UInt8]]
    /// Canonical blocks in the height range, each in its canonical encoding.
    func encodedBlocks(from: UInt64, through: UInt64) throws -> [[UInt8]]
    /// Validates blocks from a peer and keeps the valid ones (fork choice included); true when
    /// the head changed.
    func importPeerBlocks(_ blocks: [Block], now: UInt64) throws -> Bool
    /// Addresses ("host:port") the owner added for devices multicast does not reach.
    func knownPeerAddresses() throws -> [String]
}

extension LedgerStore: SyncStore {
    public func encodedBlocks(from: UInt64, through: UInt64) throws -> [[UInt8]] {
        try blocks(from: from, through: through).map(\.encoded)
    }

    public func importPeerBlocks(_ blocks: [Block], now: UInt64) throws -> Bool {
        try importBlocks(blocks, now: now).contains { if case .newHead = $0 { return true } else { return false } }
    }

    public func knownPeerAddresses() throws -> [String] {
        try peerAddresses().map(\.address)
    }
}
