import KianaCore
import KianaStore
import Synchronization

/// Where a device's chain ends, as heads carry it: height and hash of the head block, and the
/// history tree's size and root over the whole canonical chain.
public struct SyncHead: Sendable, Equatable {
    public var height: UInt64
    public var hash: [UInt8]
    public var size: UInt64
    public var root: [UInt8]

    public init(height: UInt64, hash: [UInt8], size: UInt64, root: [UInt8]) {
        self.height = height
        self.hash = hash
        self.size = size
        self.root = root
    }

    public var cbor: CBOR {
        .map(["height": .unsigned(height), "hash": .bytes(hash), "size": .unsigned(size), "root": .bytes(root)])
    }

    /// Reads a head from a hello's info or a `head` notification; nil if it has none.
    public init?(_ c: CBOR) {
        guard case .map(let m) = c, case .unsigned(let height)? = m[.text("height")], case .bytes(let hash)? = m[.text("hash")], hash.count == 32
        else { return nil }
        self.height = height
        self.hash = hash
        if case .unsigned(let size)? = m[.text("size")], case .bytes(let root)? = m[.text("root")], root.count == 32 {
            self.size = size
            self.root = root
        } else {
            self.size = height + 1
            self.root = []
        }
    }
}

/// Limits and sizes of chain sync; the defaults suit a LAN and small devices.
public struct SyncConfig: Sendable {
    /// Blocks per batch at most, and uncompressed bytes per batch (at least one block is sent).
    public var batchBlocks = 1000
    public var batchBytes = 1 << 20
    /// A batch this device accepts inflates to at most this many bytes.
    public var maxBatchBytes = 3 << 20
    /// Entries, and uncompressed bytes, a pull holds fetched but not yet stored (decision 110);
    /// everything waiting is stored in one transaction, so this also bounds a transaction of a
    /// pull (and how long local writes may wait behind one).
    public var aheadEntries = 10_000
    public var aheadBytes = 8 << 20
    /// Heights asked for per refinement round of the fork search.
    public var probes = 3
    /// Heights one `sync.hashes` request may name.
    public var maxHashes = 64
    /// zlib level for batches (1 fastest … 9 smallest).
    public var compressionLevel: Int32 = 1
    /// Restarts of one pull when the peer's chain moved under it.
    public var maxRestarts = 3
    /// Blocks a pull takes beyond the head the peer stated when it began (its chain may grow
    /// meanwhile); a peer that keeps streaming past that is cut off.
    public var maxGrowth: UInt64 = 10_000
    public init() {}
}

/// The answer to `sync.prove`: the peer's head and tree, and, when our tree is a prefix of its
/// tree, the consistency proof from our size to its size.
public struct ProveAnswer: Sendable {
    public var size: UInt64
    public var root: [UInt8]
    public var hash: [UInt8]
    /// Present exactly when our tree of the size we sent is a prefix of the peer's.
    public var proof: [[UInt8]]?
}

/// One batch of `sync.blocks`: decoded blocks and what it cost on the wire.
public struct SyncBatch: Sendable {
    public var blocks: [Block]
    /// The peer has more canonical blocks after these.
    public var more: Bool
    public var rawBytes: Int
    public var compressedBytes: Int
    /// `ChainValidator.precheck(blocks)`, done while the previous batch was being stored.
    public var checked: [Bool]
    /// Entries in the blocks (what storing them costs).
    public var entryCount: Int { blocks.reduce(0) { $0 + $1.entries.count } }
}

/// A peer that answers sync requests: a link, or in tests another device's `ChainSync` directly.
public protocol SyncPeer: Sendable {
    var label: String { get }
    /// Sends a request and returns the answer's body (errors as `KianaNetError`).
    func call(_ type: String, _ body: CBOR) async throws -> CBOR
}

/// Sync counters since the node started (for `kiana sync status` and /metrics).
public struct SyncStats: Sendable, Codable, Equatable {
    /// Blocks stored from peers, and blocks sent to them (batches and pushes).
    public var blocksIn = 0
    public var blocksOut = 0
    /// Batch bytes before and after compression, received and sent.
    public var rawBytesIn = 0
    public var compressedBytesIn = 0
    public var rawBytesOut = 0
    public var compressedBytesOut = 0
    public var pulls = 0
    public var reorgs = 0
    /// Hashes exchanged finding where chains part (roots, proofs, probes), and fork searches.
    public var hashesExchanged = 0
    public var forkSearches = 0
    /// Failed syncs by reason ("refused", "protocol", "timeout", "closed", "other").
    public var errors: [String: Int] = [:]
    /// Decision 111: this device's writes signed again, stuck copies retired, entries offered
    /// to the members whose key signed them, and this device's own entries taken back.
    public var resigned = 0
    public var retired = 0
    public var stuckOffered = 0
    public var stuckTaken = 0
    public init() {}
}

/// Shared, thread-safe `SyncStats`.
public final class SyncCounters: Sendable {
    let stats = Mutex(SyncStats())
    public init() {}
    public var snapshot: SyncStats { stats.withLock { $0 } }
    public func update(_ f: (inout SyncStats) -> Void) { stats.withLock { f(&$0) } }
}

/// What one pull did.
public struct PullReport: Sendable {
    public var stored = 0
    public var batches = 0
    public var roundTrips = 0
    /// Hashes in requests and answers (roots, proofs, probed block hashes), not counting blocks.
    public var hashesExchanged = 0
    /// The last height both chains shared, when they had forked.
    public var forkHeight: UInt64?
    public var headChanged = false
    public var reorganized = false
    public var rawBytes = 0
    public var compressedBytes = 0
    /// The first block our ledger refused (the blocks before it were kept).
    public var refused: BatchImport.Refusal?
    /// The last block taken from the peer (what its announcements must not be echoed back for).
    public var lastBlock: [UInt8]?
}
