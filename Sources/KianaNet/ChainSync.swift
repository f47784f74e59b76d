import Foundation
import KianaCore
import KianaStore
import Logging
import Synchronization

/// Keeps a ledger in step with peers (../shared/DESIGN.md, "Network → Sync"; decision 86):
/// heads carry the history tree's size and root; a device behind gets a consistency proof and
/// then only the missing blocks; forked devices find the fork point with an exponential probe
/// from the tip and a 4-ary search; blocks stream as compressed batches that the receiver asks
/// for ahead of what it imports, up to a bound (back-pressure; decision 110), each verified by
/// the store before it is kept, the valid prefix kept when one is refused. Works on any
/// `SyncStore`; knows nothing of sockets.
public struct ChainSync: Sendable {
    public let store: any SyncStore
    public let logger: Logger
    public var config: SyncConfig
    public let counters: SyncCounters

    public init(store: any SyncStore, logger: Logger, config: SyncConfig = SyncConfig(), counters: SyncCounters = SyncCounters()) {
        self.store = store
        self.logger = logger
        self.config = config
        self.counters = counters
    }

    /// Our head as heads carry it.
    public func head() async throws -> SyncHead? {
        guard let (h, t) = try await store.headSnapshot() else { return nil }
        return SyncHead(height: h.height, hash: h.hash, size: t.size, root: t.root)
    }

    // MARK: answering

    /// The request types this answers.
    public static let requestTypes: Set<String> = ["sync.prove", "sync.hashes", "sync.blocks"]

    /// Answers a sync request; nil for a type that is not a sync request.
    public func answer(_ type: String, _ body: CBOR) async -> LinkReply? {
        guard Self.requestTypes.contains(type) else { return nil }
        do {
            switch type {
            case "sync.prove": return .body(try await answerProve(body))
            case "sync.hashes": return .body(try await answerHashes(body))
            default: return try await answerBlocks(body)
            }
        } catch let e as KianaCoreError {
            return .error(code: .invalidInput, message: e.message)
        } catch let e as KianaNetError {
            return .error(code: e.code, message: e.message)
        } catch {
            return .error(code: .internal, message: "cannot answer \(type) now")
        }
    }

    func answerProve(_ body: CBOR) async throws -> CBOR {
        let m = try body.mapValue("sync.prove")
        try m.onlyKeys(["size", "root"], in: "sync.prove")
        let size = try m.required("size", in: "sync.prove").uintValue("size")
        let root = try m.required("root", in: "sync.prove").bytesValue("root", count: 32)
        if let c = try await store.consistency(from: size), c.oldRoot == root {
            return .map([
                "size": .unsigned(c.head.size), "root": .bytes(c.head.root), "hash": .bytes(c.headHash),
                "proof": .array(c.proof.map { .bytes($0) }),
            ])
        }
        guard let (h, t) = try await store.headSnapshot() else { throw KianaNetError(.notInitialized, "no ledger here yet") }
        return .map(["size": .unsigned(t.size), "root": .bytes(t.root), "hash": .bytes(h.hash)])
    }

    func answerHashes(_ body: CBOR) async throws -> CBOR {
        let m = try body.mapValue("sync.hashes")
        try m.onlyKeys(["heights"], in: "sync.hashes")
        let list = try m.required("heights", in: "sync.hashes").arrayValue("heights")
        guard list.count <= config.maxHashes else {
            throw KianaNetError(.tooLarge, "a sync.hashes request names at most \(config.maxHashes) heights")
        }
        let heights = try list.map { try $0.uintValue("height") }
        let hashes = try await store.canonicalHashes(at: heights)
        return .map(["hashes": .array(hashes.map { $0.map(CBOR.bytes) ?? .null })])
    }

    func answerBlocks(_ body: CBOR) async throws -> LinkReply {
        let m = try body.mapValue("sync.blocks")
        try m.onlyKeys(["from", "parent", "max"], in: "sync.blocks")
        let from = try m.required("from", in: "sync.blocks").uintValue("from")
        let parent = try m.required("parent", in: "sync.blocks").bytesValue("parent", count: 32)
        let asked = Int(clamping: try m[.text("max")]?.uintValue("max") ?? UInt64(config.batchBlocks))
        guard from >= 1, from < UInt64(Int64.max) else { throw KianaNetError(.invalidInput, "sync.blocks starts at height 1 or above") }
        guard try await store.canonicalHashes(at: [from - 1]).first == parent else {
            return .error(code: .conflict, message: "the chain here no longer has that block at height \(from - 1)")
        }
        let encoded = try await store.encodedBlocks(from: from, maxCount: max(1, min(asked, config.batchBlocks)), maxBytes: config.batchBytes)
        let raw = CBOR.array(encoded.map { .bytes($0) }).encoded
        let tip = try await store.chainHead()?.height ?? 0
        let data = Deflate.compress(raw, level: config.compressionLevel)
        counters.update {
            $0.blocksOut += encoded.count
            $0.rawBytesOut += raw.count
            $0.compressedBytesOut += data.count
        }
        return .body(
            .map([
                "count": .unsigned(UInt64(encoded.count)), "size": .unsigned(UInt64(raw.count)), "codec": "deflate",
                "data": .bytes(data),
                "more": .bool(from + UInt64(encoded.count) <= tip),
            ]))
    }

    // MARK: asking

    func prove(_ peer: some SyncPeer, _ t: HistoryHead) async throws -> ProveAnswer {
        let m = try await peer.call("sync.prove", .map(["size": .unsigned(t.size), "root": .bytes(t.root)])).mapValue("sync.prove answer")
        let proof = try m[.text("proof")].map { p throws(KianaCoreError) in
            let list = try p.arrayValue("proof")
            guard list.count <= 128 else { throw KianaCoreError(.invalidStructure, "a consistency proof has at most 128 hashes") }
            return try list.map { h throws(KianaCoreError) in try h.bytesValue("proof hash", count: 32) }
        }
        return ProveAnswer(
            size: try m.required("size", in: "sync.prove answer").uintValue("size"),
            root: try m.required("root", in: "sync.prove answer").bytesValue("root", count: 32),
            hash: try m.required("hash", in: "sync.prove answer").bytesValue("hash", count: 32),
            proof: proof)
    }

    func hashes(_ peer: some SyncPeer, at heights: [UInt64]) async throws -> [[UInt8]?] {
        let m = try await peer.call("sync.hashes", .map(["heights": .array(heights.map { .unsigned($0) })])).mapValue("sync.hashes answer")
        let list = try m.required("hashes", in: "sync.hashes answer").arrayValue("hashes")
        guard list.count == heights.count else { throw KianaNetError(.protocolViolation, "peer answered \(list.count) hashes for \(heights.count) heights") }
        return try list.map { c throws(KianaCoreError) in c == .null ? nil : try c.bytesValue("hash", count: 32) }
    }

    func batch(_ peer: some SyncPeer, from: UInt64, parent: [UInt8]) async throws -> SyncBatch {
        let m = try await peer.call(
            "sync.blocks", .map(["from": .unsigned(from), "parent": .bytes(parent), "max": .unsigned(UInt64(config.batchBlocks))])
        ).mapValue("sync.blocks answer")
        guard try m.required("codec", in: "sync.blocks answer").textValue("codec") == "deflate" else {
            throw KianaNetError(.protocolViolation, "peer sent a batch in an unknown codec")
        }
        let size = try m.required("size", in: "sync.blocks answer").uintValue("size")
        let data = try m.required("data", in: "sync.blocks answer").bytesValue("data")
        let raw = try Deflate.decompress(data, size: Int(clamping: size), limit: config.maxBatchBytes)
        let items = try CBOR.decode(raw, limits: CBOR.Limits(maxDepth: 2, maxItems: config.batchBlocks * 2 + 2)).arrayValue("batch")
        guard items.count <= config.batchBlocks, UInt64(items.count) == (try m.required("count", in: "sync.blocks answer").uintValue("count")) else {
            throw KianaNetError(.protocolViolation, "peer sent a batch of \(items.count) blocks, not what it stated or more than \(config.batchBlocks)")
        }
        var blocks: [Block] = []
        var prev = parent
        var height = from
        for item in items {
            let b: Block
            do { b = try Block(decoding: try item.bytesValue("block")) } catch {
                throw KianaNetError(.protocolViolation, "peer sent a block that does not decode at height \(height)", cause: error)
            }
            // Blocks must follow the parent asked for; anything else is the chain moving (or a lie).
            guard b.header.parent == prev, b.height == height else {
                throw KianaNetError(.conflict, "peer's batch does not follow height \(height - 1)")
            }
            blocks.append(b)
            prev = b.hash
            height += 1
        }
        let more: Bool = {
            if case .bool(let v)? = m[.text("more")] { return v }
            return false
        }()
        let decoded = blocks
        let checked = try await blocking { ChainValidator.precheck(decoded) }
        return SyncBatch(blocks: blocks, more: more && !blocks.isEmpty, rawBytes: raw.count, compressedBytes: data.count, checked: checked)
    }

    /// Pulls what `peer` has and we lack, if its chain is preferred to ours by fork choice (a
    /// peer behind or losing pulls from us instead). `peerHead` (from its hello or a
    /// notification) skips the work when we already hold that block.
    public func pull(from peer: some SyncPeer, peerHead: SyncHead? = nil, now: @Sendable () -> UInt64 = currentMillis) async throws -> PullReport {
        var report = PullReport()
        for attempt in 0...config.maxRestarts {
            do {
                try await pullOnce(peer, peerHead: peerHead, now: now, &report)
                let r = report
                counters.update {
                    $0.pulls += 1
                    $0.hashesExchanged += r.hashesExchanged
                    if r.forkHeight != nil { $0.forkSearches += 1 }
                }
                return report
            } catch let e as KianaNetError where e.code == .conflict && attempt < config.maxRestarts {
                // The peer's chain moved under us (a reorg there): start over from the heads.
                logger.debug("sync restarted", metadata: ["peer": .string(peer.label), "reason": .string(e.message)])
            }
        }
        return report
    }

    func pullOnce(_ peer: some SyncPeer, peerHead: SyncHead?, now: @Sendable () -> UInt64, _ report: inout PullReport) async throws {
        guard let myHead = try await store.chainHead() else { throw KianaNetError(.invalidInput, "no ledger here to sync") }
        if let ph = peerHead {
            if ph.hash == myHead.hash { return }
            if try await store.hasBlock(ph.hash) { return }
            guard ForkChoice.prefers(height: ph.height, hash: ph.hash, over: myHead.height, myHead.hash) else { return }
        }
        let mine = try await store.historyHead()
        let answer = try await prove(peer, mine)
        report.roundTrips += 1
        report.hashesExchanged += 3 + (answer.proof?.count ?? 0)
        guard answer.size >= 1 else { return }
        let peerHeight = answer.size - 1
        guard ForkChoice.prefers(height: peerHeight, hash: answer.hash, over: myHead.height, myHead.hash) else { return }
        var from: UInt64
        var parent: [UInt8]
        if let proof = answer.proof {
            do throws(KianaCoreError) {
                try Merkle.verifyConsistency(size1: mine.size, size2: answer.size, root1: mine.root, root2: answer.root, proof: proof)
            } catch {
                throw KianaNetError(.protocolViolation, "peer's consistency proof from \(mine.size) to \(answer.size) does not verify", cause: error)
            }
            from = mine.size
            parent = myHead.hash
        } else {
            let fork = try await forkPoint(peer, myHeight: myHead.height, peerHeight: peerHeight, &report)
            report.forkHeight = fork
            from = fork + 1
            guard let p = try await store.canonicalHashes(at: [fork]).first ?? nil else { return }
            parent = p
            // A pull of this branch that was cut off left its blocks on a side branch: go on from its tip.
            for side in try await store.sideBranchTips().prefix(4) where side.forkHeight == fork && side.tipHeight < peerHeight {
                report.roundTrips += 1
                report.hashesExchanged += 1
                if try await hashes(peer, at: [side.tipHeight]).first == side.tipHash {
                    from = side.tipHeight + 1
                    parent = side.tipHash
                    break
                }
            }
        }
        // The peer's chain may grow while we pull (a bulk import there): every `maxGrowth` blocks
        // past the head it stated, it must state a head that holds what it sent.
        var stated = peerHeight
        for _ in 0..<1000 {
            guard let last = try await stream(peer, from: from, parent: parent, until: stated &+ config.maxGrowth, now: now, &report) else { return }
            let check = try await prove(peer, try await store.historyHead())
            report.roundTrips += 2
            report.hashesExchanged += 4
            guard check.size > last.height + 1 || check.hash == last.hash else {
                throw KianaNetError(
                    .protocolViolation,
                    "peer streamed blocks past the chain it states (it states \(check.size) blocks, sent block \(last.height))")
            }
            guard try await hashes(peer, at: [last.height]).first == last.hash else {
                throw KianaNetError(.conflict, "peer's chain moved while we pulled it")
            }
            stated = check.size - 1
            from = last.height + 1
            parent = last.hash
        }
    }

    /// The highest height at which both canonical chains hold the same block (genesis at
    /// least: the link's prologue binds both to one network).
    func forkPoint(_ peer: some SyncPeer, myHeight: UInt64, peerHeight: UInt64, _ report: inout PullReport) async throws -> UInt64 {
        var lo: UInt64 = 0  // known common
        var hi = min(myHeight, peerHeight) + 1  // known not common (or past one chain's end)
        // Round 1: top, top-1, top-3, top-7, … so the range left is about as wide as the fork is deep.
        var probes: [UInt64] = []
        var step: UInt64 = 1
        var h = hi - 1
        while h > lo {
            probes.append(h)
            if h < step { break }
            h -= step
            step *= 2
        }
        while !probes.isEmpty {
            let theirs = try await hashes(peer, at: probes)
            let mine = try await store.canonicalHashes(at: probes)
            report.roundTrips += 1
            report.hashesExchanged += probes.count
            for (i, p) in probes.enumerated() {
                if theirs[i] != nil, theirs[i] == mine[i] {
                    lo = max(lo, p)
                } else if p > lo {
                    hi = min(hi, p)
                }
            }
            if lo >= hi { throw KianaNetError(.protocolViolation, "peer's block hashes are not a chain") }
            guard hi - lo > 1 else { break }
            let width = hi - lo
            let k = UInt64(max(1, config.probes))
            probes = Array(Set((1...k).map { lo + width * $0 / (k + 1) }.filter { $0 > lo && $0 < hi })).sorted()
        }
        return lo
    }

    /// Streams the peer's canonical blocks from `from` (whose parent is `parent`): one task
    /// fetches and checks batches ahead while the other stores what has arrived, everything
    /// waiting in one transaction (decision 110), so a store slower than the link writes larger
    /// transactions instead of falling further behind. What is fetched ahead is bounded by
    /// `SyncConfig.aheadEntries` and `aheadBytes`.
    /// Returns the last block taken when it stopped at `until` with more to come (the caller
    /// then checks the peer still states a chain holding it), nil when the stream ended.
    func stream(
        _ peer: some SyncPeer, from: UInt64, parent: [UInt8], until: UInt64, now: @Sendable () -> UInt64, _ report: inout PullReport
    ) async throws -> (height: UInt64, hash: [UInt8])? {
        let pipe = BatchPipe(maxEntries: config.aheadEntries, maxBytes: config.aheadBytes)
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                do {
                    var next = (from: from, parent: parent)
                    while true {
                        let b = try await batch(peer, from: next.from, parent: next.parent)
                        try await pipe.put(b)
                        guard b.more, let last = b.blocks.last, last.height < until else { break }
                        next = (last.height + 1, last.hash)
                    }
                    pipe.finish()
                } catch {
                    pipe.finish(error)
                }
            }
            defer { group.cancelAll() }
            while let taken = try await pipe.take() {
                report.roundTrips += taken.count
                let batches = taken.filter { !$0.blocks.isEmpty }
                let blocks = batches.count == 1 ? batches[0].blocks : batches.flatMap(\.blocks)
                guard let last = blocks.last else { return nil }
                let checked = batches.count == 1 ? batches[0].checked : batches.flatMap(\.checked)
                let result = try await store.importBatch(blocks, now: now(), prechecked: checked)
                let raw = batches.reduce(0) { $0 + $1.rawBytes }
                let compressed = batches.reduce(0) { $0 + $1.compressedBytes }
                counters.update {
                    $0.blocksIn += result.stored
                    $0.rawBytesIn += raw
                    $0.compressedBytesIn += compressed
                    if result.reorganized { $0.reorgs += 1 }
                }
                report.batches += batches.count
                report.stored += result.stored
                report.rawBytes += raw
                report.compressedBytes += compressed
                if result.headChanged { report.headChanged = true }
                if result.reorganized { report.reorganized = true }
                if let refused = result.refused {
                    report.refused = refused
                    if refused.index > 0, refused.index <= blocks.count { report.lastBlock = blocks[refused.index - 1].hash }
                    return nil
                }
                report.lastBlock = last.hash
                // The fetching task stopped after this batch: the stream ended, or reached `until`.
                if let final = taken.last, !final.more || final.blocks.isEmpty { return nil }
                if last.height >= until { return (last.height, last.hash) }
            }
            return nil
        }
    }
}
