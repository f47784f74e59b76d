import Foundation
import KianaCore
import KianaNet
import KianaStore
import KianaTestSupport
import Logging
import Synchronization
import Testing

/// A peer answered by another device's `ChainSync` directly (no socket), counting requests and
/// the encoded bytes both ways; `tamper` may rewrite an answer as a hostile peer would.
final class DirectPeer: SyncPeer, Sendable {
    struct Stats {
        var calls: [String: Int] = [:]
        var bytes = 0
    }
    let sync: ChainSync
    let stats = Mutex(Stats())
    let tamper: @Sendable (String, CBOR, Int) throws -> CBOR
    /// Fails every call once this many calls were made (a link that drops).
    let failAfter: Int?

    init(_ sync: ChainSync, failAfter: Int? = nil, tamper: @escaping @Sendable (String, CBOR, Int) throws -> CBOR = { _, b, _ in b }) {
        self.sync = sync
        self.failAfter = failAfter
        self.tamper = tamper
    }

    var label: String { "direct" }
    func calls(_ type: String) -> Int { stats.withLock { $0.calls[type] ?? 0 } }
    var total: Int { stats.withLock { $0.calls.values.reduce(0, +) } }

    func call(_ type: String, _ body: CBOR) async throws -> CBOR {
        let n = stats.withLock { s in
            s.calls[type, default: 0] += 1
            s.bytes += body.encoded.count
            return s.calls[type]!
        }
        if let failAfter, total > failAfter { throw KianaNetError(.closed, "link dropped") }
        switch await sync.answer(type, body) {
        case .body(let b)?:
            let out = try tamper(type, b, n)
            stats.withLock { $0.bytes += out.encoded.count }
            return out
        case .error(let code, let message)?: throw KianaNetError(code, message, remote: true)
        default: throw KianaNetError(.unknownType, "unknown request \(type)")
        }
    }
}

@Suite struct ChainSyncTests {
    /// Decision 113: every block the ledger accepts can travel. The largest valid block fits a
    /// sync batch (sent alone when it exceeds `batchBytes`) and a pushed-block link message, and
    /// the largest block this device seals is valid.
    @Test func theLargestValidBlockFitsABatchAndAMessage() {
        let config = SyncConfig()
        // The batch: a CBOR array holding one byte string (at most 10 bytes of heads).
        #expect(config.maxBatchBytes >= LedgerLimits.maxBlockBytes + 10)
        // Deflate stores incompressible data in 64 KiB blocks of 5 bytes' overhead each; the
        // message adds its keys and the head (under 1 KiB).
        let deflated = LedgerLimits.maxBlockBytes + (LedgerLimits.maxBlockBytes / 65_535 + 1) * 5 + 64
        #expect(MessageDecoder.defaultMaxMessage >= deflated + 1024)
        // What `sealPending` packs: entries up to `sealLimits.bytes`, or one entry alone, and a header.
        #expect(max(LedgerStore.sealLimits.bytes, LedgerLimits.maxEntryBytes) + LedgerLimits.maxHeaderBytes + 64 <= LedgerLimits.maxBlockBytes)
    }

    let a = DeviceIdentity.generate()
    let b = DeviceIdentity.generate()
    let t0: UInt64 = 1_764_288_000_000
    var logger: Logger {
        var l = Logger(label: "sync")
        l.logLevel = .critical
        return l
    }

    /// Two stores of one network (authorities a and b).
    func pair() throws -> (LedgerStore, LedgerStore) {
        let g = Block.genesis(identity: a, time: t0, others: [b.publicKey])
        let sa = LedgerStore(database: try KianaDatabase())
        let sb = LedgerStore(database: try KianaDatabase())
        try sa.initialize(genesis: g, now: t0)
        try sb.initialize(genesis: g, now: t0)
        return (sa, sb)
    }

    /// `count` writes of one small item each, one block each. Off the cooperative pool: these
    /// suites run beside process tests, whose handshakes and timers must not starve.
    func grow(_ s: LedgerStore, _ count: Int, by id: DeviceIdentity, from t: UInt64) async throws {
        try await blocking {
            for i in 0..<count {
                _ = try s.write(
                    [.put(ItemID.random(), KnowledgeFields(text: "fact \(i) from \(id.deviceID.description.prefix(6))"))], identity: id, now: t + UInt64(i))
            }
        }
    }

    /// Copies a's canonical blocks 1...n into b.
    func copy(_ a: LedgerStore, _ b: LedgerStore, through n: UInt64) async throws {
        guard n >= 1 else { return }
        let r = try await blocking { try b.importBatch(try a.blocks(from: 1, through: n), now: .max / 2) }
        #expect(r.refused == nil)
    }

    func config(batch: Int) -> SyncConfig {
        var c = SyncConfig()
        c.batchBlocks = batch
        return c
    }

    func same(_ x: LedgerStore, _ y: LedgerStore) throws -> Bool {
        try x.head() == y.head() && x.historyHead() == y.historyHead()
    }

    @Test("A device behind gets a consistency proof, then exactly the blocks it lacks, in batches", arguments: [(250, 0), (250, 120), (10, 9), (100, 0)])
    func behindCatchesUp(_ ahead: Int, _ behind: Int) async throws {
        let (sa, sb) = try pair()
        try await grow(sa, ahead, by: a, from: t0 + 1)
        try await copy(sa, sb, through: UInt64(behind))
        let peer = DirectPeer(ChainSync(store: sa, logger: logger, config: config(batch: 50)))
        let report = try await ChainSync(store: sb, logger: logger, config: config(batch: 50)).pull(from: peer, now: { .max / 2 })
        #expect(try same(sa, sb))
        #expect(report.stored == ahead - behind && report.forkHeight == nil && report.headChanged)
        #expect(peer.calls("sync.prove") == 1 && peer.calls("sync.hashes") == 0)
        #expect(peer.calls("sync.blocks") == (ahead - behind + 49) / 50)
        #expect(report.compressedBytes < report.rawBytes)
    }

    @Test func inStepOrAheadMeansNoRequest() async throws {
        let (sa, sb) = try pair()
        try await grow(sa, 30, by: a, from: t0 + 1)
        try await copy(sa, sb, through: 30)
        let peer = DirectPeer(ChainSync(store: sa, logger: logger))
        let head = try #require(try await ChainSync(store: sa, logger: logger).head())
        _ = try await ChainSync(store: sb, logger: logger).pull(from: peer, peerHead: head, now: { .max / 2 })
        #expect(peer.total == 0)
        // b ahead of a: a's head is already on b's chain, so b asks a for nothing.
        try await grow(sb, 3, by: b, from: t0 + 100)
        _ = try await ChainSync(store: sb, logger: logger).pull(from: peer, peerHead: head, now: { .max / 2 })
        #expect(peer.total == 0)
        // Without a stated head, one prove request shows a is behind: nothing streams.
        _ = try await ChainSync(store: sb, logger: logger).pull(from: peer, now: { .max / 2 })
        #expect(peer.calls("sync.prove") == 1 && peer.calls("sync.blocks") == 0)
    }

    @Test("Forked chains: the fork point is found with few hashes, the better branch streams from there", arguments: [(600, 200, 201), (300, 1, 3), (50, 40, 41), (0, 5, 6)])
    func forkIsFound(_ common: Int, _ aOwn: Int, _ bOwn: Int) async throws {
        let (sa, sb) = try pair()
        try await grow(sa, common, by: a, from: t0 + 1)
        try await copy(sa, sb, through: UInt64(common))
        try await grow(sa, aOwn, by: a, from: t0 + 10_000)
        try await grow(sb, bOwn, by: b, from: t0 + 20_000)
        let peer = DirectPeer(ChainSync(store: sb, logger: logger))
        let report = try await ChainSync(store: sa, logger: logger).pull(from: peer, now: { .max / 2 })
        #expect(report.forkHeight == UInt64(common))
        #expect(report.stored == bOwn && report.reorganized)
        #expect(try same(sa, sb), "b's longer branch is a's head now")
        // O(log n) hashes: exponential probe from the tip, then a 4-ary search.
        let n = Double(common + bOwn + 1)
        #expect(Double(report.hashesExchanged) <= 3 + 2 * log2(n) + 3 * log2(Double(aOwn + 2)) / 2 + 3)
        // a's own entries went back to pending, to be sealed on top by the node.
        #expect(try sa.pendingCount() == aOwn)
    }

    @Test func aForgedBlockKeepsTheValidPrefixAndNamesTheRule() async throws {
        let (sa, sb) = try pair()
        try await grow(sa, 20, by: a, from: t0 + 1)
        let stranger = DeviceIdentity.generate()
        let peer = DirectPeer(ChainSync(store: sa, logger: logger)) { type, body, _ in
            guard type == "sync.blocks" else { return body }
            var m = try body.mapValue("answer")
            let raw = try Deflate.decompress(try m[.text("data")]!.bytesValue("d"), size: Int(try m[.text("size")]!.uintValue("s")), limit: 1 << 24)
            var blocks = try CBOR.decode(raw).arrayValue("blocks").map { try Block(decoding: try $0.bytesValue("b")) }
            // Re-sign block 5 with a stranger's key: a valid signature, but no authority.
            blocks[4] = Block.seal(entries: blocks[4].entries, parent: blocks[3].header, parentHash: blocks[3].hash, time: blocks[4].header.time, identity: stranger)
            blocks.removeLast(blocks.count - 5)
            m[.text("count")] = 5
            let encoded = CBOR.array(blocks.map { .bytes($0.encoded) }).encoded
            m[.text("data")] = .bytes(Deflate.compress(encoded))
            m[.text("size")] = .unsigned(UInt64(encoded.count))
            return .map(m)
        }
        let report = try await ChainSync(store: sb, logger: logger).pull(from: peer, now: { .max / 2 })
        let refused = try #require(report.refused)
        #expect(refused.height == 5 && refused.rule == "authority")
        #expect(try sb.head()?.height == 4, "the four valid blocks before it are kept")
    }

    @Test func anInterruptedStreamResumesFromWhatWasStored() async throws {
        let (sa, sb) = try pair()
        try await grow(sa, 300, by: a, from: t0 + 1)
        let sync = ChainSync(store: sa, logger: logger, config: config(batch: 50))
        // The link drops after the prove and two batches.
        await #expect(throws: KianaNetError.self) {
            _ = try await ChainSync(store: sb, logger: logger, config: config(batch: 50)).pull(from: DirectPeer(sync, failAfter: 3), now: { .max / 2 })
        }
        let kept = try #require(try sb.head()?.height)
        #expect(kept >= 50 && kept < 300)
        let peer = DirectPeer(sync)
        let report = try await ChainSync(store: sb, logger: logger, config: config(batch: 50)).pull(from: peer, now: { .max / 2 })
        #expect(report.stored == 300 - Int(kept) && report.forkHeight == nil)
        #expect(try same(sa, sb))
    }

    @Test func anInterruptedPullOfAForkResumesFromTheSideBranch() async throws {
        let (sa, sb) = try pair()
        try await grow(sa, 20, by: a, from: t0 + 1)
        try await copy(sa, sb, through: 20)
        try await grow(sa, 100, by: a, from: t0 + 10_000)
        try await grow(sb, 200, by: b, from: t0 + 20_000)
        let sync = ChainSync(store: sb, logger: logger, config: config(batch: 50))
        // prove + probes (2 rounds at most here) + 1 batch, then the link drops.
        await #expect(throws: KianaNetError.self) {
            _ = try await ChainSync(store: sa, logger: logger, config: config(batch: 50)).pull(from: DirectPeer(sync, failAfter: 7), now: { .max / 2 })
        }
        #expect(try sa.head()?.height == 120, "a's own branch is still canonical")
        let side = try #require(try sa.sideBranches().first)
        #expect(side.forkHeight == 20 && side.tipHeight > 20)
        let report = try await ChainSync(store: sa, logger: logger, config: config(batch: 50)).pull(from: DirectPeer(sync), now: { .max / 2 })
        #expect(report.stored == 220 - Int(side.tipHeight), "only what the side branch lacked")
        #expect(try same(sa, sb))
    }

    @Test func aLyingProofOrAnOversizedBatchIsAProtocolViolation() async throws {
        let (sa, sb) = try pair()
        try await grow(sa, 20, by: a, from: t0 + 1)
        try await copy(sa, sb, through: 5)
        let liar = DirectPeer(ChainSync(store: sa, logger: logger)) { type, body, _ in
            guard type == "sync.prove" else { return body }
            var m = try body.mapValue("answer")
            m[.text("proof")] = .array([.bytes([UInt8](repeating: 7, count: 32))])
            return .map(m)
        }
        await #expect { _ = try await ChainSync(store: sb, logger: logger).pull(from: liar, now: { .max / 2 }) } throws: { e in
            (e as? KianaNetError)?.code == .protocolViolation
        }
        let bomb = DirectPeer(ChainSync(store: sa, logger: logger)) { type, body, _ in
            guard type == "sync.blocks" else { return body }
            let zeros = [UInt8](repeating: 0, count: 64 << 20)
            return .map(["count": 1, "size": .unsigned(UInt64(zeros.count)), "codec": "deflate", "data": .bytes(Deflate.compress(zeros)), "more": .bool(false)])
        }
        await #expect { _ = try await ChainSync(store: sb, logger: logger).pull(from: bomb, now: { .max / 2 }) } throws: { e in
            (e as? KianaNetError)?.code == .tooLarge
        }
        #expect(try sb.head()?.height == 5)
    }

    @Test func requestsAreValidatedAndBounded() async throws {
        let (sa, _) = try pair()
        try await grow(sa, 10, by: a, from: t0 + 1)
        let sync = ChainSync(store: sa, logger: logger)
        func code(_ type: String, _ body: CBOR) async -> ErrorCode? {
            if case .error(let c, _)? = await sync.answer(type, body) { return c }
            return nil
        }
        #expect(await code("sync.hashes", .map(["heights": .array(Array(repeating: 1, count: 65))])) == .tooLarge)
        #expect(await code("sync.prove", .map(["size": 1, "root": .bytes([1, 2])])) == .invalidInput)
        #expect(await code("sync.blocks", .map(["from": 3, "parent": .bytes([UInt8](repeating: 1, count: 32))])) == .conflict)
        #expect(await code("sync.blocks", .map(["from": 0, "parent": .bytes([UInt8](repeating: 0, count: 32))])) == .invalidInput)
        #expect(await code("sync.prove", .map(["size": 1, "root": .bytes([UInt8](repeating: 0, count: 32)), "x": 1])) == .invalidInput)
        #expect(await sync.answer("sync.nope", .map([:])) == nil)
        // Heights past the tip answer null.
        if case .body(let b)? = await sync.answer("sync.hashes", .map(["heights": .array([0, 10, 11])])) {
            let list = try b.mapValue("a")[.text("hashes")]!.arrayValue("h")
            #expect(list.count == 3 && list[2] == .null && list[1] != .null)
        } else {
            Issue.record("hashes were not answered")
        }
    }

    @Test func pairingDownloadAnswersFromTheNewestSharedBlock() async throws {
        let (sa, _) = try pair()
        try await grow(sa, 100, by: a, from: t0 + 1)
        let ex = BlockExchange(store: sa, batch: 10)
        let hashes = try sa.blockHashes()
        func heights(_ locator: [[UInt8]]) async throws -> [UInt64] { try await ex.blocks(after: locator).map { try Block(decoding: $0).height } }
        #expect(try await heights([hashes[42]]) == Array(43...52))
        #expect(try await heights([Array(repeating: 9, count: 32), hashes[99]]) == [100])
        #expect(try await heights([Array(repeating: 9, count: 32)]).first == 0)
        #expect(try await heights([hashes[100]]).isEmpty)
    }
}

extension ChainSyncTests {
    @Test func aPeerThatStreamsPastItsStatedHeadIsCutOff() async throws {
        let (sa, sb) = try pair()
        try await grow(sa, 120, by: a, from: t0 + 1)
        // The prove answer understates a's chain: a "stated" 10 blocks, then streams 120.
        let liar = DirectPeer(ChainSync(store: sa, logger: logger, config: config(batch: 20))) { type, body, _ in
            guard type == "sync.prove" else { return body }
            var m = try body.mapValue("answer")
            m[.text("size")] = 11
            m[.text("proof")] = nil
            m[.text("hash")] = .bytes(try sa.blocks(from: 10, through: 10)[0].hash)
            return .map(m)
        }
        var c = config(batch: 20)
        c.maxGrowth = 30
        await #expect { _ = try await ChainSync(store: sb, logger: logger, config: c).pull(from: liar, now: { .max / 2 }) } throws: { e in
            (e as? KianaNetError)?.code == .protocolViolation
        }
        #expect(try sb.head()!.height <= 40, "nothing past the stated head plus the allowance is taken")
    }
}

extension ChainSyncTests {
    @Test func aPeerWhoseChainGrowsWhileWePullIsFollowedNotCutOff() async throws {
        let (sa, sb) = try pair()
        try await grow(sa, 50, by: a, from: t0 + 1)
        let writer = a
        let start = t0 + 1000
        // Every batch a answers, it writes 15 more blocks (a bulk import there).
        let growing = DirectPeer(ChainSync(store: sa, logger: logger, config: config(batch: 20))) { type, body, n in
            if type == "sync.blocks", n <= 8 {
                for i in 0..<15 {
                    _ = try sa.write([.put(ItemID.random(), KnowledgeFields(text: "more \(n) \(i)"))], identity: writer, now: start + UInt64(n * 100 + i))
                }
            }
            return body
        }
        var c = config(batch: 20)
        c.maxGrowth = 30
        let report = try await ChainSync(store: sb, logger: logger, config: c).pull(from: growing, now: { .max / 2 })
        #expect(report.refused == nil)
        #expect(try sb.head()!.height >= 50 + 30, "it went on past the first allowance")
        // Anything a wrote after the last check arrives with the next pull.
        _ = try await ChainSync(store: sb, logger: logger, config: c).pull(from: DirectPeer(ChainSync(store: sa, logger: logger)), now: { .max / 2 })
        #expect(try same(sa, sb))
    }
}

/// A store that is slow to import (a slow disk, a Pi): each import first waits for `gate` (given
/// the import's number, from 0), and the size of each is recorded. Everything else is the real
/// store.
final class SlowStore: SyncStore, Sendable {
    let base: LedgerStore
    let gate: @Sendable (Int) async throws -> Void
    let imports = Mutex<[Int]>([])

    init(_ base: LedgerStore, gate: @escaping @Sendable (Int) async throws -> Void) {
        self.base = base
        self.gate = gate
    }

    func networkID() async throws -> [UInt8]? { try await base.networkID() }
    func chainHead() async throws -> LedgerHead? { try await base.chainHead() }
    func historyHead() async throws -> HistoryHead { try await base.historyHead() }
    func headSnapshot() async throws -> (head: LedgerHead, tree: HistoryHead)? { try await base.headSnapshot() }
    func historyRoot(size: UInt64) async throws -> [UInt8]? { try await base.historyRoot(size: size) }
    func consistency(from oldSize: UInt64) async throws -> HistoryConsistency? { try await base.consistency(from: oldSize) }
    func canonicalHashes(at heights: [UInt64]) async throws -> [[UInt8]?] { try await base.canonicalHashes(at: heights) }
    func chainMembership() async throws -> Membership { try await base.chainMembership() }
    func hasBlock(_ hash: [UInt8]) async throws -> Bool { try await base.hasBlock(hash) }
    func heightOnChain(of hash: [UInt8]) async throws -> UInt64? { try await base.heightOnChain(of: hash) }
    func encodedBlocks(from: UInt64, maxCount: Int, maxBytes: Int) async throws -> [[UInt8]] {
        try await base.encodedBlocks(from: from, maxCount: maxCount, maxBytes: maxBytes)
    }
    func importBatch(_ blocks: [Block], now: UInt64, prechecked: [Bool]?) async throws -> BatchImport {
        let n = imports.withLock { i in
            i.append(blocks.count)
            return i.count - 1
        }
        try await gate(n)
        return try await base.importBatch(blocks, now: now, prechecked: prechecked)
    }
    func sideBranchTips() async throws -> [SideBranch] { try await base.sideBranchTips() }
    func knownPeerAddresses() async throws -> [String] { try await base.knownPeerAddresses() }
    func watchChain(_ onChange: @escaping @Sendable () -> Void) -> ChainWatch? { base.watchChain(onChange) }
}

extension ChainSyncTests {
    @Test("A store slower than the link stores the batches that arrived meanwhile together, never more than the bound")
    func aSlowStoreTakesLargerTransactions() async throws {
        let (sa, sb) = try pair()
        try await grow(sa, 600, by: a, from: t0 + 1)
        var c = config(batch: 25)
        c.aheadEntries = 200
        let peer = DirectPeer(ChainSync(store: sa, logger: logger, config: c))
        // The first import waits until five more batches were fetched (the sixth is asked for
        // only once the fifth is in the pipe).
        let slow = SlowStore(sb) { n in if n == 0 { _ = await eventually(10, every: .milliseconds(5)) { peer.calls("sync.blocks") >= 6 } } }
        let report = try await ChainSync(store: slow, logger: logger, config: c).pull(from: peer, now: { .max / 2 })
        #expect(try same(sa, sb))
        #expect(report.stored == 600 && report.batches == 24 && peer.calls("sync.blocks") == 24)
        let sizes = slow.imports.withLock { $0 }
        #expect(sizes.reduce(0, +) == 600)
        #expect(sizes.count >= 2 && sizes[1] >= 100, "the batches that arrived while the store was busy went in together: \(sizes)")
        #expect(sizes.max()! <= 200, "never more than the bound in one transaction: \(sizes)")
    }

    @Test("A block refused while the fetching side waits for room: the valid prefix is kept and the pull ends")
    func aRefusalWithAFullPipeEndsThePull() async throws {
        let (sa, sb) = try pair()
        try await grow(sa, 400, by: a, from: t0 + 1)
        let stranger = DeviceIdentity.generate()
        var c = config(batch: 20)
        c.aheadEntries = 60
        // Block 150 is re-signed by a stranger: a valid signature, but no authority.
        let peer = DirectPeer(ChainSync(store: sa, logger: logger, config: c)) { type, body, _ in
            guard type == "sync.blocks" else { return body }
            var m = try body.mapValue("answer")
            let raw = try Deflate.decompress(try m[.text("data")]!.bytesValue("d"), size: Int(try m[.text("size")]!.uintValue("s")), limit: 1 << 24)
            var blocks = try CBOR.decode(raw).arrayValue("blocks").map { try Block(decoding: try $0.bytesValue("b")) }
            if let i = blocks.firstIndex(where: { $0.height == 150 }) {
                blocks[i] = Block.seal(entries: blocks[i].entries, parent: blocks[i - 1].header, parentHash: blocks[i - 1].hash, time: blocks[i].header.time, identity: stranger)
                blocks.removeLast(blocks.count - i - 1)
                m[.text("count")] = .unsigned(UInt64(blocks.count))
            }
            let encoded = CBOR.array(blocks.map { .bytes($0.encoded) }).encoded
            m[.text("data")] = .bytes(Deflate.compress(encoded))
            m[.text("size")] = .unsigned(UInt64(encoded.count))
            return .map(m)
        }
        // Every import waits until the fetching side has stopped asking (parked on a full pipe).
        let slow = SlowStore(sb) { _ in
            var last = -1
            for _ in 0..<100 {
                let n = peer.calls("sync.blocks")
                if n == last { return }
                last = n
                try await Task.sleep(for: .milliseconds(100))
            }
        }
        let report = try await ChainSync(store: slow, logger: logger, config: c).pull(from: peer, now: { .max / 2 })
        let refused = try #require(report.refused)
        #expect(refused.height == 150 && refused.rule == "authority")
        #expect(try sb.head()?.height == 149, "the blocks before it are kept")
        #expect(report.lastBlock == (try sa.blocks(from: 149, through: 149)[0].hash), "the last block taken, for the announcements")
        #expect(peer.calls("sync.blocks") <= 150 / 20 + 60 / 20 + 2, "nothing fetched beyond the bound after the refusal")
    }
}
