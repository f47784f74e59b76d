import KianaCore
import KianaStore

/// What the peer layer needs from a ledger: read the chain, answer block requests, import
/// verified blocks. The methods are async: the SQLite store runs each off the cooperative pool
/// (`blocking`), since reading blocks and validating imports block. Nothing here signs or writes entries: votes and sealing pending entries are
/// the node's (see `PeerNetwork.Hooks`). `LedgerStore` is the real one; tests use an in-memory
/// chain, so block exchange is tested without SQLite or sockets.
public protocol SyncStore: Sendable {
    /// The network ID (genesis hash), nil before genesis.
    func networkID() async throws -> [UInt8]?
    func chainHead() async throws -> LedgerHead?
    /// Authorities and pending votes at the head (admission of member links).
    func chainMembership() async throws -> Membership
    func hasBlock(_ hash: [UInt8]) async throws -> Bool
    /// The height of `hash` on the canonical chain, if it is on it.
    func heightOnChain(of hash: [UInt8]) async throws -> UInt64?
    /// Canonical block hashes in height order.
    func chainHashes() async throws -> [[UInt8]]
    /// Canonical blocks in the height range, each in its canonical encoding.
    func encodedBlocks(from: UInt64, through: UInt64) async throws -> [[UInt8]]
    /// Validates blocks from a peer and keeps the valid ones (fork choice included); true when
    /// the head changed.
    func importPeerBlocks(_ blocks: [Block], now: UInt64) async throws -> Bool
    /// Addresses ("host:port") the owner added for devices multicast does not reach.
    func knownPeerAddresses() async throws -> [String]
}

extension LedgerStore: SyncStore {
    public func networkID() async throws -> [UInt8]? { try await blocking { try network() } }
    public func chainHead() async throws -> LedgerHead? { try await blocking { try head() } }
    public func chainMembership() async throws -> Membership { try await blocking { try membership() } }
    public func hasBlock(_ hash: [UInt8]) async throws -> Bool { try await blocking { try containsBlock(hash) } }
    public func heightOnChain(of hash: [UInt8]) async throws -> UInt64? { try await blocking { try canonicalHeight(of: hash) } }
    public func chainHashes() async throws -> [[UInt8]] { try await blocking { try blockHashes() } }

    public func encodedBlocks(from: UInt64, through: UInt64) async throws -> [[UInt8]] {
        try await blocking { try blocks(from: from, through: through).map(\.encoded) }
    }

    public func importPeerBlocks(_ blocks: [Block], now: UInt64) async throws -> Bool {
        try await blocking { try importBlocks(blocks, now: now).contains { if case .newHead = $0 { return true } else { return false } } }
    }

    public func knownPeerAddresses() async throws -> [String] {
        try await blocking { try peerAddresses().map(\.address) }
    }
}
