import Dispatch

/// The ledger's state after a validated prefix of a chain: what the next block is checked
/// against. Built by validating blocks (or, in a store, resumed from blocks it validated when it
/// stored them), so holding one means the chain up to `tip` is valid.
///
/// A full state (`tracksHistory`) also keeps every entry ID and block hash, for whole-chain
/// validation and its history root; a store's state does not (its tables hold them), so it
/// stays a few hundred bytes whatever the chain's length and copying it is cheap.
public struct LedgerState: Sendable {
    /// Network ID = genesis block hash.
    public let network: [UInt8]
    public let genesis: BlockHeader
    public private(set) var tip: BlockHeader
    public private(set) var tipHash: [UInt8]
    /// Authorities and pending votes at `tip`.
    public private(set) var membership: Membership
    public var authorities: Set<[UInt8]> { membership.authorities }
    public private(set) var lastSequence: [[UInt8]: UInt64] = [:]
    /// Every entry ID on the chain (full states only).
    public private(set) var entryIDs: Set<[UInt8]> = []
    /// Block hashes in height order: the leaves of the history tree (full states only).
    public private(set) var blockHashes: [[UInt8]]
    /// Entries applied by this state (from genesis for a full state).
    public private(set) var entryCount = 0
    public let tracksHistory: Bool
    /// The history tree's right edge, for states built from genesis (nil when resumed).
    public private(set) var history: HistoryFrontier?

    public var height: UInt64 { tip.height }

    /// An error naming the block by its position in the chain (not its possibly forged height field).
    static func fail(_ height: UInt64, _ rule: LedgerRule, _ msg: String) -> KianaCoreError {
        KianaCoreError(.invalidBlock, msg, height: height, rule: rule)
    }

    /// Validates a genesis block and starts a ledger from it.
    public init(genesis g: Block, now: UInt64, signatureChecked: Bool = false, tracksHistory: Bool = true) throws(KianaCoreError) {
        let h = g.header
        guard h.height == 0 else { throw Self.fail(0, .genesis, "first block must have height 0") }
        guard h.parent == BlockHeader.zeroHash else { throw Self.fail(0, .genesis, "genesis parent must be all zeros") }
        guard let auth = h.authorities, !auth.isEmpty else { throw Self.fail(0, .genesis, "genesis must name at least one authority") }
        guard Set(auth).count == auth.count else { throw Self.fail(0, .genesis, "genesis names an authority twice") }
        guard auth.contains(h.signer) else { throw Self.fail(0, .authority, "genesis signer is not one of its authorities") }
        guard g.entries.isEmpty, h.entryCount == 0, h.entryRoot == Merkle.emptyRoot else {
            throw Self.fail(0, .genesis, "genesis carries no entries")
        }
        guard h.time <= now &+ LedgerLimits.maxClockDrift else { throw Self.fail(0, .timestamp, "genesis time is in the future") }
        guard signatureChecked || g.verifySignature() else { throw Self.fail(0, .blockSignature, "genesis signature does not verify") }
        network = g.hash
        genesis = h
        tip = h
        tipHash = g.hash
        membership = Membership(authorities: auth)
        blockHashes = tracksHistory ? [g.hash] : []
        self.tracksHistory = tracksHistory
        var f = HistoryFrontier()
        f.append(blockHash: g.hash)
        history = f
    }

    /// Resumes the state after a block a store validated when it stored it (without entry IDs
    /// and block hashes: a duplicate entry then fails the sequence rule, since an entry's ID
    /// covers its author and sequence number).
    public init(
        resumingAt tip: BlockHeader, tipHash: [UInt8], genesis: BlockHeader, network: [UInt8], membership: Membership,
        lastSequence: [[UInt8]: UInt64]
    ) {
        self.network = network
        self.genesis = genesis
        self.tip = tip
        self.tipHash = tipHash
        self.membership = membership
        self.lastSequence = lastSequence
        blockHashes = []
        tracksHistory = false
    }

    /// Checks every rule for `block` as the next block and applies it.
    /// `precheckedSignatures` is set by `ChainValidator`, which verified signatures, roots and
    /// payloads in parallel.
    public mutating func append(_ block: Block, now: UInt64, precheckedSignatures: Bool = false) throws(KianaCoreError) {
        let h = block.header
        let at = tip.height + 1
        guard h.height == tip.height + 1 else { throw Self.fail(at, .height, "height \(h.height) does not follow \(tip.height)") }
        guard h.parent == tipHash else { throw Self.fail(at, .parentHash, "parent hash does not match block \(tip.height)") }
        guard h.authorities == nil, h.name == nil else { throw Self.fail(at, .genesis, "only genesis may name authorities") }
        var membership = self.membership
        if at % Membership.epoch == 0 { membership.checkpoint() }
        guard membership.authorities.contains(h.signer) else {
            throw Self.fail(at, .authority, "signer \(DeviceID(publicKey: h.signer)) is not an authority")
        }
        guard h.time >= tip.time else { throw Self.fail(at, .timestamp, "block time is before its parent's") }
        guard h.time <= now &+ LedgerLimits.maxClockDrift else { throw Self.fail(at, .timestamp, "block time is too far in the future") }
        guard !block.entries.isEmpty else { throw Self.fail(at, .emptyBlock, "block carries no entries") }
        guard h.entryCount == UInt64(block.entries.count) else {
            throw Self.fail(at, .entryCount, "header says \(h.entryCount) entries, block has \(block.entries.count)")
        }
        if !precheckedSignatures {
            guard Block.entryRoot(block.entries) == h.entryRoot else { throw Self.fail(at, .merkleRoot, "entry Merkle root does not match") }
            guard block.verifySignature() else { throw Self.fail(at, .blockSignature, "block signature does not verify") }
        }
        var seen = Set<[UInt8]>()
        var seqs: [[UInt8]: UInt64] = [:]
        for (i, e) in block.entries.enumerated() {
            guard e.network == network else { throw Self.fail(at, .network, "entry \(i) belongs to another network") }
            guard authorities.contains(e.author) else {
                throw Self.fail(at, .entryAuthor, "entry \(i) is signed by \(e.authorID), which is not an authority")
            }
            guard !entryIDs.contains(e.id), seen.insert(e.id).inserted else {
                throw Self.fail(at, .duplicateEntry, "entry \(i) (\(e.idHex.prefix(16))) is already in the chain")
            }
            let last = seqs[e.author] ?? lastSequence[e.author] ?? 0
            guard e.sequence > last else {
                let why = tracksHistory ? "" : " (already on the chain, or a sequence number reused)"
                throw Self.fail(at, .sequence, "entry \(i) has sequence \(e.sequence), not above \(last) for its author\(why)")
            }
            seqs[e.author] = e.sequence
            guard e.hlc.wall <= now &+ LedgerLimits.maxClockDrift else {
                throw Self.fail(at, .timestamp, "entry \(i) timestamp is too far in the future")
            }
            if !precheckedSignatures {
                if let problem = Self.payloadProblem(e) { throw Self.fail(at, .payload, "entry \(i): \(problem)") }
                guard e.verifySignature() else { throw Self.fail(at, .entrySignature, "entry \(i) signature does not verify") }
            }
        }
        // Votes take effect after the block's entries were checked against the parent's authorities.
        for e in block.entries where e.kind == .authorityVote {
            membership.applyIfAuthority(signer: e.author, vote: try! Vote(payload: e.payload))
        }
        self.membership = membership
        for (a, s) in seqs { lastSequence[a] = s }
        if tracksHistory {
            entryIDs.formUnion(seen)
            blockHashes.append(block.hash)
        }
        entryCount += block.entries.count
        history?.append(blockHash: block.hash)
        tip = h
        tipHash = block.hash
    }

    /// Why an entry's kind or payload is unacceptable, or nil if it is fine. Stateless, so
    /// `ChainValidator` runs it on all cores together with the signature check.
    public static func payloadProblem(_ e: Entry) -> String? {
        guard EntryKind.known.contains(e.kind) else { return "unknown kind \(e.kind)" }
        do throws(KianaCoreError) {
            if e.kind == .authorityVote {
                if let problem = try Vote(payload: e.payload).problem(author: e.author, network: e.network) { return problem }
            } else {
                _ = try KnowledgeOp(kind: e.kind, payload: e.payload)
            }
        } catch { return error.message }
        return nil
    }

    /// RFC 6962 root of the history tree over all block hashes so far (states built from
    /// genesis; a resumed state has no history and answers the empty root).
    public var historyRoot: [UInt8] { history?.root ?? Merkle.emptyRoot }
    /// Blocks from genesis to the tip.
    public var blockCount: Int { Int(height) + 1 }
}

/// Fork choice: the longest chain wins; at equal height the lower block hash wins.
/// Deterministic, so every device that holds the same blocks picks the same head.
public enum ForkChoice {
    /// True if the block (height, hash) should be the head rather than (otherHeight, otherHash).
    public static func prefers(height: UInt64, hash: [UInt8], over otherHeight: UInt64, _ otherHash: [UInt8]) -> Bool {
        height != otherHeight ? height > otherHeight : hash.lexicographicallyPrecedes(otherHash)
    }
}

/// Full-chain validation. Signatures and Merkle roots, the expensive part, are checked on all
/// cores; the ordering rules then run in one pass. Errors name the lowest failing block.
public enum ChainValidator {
    /// Decodes (in parallel) and validates whole encoded blocks, genesis first.
    public static func validate(encodedBlocks: [[UInt8]], now: UInt64) throws(KianaCoreError) -> LedgerState {
        try validate(blocks: decode(encodedBlocks: encodedBlocks), now: now)
    }

    /// Decodes whole encoded blocks on all cores; an error names the position of the first bad one.
    public static func decode(encodedBlocks: [[UInt8]]) throws(KianaCoreError) -> [Block] {
        var decoded = [Result<Block, KianaCoreError>?](repeating: nil, count: encodedBlocks.count)
        decoded.withUnsafeMutableBufferPointer { buffer in
            // Each index is written by exactly one chunk.
            nonisolated(unsafe) let out = buffer
            parallelChunks(count: encodedBlocks.count) { range in
                for i in range {
                    do throws(KianaCoreError) { out[i] = .success(try Block(decoding: encodedBlocks[i])) } catch { out[i] = .failure(error) }
                }
            }
        }
        var blocks: [Block] = []
        blocks.reserveCapacity(decoded.count)
        for (i, r) in decoded.enumerated() {
            switch r! {
            case .success(let b): blocks.append(b)
            case .failure(let e):
                throw KianaCoreError(.invalidBlock, "block does not decode: \(e.message)", height: UInt64(i), rule: .encoding)
            }
        }
        return blocks
    }

    /// Validates decoded blocks, genesis first. The first `trustedPrefix` blocks were verified
    /// before (their hashes are known good): their signatures, roots and payloads are not checked
    /// again, but every ordering and authority rule still runs over them to rebuild the state.
    public static func validate(blocks: [Block], now: UInt64, trustedPrefix: Int = 0) throws(KianaCoreError) -> LedgerState {
        guard !blocks.isEmpty else { throw KianaCoreError(.invalidBlock, "a chain needs a genesis block", rule: .genesis) }
        var state: LedgerState?
        try extend(&state, with: blocks, now: now, trustedPrefix: trustedPrefix)
        return state!
    }

    /// Validates the next window of a chain into `state` (nil: the window starts with genesis),
    /// so a chain of any length can be checked window by window. The first `trustedPrefix`
    /// blocks of the window skip signature, root and payload checks. `tracksHistory: false`
    /// keeps the state O(authors) in memory (a duplicate entry is then named by the sequence rule).
    public static func extend(
        _ state: inout LedgerState?, with blocks: [Block], now: UInt64, trustedPrefix: Int = 0, tracksHistory: Bool = true
    ) throws(KianaCoreError) {
        let base = state.map { $0.height + 1 } ?? 0
        let skip = max(0, min(trustedPrefix, blocks.count))
        let checks = checkSignatures(Array(blocks[skip...]))
        func precheck(_ i: Int) throws(KianaCoreError) {
            guard i >= skip else { return }
            let h = base + UInt64(i)
            let j = i - skip
            if !checks.blockOK[j] {
                throw LedgerState.fail(h, .blockSignature, "block signature does not verify")
            }
            if !checks.rootOK[j] { throw LedgerState.fail(h, .merkleRoot, "entry Merkle root does not match") }
            if let (_, rule, message) = checks.badEntry[j] { throw LedgerState.fail(h, rule, message) }
        }
        for i in blocks.indices {
            // Ordering rules first, so a misplaced block is reported as such.
            if var s = state {
                state = nil  // unique, so the append does not copy
                try precheck(i)
                try s.append(blocks[i], now: now, precheckedSignatures: true)
                state = s
            } else {
                try precheck(i)
                state = try LedgerState(genesis: blocks[i], now: now, signatureChecked: true, tracksHistory: tracksHistory)
            }
        }
    }

    /// Whether each block's signature, entry root, entry signatures and payloads check, verified
    /// on all cores (stateless: the ordering rules are `LedgerState.append`'s).
    public static func precheck(_ blocks: [Block]) -> [Bool] {
        let c = checkSignatures(blocks)
        return blocks.indices.map { c.blockOK[$0] && c.rootOK[$0] && c.badEntry[$0] == nil }
    }

    struct Checks {
        var blockOK: [Bool]
        var rootOK: [Bool]
        /// First entry per block whose signature or payload is bad: (index, rule, message).
        var badEntry: [(Int, LedgerRule, String)?]
    }

    /// Verifies every block and entry signature, every entry root and every payload, spread
    /// over all cores.
    static func checkSignatures(_ blocks: [Block]) -> Checks {
        // One job per block (header signature + root) and one per entry.
        var jobs: [(block: Int, entry: Int)] = []
        jobs.reserveCapacity(blocks.count + blocks.reduce(0) { $0 + $1.entries.count })
        for (b, block) in blocks.enumerated() {
            jobs.append((b, -1))
            for e in block.entries.indices { jobs.append((b, e)) }
        }
        let allJobs = jobs
        var results = [UInt8](repeating: 0, count: jobs.count)  // 0 ok, 1 bad signature/root, 2 bad payload
        results.withUnsafeMutableBufferPointer { buffer in
            nonisolated(unsafe) let out = buffer
            parallelChunks(count: allJobs.count) { range in
                for j in range {
                    let (b, e) = allJobs[j]
                    let block = blocks[b]
                    if e < 0 {
                        out[j] = block.verifySignature() && Block.entryRoot(block.entries) == block.header.entryRoot ? 0 : 1
                    } else {
                        let entry = block.entries[e]
                        out[j] = !entry.verifySignature() ? 1 : LedgerState.payloadProblem(entry) != nil ? 2 : 0
                    }
                }
            }
        }
        var c = Checks(
            blockOK: .init(repeating: true, count: blocks.count), rootOK: .init(repeating: true, count: blocks.count),
            badEntry: .init(repeating: nil, count: blocks.count))
        for (j, (b, e)) in jobs.enumerated() where results[j] != 0 {
            if e < 0 {
                if blocks[b].verifySignature() { c.rootOK[b] = false } else { c.blockOK[b] = false }
            } else if c.badEntry[b] == nil {
                c.badEntry[b] =
                    results[j] == 1
                    ? (e, .entrySignature, "entry \(e) signature does not verify")
                    : (e, .payload, "entry \(e): \(LedgerState.payloadProblem(blocks[b].entries[e]) ?? "")")
            }
        }
        return c
    }

    /// Runs `body` over contiguous chunks of 0..<count on all cores.
    public static func parallelChunks(count: Int, _ body: @Sendable (Range<Int>) -> Void) {
        guard count > 0 else { return }
        let chunks = min(count, 64)
        let size = (count + chunks - 1) / chunks
        DispatchQueue.concurrentPerform(iterations: chunks) { c in
            let lo = c * size
            let hi = min(count, lo + size)
            if lo < hi { body(lo..<hi) }
        }
    }
}
