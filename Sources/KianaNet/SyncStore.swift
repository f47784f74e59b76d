import KianaCore
import KianaStore

/// What the peer layer needs from a ledger: read the chain and its history tree, answer sync
/// requests, import verified blocks. The methods are async: the SQLite store runs each off the
/// cooperative pool (`blocking`), since reading blocks and validating imports block. Nothing
/// here signs or writes entries: votes and sealing pending entries are the node's (see
/// `PeerNetwork.Hooks`). `LedgerStore` is the one implementation; tests use it on an in-memory
/// database.
public protocol SyncStore: Sendable {
    /// The network ID (genesis hash), nil before genesis.
    func networkID() async throws -> [UInt8]?
    func chainHead() async throws -> LedgerHead?
    /// The history tree's size and root over the canonical chain.
    func historyHead() async throws -> HistoryHead
    /// The head block and the history tree read in one snapshot (nil before genesis): heads
    /// we state must not pair a height with another moment's tree.
    func headSnapshot() async throws -> (head: LedgerHead, tree: HistoryHead)?
    /// Our root over the first `size` blocks (nil when the chain is shorter).
    func historyRoot(size: UInt64) async throws -> [UInt8]?
    /// Our head, our root at `oldSize` and a consistency proof from there to the head, in one
    /// snapshot (nil if `oldSize` is 0 or beyond the head).
    func consistency(from oldSize: UInt64) async throws -> HistoryConsistency?
    /// Canonical block hashes at these heights (nil where the chain is shorter).
    func canonicalHashes(at heights: [UInt64]) async throws -> [[UInt8]?]
    /// Authorities and pending votes at the head (admission of member links).
    func chainMembership() async throws -> Membership
    func hasBlock(_ hash: [UInt8]) async throws -> Bool
    /// The height of `hash` on the canonical chain, if it is on it.
    func heightOnChain(of hash: [UInt8]) async throws -> UInt64?
    /// Canonical blocks from `from`, at most `maxCount` and about `maxBytes` (at least one
    /// block when there is one), each in its canonical encoding.
    func encodedBlocks(from: UInt64, maxCount: Int, maxBytes: Int) async throws -> [[UInt8]]
    /// Validates blocks from a peer and keeps the valid prefix (fork choice included);
    /// `prechecked` is `ChainValidator.precheck(blocks)` when the caller has it.
    func importBatch(_ blocks: [Block], now: UInt64, prechecked: [Bool]?) async throws -> BatchImport
    /// Stored side branches (an interrupted pull of another branch resumes from its tip).
    func sideBranchTips() async throws -> [SideBranch]
    /// Addresses ("host:port") the owner added for devices multicast does not reach.
    func knownPeerAddresses() async throws -> [String]
    /// Calls `onChange` after each change of the canonical chain made by this process, for as
    /// long as the returned watch lives (nil: not supported; the announcer then only polls).
    func watchChain(_ onChange: @escaping @Sendable () -> Void) -> ChainWatch?
    /// Encodings of `author`'s entries held here that only `author` can help (stuck: their
    /// sequence numbers were used by other entries; decision 111), bounded; none by default.
    func stuckEntriesOffered(to author: [UInt8]) async throws -> [[UInt8]]
    /// Takes back entries signed by `identity`'s own key that a member offered and this device
    /// has never seen; returns how many. Takes none by default.
    func takeBackOwnEntries(_ raws: [[UInt8]], identity: DeviceIdentity) async throws -> Int
}

extension SyncStore {
    public func stuckEntriesOffered(to author: [UInt8]) async throws -> [[UInt8]] { [] }
    public func takeBackOwnEntries(_ raws: [[UInt8]], identity: DeviceIdentity) async throws -> Int { 0 }
}

extension LedgerStore: SyncStore {
    public func networkID() async throws -> [UInt8]? { try await blocking { try network() } }
    public func chainHead() async throws -> LedgerHead? { try await blocking { try head() } }
    public func historyHead() async throws -> HistoryHead { try await blocking { try historyHead() } }
    public func headSnapshot() async throws -> (head: LedgerHead, tree: HistoryHead)? {
        try await blocking { try headAndHistory().map { (head: $0.0, tree: $0.1) } }
    }
    public func historyRoot(size: UInt64) async throws -> [UInt8]? { try await blocking { try historyRoot(size: size) } }
    public func consistency(from oldSize: UInt64) async throws -> HistoryConsistency? {
        try await blocking { try consistency(from: oldSize) }
    }
    public func canonicalHashes(at heights: [UInt64]) async throws -> [[UInt8]?] { try await blocking { try canonicalHashes(at: heights) } }
    public func chainMembership() async throws -> Membership { try await blocking { try membership() } }
    public func hasBlock(_ hash: [UInt8]) async throws -> Bool { try await blocking { try containsBlock(hash) } }
    public func heightOnChain(of hash: [UInt8]) async throws -> UInt64? { try await blocking { try canonicalHeight(of: hash) } }

    public func encodedBlocks(from: UInt64, maxCount: Int, maxBytes: Int) async throws -> [[UInt8]] {
        try await blocking {
            var out: [[UInt8]] = []
            var bytes = 0
            // Spliced from the stored bytes (decoding and re-encoding cost as much as storing).
            for r in try rawChain(from: from, through: from &+ UInt64(max(maxCount, 1)) - 1) {
                let raws = r.entries.map(\.raw)
                guard let e = Block.splicedEncoding(signedHeaderBytes: r.signedHeader, entryBytes: raws) ?? (try? Block(signedHeaderBytes: r.signedHeader, entryBytes: raws).encoded)
                else { throw KianaStoreError(.corrupt, "stored block \(r.height) does not decode", height: r.height) }
                if !out.isEmpty, bytes + e.count > maxBytes { break }
                bytes += e.count
                out.append(e)
            }
            return out
        }
    }

    /// A pull's import (many blocks, one transaction that can take a good part of a second)
    /// runs on a thread of its own, so it never holds one of the few shared `blocking` threads
    /// that store reads (/health, search) need meanwhile; a pushed block uses the shared pool.
    /// Pulls are one per member at a time, which bounds these threads.
    public func importBatch(_ blocks: [Block], now: UInt64, prechecked: [Bool]?) async throws -> BatchImport {
        guard blocks.count > 100 else { return try await blocking { try importBatch(blocks, now: now, prechecked: prechecked) } }
        return try await onOwnThread { try importBatch(blocks, now: now, prechecked: prechecked) }
    }

    public func sideBranchTips() async throws -> [SideBranch] { try await blocking { try sideBranches() } }

    public func knownPeerAddresses() async throws -> [String] {
        try await blocking { try peerAddresses().map(\.address) }
    }

    public func watchChain(_ onChange: @escaping @Sendable () -> Void) -> ChainWatch? {
        let w: ChainWatch = watchChain(onChange)
        return w
    }

    public func stuckEntriesOffered(to author: [UInt8]) async throws -> [[UInt8]] {
        try await blocking { try stuckEntries(of: author, limit: StuckOffers.maxEntries, maxBytes: StuckOffers.maxBytes) }
    }

    public func takeBackOwnEntries(_ raws: [[UInt8]], identity: DeviceIdentity) async throws -> Int {
        try await blocking { try adoptOwnEntries(raws, identity: identity, now: currentMillis()) }
    }
}
