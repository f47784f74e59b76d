import Crypto
import Dispatch
import Foundation
import KianaCore
import KianaNet
import KianaStore
import Logging
import NIOPosix
import Synchronization

/// `kiana bench sync`: ledger sync between devices on loopback, each node a real `PeerNetwork`
/// (link listener, dialer, announcer) over its own SQLite file, linked by Noise over TCP.
///
/// - Propagation: a single small write on A (`LedgerStore.write`, what `kiana remember` and the
///   REST API call) until its item is readable on B, p50/p99 over `writes` writes, with the
///   link bytes per write (both directions) beside the write's own encoded size.
/// - Initial sync: a fresh device C pulls an `entries`-entry ledger from A (`perBlock` entries
///   per block: 1 by default, as single `remember` writes seal them, two signatures per entry;
///   more as an ingestion's entries sealed on one tick), in entries/s, beside the two-core
///   Ed25519 verification rate of the same signatures (the ceiling for a receiver that checks
///   every signature); the batches' compression ratio.
/// - Small change on a long ledger: 10 new entries on A reach C; link bytes beyond the
///   entries' own encoded size.
public struct SyncBench: Sendable {
    public var writes: Int
    public var entries: Int
    public var perBlock: Int
    public var pause: Duration

    public init(writes: Int = 200, entries: Int = 100_000, perBlock: Int = 1, pause: Duration = .milliseconds(20)) {
        self.writes = writes
        self.entries = entries
        self.perBlock = perBlock
        self.pause = pause
    }

    public struct Results: Sendable {
        public var latencies: [Double] = []
        public var bytesPerWrite: Double = 0
        public var encodedPerWrite: Double = 0
        public var syncSeconds: Double = 0
        public var verifySeconds: Double = 0
        public var signatures = 0
        public var rawBytes = 0
        public var compressedBytes = 0
        public var tenBytes = 0
        public var tenEncoded = 0
        public var entries = 0
        public var perBlock = 1
        public var ledgerVerifySeconds: Double = 0
        public var ledgerVerifyGrowth = 0
        public var concurrentWrites = 0
        public var concurrentReorgs = 0
        public var convergeSeconds: Double = 0
        public var forkDepth = 0
        public var forkHashes = 0
        public var forkRoundTrips = 0
        public var forkFound: UInt64?
        public var forkSeconds: Double = 0
        public var forkStored = 0
        /// The initial sync's parts measured apart on one core each (same chain): serving
        /// (read, splice, deflate), decoding, storing with signatures already checked.
        public var serveSeconds: Double = 0
        public var decodeSeconds: Double = 0
        public var storeSeconds: Double = 0
    }

    /// A peer answered by another store's `ChainSync` in this process.
    struct Direct: SyncPeer {
        let sync: ChainSync
        var label: String { "direct" }
        func call(_ type: String, _ body: CBOR) async throws -> CBOR {
            switch await sync.answer(type, body) {
            case .body(let b)?: return b
            case .error(let code, let message)?: throw KianaNetError(code, message, remote: true)
            default: throw KianaNetError(.unknownType, type)
            }
        }
    }

    /// Two devices sharing the long chain, then `depth` blocks of their own each (the second one
    /// more): the hashes and round trips the first needs to find where they part.
    func fork(
        _ blocks: [Block], genesis: Block, a: DeviceIdentity, c: DeviceIdentity, depth: Int, logger: Logger, forkSeconds: Peak
    ) async throws -> PullReport {
        let x = LedgerStore(database: try KianaDatabase())
        let y = LedgerStore(database: try KianaDatabase())
        for s in [x, y] {
            try s.initialize(genesis: genesis, now: genesis.header.time)
            for start in stride(from: 0, to: blocks.count, by: 5000) {
                _ = try s.importBatch(Array(blocks[start..<min(blocks.count, start + 5000)]), now: currentMillis())
            }
        }
        for (s, id, n) in [(x, a, depth), (y, c, depth + 1)] {
            for i in 0..<n { _ = try s.write([.put(ItemID.random(), KnowledgeFields(text: "branch \(i)"))], identity: id, now: currentMillis()) }
        }
        let start = Self.now()
        let report = try await ChainSync(store: x, logger: logger).pull(from: Direct(sync: ChainSync(store: y, logger: logger)))
        forkSeconds.note(Int((Self.now() - start) * 1000))
        return report
    }

    static func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }

    final class Device: Sendable {
        let identity: DeviceIdentity
        let store: LedgerStore
        let network: PeerNetwork
        init(identity: DeviceIdentity, path: String, genesis: Block, logger: Logger) throws {
            self.identity = identity
            store = LedgerStore(database: try KianaDatabase(path: path))
            try store.initialize(genesis: genesis, now: genesis.header.time)
            var config = NetworkConfig()
            config.host = "127.0.0.1"
            config.port = 0
            config.discovery = false
            // As the node does: entries a reorg returned to the pending pool are sealed again.
            let store = self.store
            let seal: @Sendable () async -> Void = { _ = try? await blocking { try store.sealPending(identity: identity, now: currentMillis()) } }
            network = PeerNetwork(store: store, identity: identity, config: config, logger: logger, hooks: .init(afterImport: seal, tick: seal))
        }

        /// Runs the device's link services until cancelled; `ready` gets the port.
        func run(ready: @escaping @Sendable (Int) -> Void) async {
            await withDiscardingTaskGroup { group in
                group.addTask { try? await self.network.listener(ready: ready).run() }
                group.addTask { try? await self.network.dialer.run() }
                group.addTask { try? await self.network.announcer.run() }
            }
        }

        /// Bytes on the links to `peer` (both directions).
        func linkBytes(to peer: DeviceIdentity) async -> Int {
            var total = 0
            for link in await network.registry.all where link.remoteKey == peer.publicKey { total += await link.bytesIn + link.bytesOut }
            return total
        }
    }

    /// The chain A holds for the initial sync: `count` blocks of one entry each.
    static func chain(_ count: Int, perBlock: Int = 1, genesis: Block, identity: DeviceIdentity, progress: (String) -> Void) -> [Block] {
        var out: [Block] = []
        out.reserveCapacity(count / perBlock + 1)
        var parent = genesis
        let text = String(repeating: "knowledge ", count: 12)
        var i = 0
        while i < count {
            if i / 20_000 != (i + perBlock) / 20_000 || i == 0 { progress("signing entry \(i) of \(count)") }
            let entries = (i..<min(count, i + perBlock)).map { n in
                Entry(
                    signedBy: identity, network: genesis.hash, sequence: UInt64(n + 1), hlc: HLC(wall: genesis.header.time + UInt64(n) + 1),
                    kind: .knowledgePut, payload: KnowledgeOp.put(ItemID.random(), KnowledgeFields(title: "note \(n)", text: text)).payload)
            }
            i += entries.count
            let b = Block.seal(entries: entries, parent: parent.header, parentHash: parent.hash, time: genesis.header.time + UInt64(i), identity: identity)
            out.append(b)
            parent = b
        }
        return out
    }

    public func run(progress: @escaping @Sendable (String) -> Void) async throws -> Results {
        var logger = Logger(label: "bench-sync")
        logger.logLevel = ProcessInfo.processInfo.environment["KIANA_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .error
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("kiana-bench-sync-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let ia = DeviceIdentity.generate()
        let ib = DeviceIdentity.generate()
        let ic = DeviceIdentity.generate()
        // The long ledger's author: a fourth authority that never runs (its sequence numbers
        // cannot meet those A, B and C use for their own writes).
        let id = DeviceIdentity.generate()
        let t0 = currentMillis() - UInt64(entries) - 10_000
        let genesis = Block.genesis(identity: ia, time: t0, name: "bench", others: [ib.publicKey, ic.publicKey, id.publicKey])
        let a = try Device(identity: ia, path: dir + "/a.sqlite", genesis: genesis, logger: logger)
        let b = try Device(identity: ib, path: dir + "/b.sqlite", genesis: genesis, logger: logger)
        let c = try Device(identity: ic, path: dir + "/c.sqlite", genesis: genesis, logger: logger)
        var r = Results()
        let port = AsyncStream<Int>.makeStream()
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await a.run { port.continuation.yield($0) } }
            var it = port.stream.makeAsyncIterator()
            guard let portA = await it.next() else { throw KianaStoreError(.internal, "A did not listen") }
            let portB = AsyncStream<Int>.makeStream()
            group.addTask { await b.run { portB.continuation.yield($0) } }
            var itB = portB.stream.makeAsyncIterator()
            guard let portBValue = await itB.next() else { throw KianaStoreError(.internal, "B did not listen") }
            _ = try b.store.addPeerAddress("127.0.0.1:\(portA)", now: currentMillis())
            try await Self.until(seconds: 30) { await a.network.registry.all.count == 1 }

            // 1. Propagation of single writes, A → B.
            progress("propagation: \(writes) writes")
            let before = await a.linkBytes(to: ib)
            var encoded = 0
            for i in 0..<writes {
                let receipt = try a.store.write(
                    [.put(ItemID.random(), KnowledgeFields(text: "small change \(i)"))], identity: ia, now: currentMillis())
                let start = Self.now()
                let id = receipt.entries[0]
                encoded += receipt.block.encoded.count
                while try !b.store.containsBlock(receipt.block.hash) {
                    try await Task.sleep(for: .microseconds(200))
                    if Self.now() - start > 10 { throw KianaStoreError(.timeout, "write \(i) did not reach B in 10 s") }
                }
                _ = try b.store.findEntry(idPrefix: id.idHex)
                r.latencies.append((Self.now() - start) * 1000)
                try await Task.sleep(for: pause)
            }
            r.bytesPerWrite = Double(await a.linkBytes(to: ib) - before) / Double(writes)
            r.encodedPerWrite = Double(encoded) / Double(writes)

            // 2. Initial sync of a fresh device from a long ledger.
            let blocks = Self.chain(entries, perBlock: perBlock, genesis: genesis, identity: id, progress: progress)
            progress("storing \(entries) entries on A")
            let storeStart = Self.now()
            for start in stride(from: 0, to: blocks.count, by: 2000) {
                let result = try a.store.importBatch(Array(blocks[start..<min(blocks.count, start + 2000)]), now: currentMillis())
                if let refused = result.refused { throw refused.error }
            }
            progress(String(format: "stored in %.1f s", Self.now() - storeStart))
            // The generated chain displaced A's earlier writes (a longer chain from genesis): wait
            // until A's tick has sealed them again, so the target is A's settled head.
            try await Self.until(seconds: 60) {
                let before = try a.store.head()
                guard try a.store.pendingCount() == 0 else { return false }
                try await Task.sleep(for: .milliseconds(600))
                return try a.store.head() == before
            }
            let target = try a.store.head()
            r.entries = try a.store.counts().entries
            r.perBlock = perBlock
            progress("initial sync of C: \(r.entries) entries")
            _ = try c.store.addPeerAddress("127.0.0.1:\(portA)", now: currentMillis())
            let syncStart = Self.now()
            group.addTask { await c.run { _ in } }
            try await Self.until(seconds: 3600) { (try? c.store.head()) == target }
            r.syncSeconds = Self.now() - syncStart
            let stats = c.network.counters.snapshot
            r.rawBytes = stats.rawBytesIn
            r.compressedBytes = stats.compressedBytesIn

            // Reference: Ed25519 verification of the same signatures (one per entry, one per
            // block) on all cores.
            progress("reference: verifying the same signatures on all cores")
            var work: [(key: Curve25519.Signing.PublicKey, message: [UInt8], signature: [UInt8])] = []
            let chain = try a.store.blocks(from: 1, through: .max)
            for blk in chain {
                work.append((try Curve25519.Signing.PublicKey(rawRepresentation: blk.header.signer), Block.domain + blk.hash, blk.signature))
                for e in blk.entries { work.append((try Curve25519.Signing.PublicKey(rawRepresentation: e.author), Entry.domain + e.id, e.signature)) }
            }
            r.signatures = work.count
            let items = work
            let vStart = Self.now()
            ChainValidator.parallelChunks(count: items.count) { range in
                for i in range where !items[i].key.isValidSignature(items[i].signature, for: items[i].message) {
                    fatalError("reference signature \(i) does not verify")
                }
            }
            r.verifySeconds = Self.now() - vStart

            // Where the time goes: the parts of the same work measured apart, one core each.
            progress("parts: serving, decoding and storing the chain apart")
            var served: [[[UInt8]]] = []
            let serveStart = Self.now()
            var next: UInt64 = 1
            while true {
                let batch = try await a.store.encodedBlocks(from: next, maxCount: 1000, maxBytes: 1 << 20)
                guard !batch.isEmpty else { break }
                _ = Deflate.compress(CBOR.array(batch.map { .bytes($0) }).encoded, level: SyncConfig().compressionLevel)
                served.append(batch)
                next += UInt64(batch.count)
            }
            r.serveSeconds = Self.now() - serveStart
            let decodeStart = Self.now()
            let decoded = try served.map { try $0.map { try Block(decoding: $0) } }
            r.decodeSeconds = Self.now() - decodeStart
            let fresh = try LedgerStore(database: KianaDatabase(path: dir + "/d.sqlite"))
            try fresh.initialize(genesis: genesis, now: genesis.header.time)
            let partStart = Self.now()
            // As a pull stores them when the store is the slower side: the batches waiting, up to
            // `aheadEntries` and `aheadBytes`, in one transaction (decision 110).
            var transaction: [Block] = []
            var bytes = 0
            var entries = 0
            let bound = SyncConfig()
            for (i, part) in decoded.enumerated() {
                transaction += part
                entries += part.reduce(0) { $0 + $1.entries.count }
                bytes += served[i].reduce(0) { $0 + $1.count }
                guard i == decoded.count - 1 || entries + decoded[i + 1].reduce(0, { $0 + $1.entries.count }) > bound.aheadEntries
                    || bytes + served[i + 1].reduce(0, { $0 + $1.count }) > bound.aheadBytes
                else { continue }
                let result = try await fresh.importBatch(transaction, now: currentMillis(), prechecked: Array(repeating: true, count: transaction.count))
                if let refused = result.refused { throw refused.error }
                transaction = []
                bytes = 0
                entries = 0
            }
            r.storeSeconds = Self.now() - partStart

            // `ledger verify` on the synced device: time, and how much the resident set grows.
            progress("ledger verify on C")
            let rssBefore = Self.residentBytes()
            let peak = Peak(rssBefore)
            let lStart = Self.now()
            try await withThrowingTaskGroup(of: Void.self) { sampler in
                sampler.addTask {
                    while !Task.isCancelled {
                        let now = Self.residentBytes()
                        peak.note(now)
                        try await Task.sleep(for: .milliseconds(20))
                    }
                }
                _ = try await blocking { try c.store.verify(now: currentMillis()) }
                sampler.cancelAll()
            }
            r.ledgerVerifySeconds = Self.now() - lStart
            r.ledgerVerifyGrowth = peak.value - rssBefore

            // 3. Ten new entries on a long ledger, A → C.
            progress("ten new entries on the long ledger")
            try await Self.until(seconds: 30) { await c.network.registry.all.count == 1 }
            let tenBefore = await a.linkBytes(to: ic)
            var last: WriteReceipt?
            for i in 0..<10 {
                let receipt = try a.store.write([.put(ItemID.random(), KnowledgeFields(text: "one of ten \(i)"))], identity: ia, now: currentMillis())
                r.tenEncoded += receipt.entries[0].encoded.count
                last = receipt
            }
            if let last { try await Self.until(seconds: 30) { (try? c.store.containsBlock(last.block.hash)) == true } }
            try await Task.sleep(for: .milliseconds(300))
            r.tenBytes = await a.linkBytes(to: ic) - tenBefore
            // 5. Concurrent writes on three devices (a full mesh): reorgs per write, convergence.
            progress("concurrent writes on A, B and C")
            _ = try c.store.addPeerAddress("127.0.0.1:\(portBValue)", now: currentMillis())
            try await Self.until(seconds: 30) { await c.network.registry.all.count == 2 }
            let reorgsBefore = [a, b, c].map { $0.network.counters.snapshot.reorgs }.reduce(0, +)
            let perDevice = 50
            var written: [[UInt8]] = []
            try await withThrowingTaskGroup(of: [[UInt8]].self) { writers in
                for (d, id) in [(a, ia), (b, ib), (c, ic)] {
                    writers.addTask {
                        var ids: [[UInt8]] = []
                        for i in 0..<perDevice {
                            let receipt = try d.store.write(
                                [.put(ItemID.random(), KnowledgeFields(text: "concurrent \(i)"))], identity: id, now: currentMillis())
                            ids.append(receipt.entries[0].id)
                            try await Task.sleep(for: .milliseconds(Int.random(in: 2...12)))
                        }
                        return ids
                    }
                }
                for try await ids in writers { written += ids }
            }
            let lastWrite = Self.now()
            try await Self.until(seconds: 120) {
                let heads = try [a, b, c].map { try $0.store.head() }
                let pendings = try [a, b, c].map { try $0.store.pendingCount() }
                let pending = pendings.reduce(0, +)
                if ProcessInfo.processInfo.environment["KIANA_BENCH_DEBUG"] != nil {
                    progress("heads \(heads.map { "\($0?.height ?? 0):\(Hex.encode(($0?.hash ?? []).prefix(3)))" }) pending \(pendings)")
                    for d in [a, b] {
                        progress("  eq \(try d.store.equivocations().map { "\(Hex.encode($0.author.prefix(2))):\($0.sequence)" }) gaps \(try d.store.sequenceGaps().map { "\(Hex.encode($0.author.prefix(2))):\($0.missing)" })")
                    }
                }
                // Heads read again after the pending pools: a seal in between moves a head.
                let after = try [a, b, c].map { try $0.store.head() }
                return heads[0] == heads[1] && heads[1] == heads[2] && pending == 0 && after == heads
            }
            r.convergeSeconds = Self.now() - lastWrite
            for d in [a, b, c] {
                for id in written { _ = try d.store.findEntry(idPrefix: Hex.encode(id)) }
            }
            r.concurrentWrites = written.count
            r.concurrentReorgs = [a, b, c].map { $0.network.counters.snapshot.reorgs }.reduce(0, +) - reorgsBefore
            group.cancelAll()

            // 4. A fork 1,000 deep on the long chain: hashes to find it.
            progress("a fork \(min(1000, blocks.count / 2)) blocks deep on the \(r.entries)-entry chain")
            r.forkDepth = min(1000, blocks.count / 2)
            let millis = Peak(0)
            let report = try await fork(blocks, genesis: genesis, a: ia, c: ic, depth: r.forkDepth, logger: logger, forkSeconds: millis)
            r.forkSeconds = Double(millis.value) / 1000
            r.forkStored = report.stored
            r.forkHashes = report.hashesExchanged
            r.forkRoundTrips = report.roundTrips
            r.forkFound = report.forkHeight
            return r
        }
    }

    /// The largest value noted.
    final class Peak: Sendable {
        let state: Mutex<Int>
        init(_ v: Int) { state = Mutex(v) }
        func note(_ v: Int) { state.withLock { $0 = max($0, v) } }
        var value: Int { state.withLock { $0 } }
    }

    /// This process's resident set (Linux /proc/self/statm), in bytes.
    static func residentBytes() -> Int {
        guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
        let fields = text.split(separator: " ")
        return fields.count > 1 ? (Int(fields[1]) ?? 0) * 4096 : 0
    }

    static func until(seconds: Double, _ condition: () async throws -> Bool) async throws {
        let end = now() + seconds
        while try await !condition() {
            guard now() < end else { throw KianaStoreError(.timeout, "the bench waited \(Int(seconds)) s in vain") }
            try await Task.sleep(for: .milliseconds(5))
        }
    }

    public static func render(_ r: Results, writes: Int) -> String {
        let sorted = r.latencies.sorted()
        func pct(_ p: Double) -> Double { sorted.isEmpty ? 0 : sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))] }
        let rate = Double(r.entries) / r.syncSeconds
        let verifyRate = Double(r.entries) / r.verifySeconds
        var out = "propagation A → B, \(writes) single writes on loopback (write returned → item readable)\n"
        out += String(format: "  p50 %.1f ms   p99 %.1f ms   max %.1f ms   (targets: p50 < 50 ms, p99 < 250 ms)\n", pct(0.5), pct(0.99), sorted.last ?? 0)
        out += String(
            format: "  link bytes per write, both directions: %.0f (the block itself: %.0f; reference: Syncthing ~570 bytes per small change)\n",
            r.bytesPerWrite, r.encodedPerWrite)
        out += "initial sync of a fresh device, \(r.entries) entries (\(r.perBlock == 1 ? "one" : String(r.perBlock)) per block: \(r.signatures) signatures)\n"
        out += String(format: "  kiana: %.1f s, %.0f entries/s\n", r.syncSeconds, rate)
        out += String(format: "  reference: Ed25519 verify of the same %d signatures on %d cores: %.1f s, %.0f entries/s\n", r.signatures, ProcessInfo.processInfo.activeProcessorCount, r.verifySeconds, verifyRate)
        out += String(format: "  ratio %.2f (target ≥ 0.70)\n", rate / verifyRate)
        let parts = r.serveSeconds + r.decodeSeconds + r.storeSeconds
        out += String(
            format: "  its parts apart, one core each: serve %.1f s (read, splice, deflate), decode %.1f s, store %.1f s (signatures checked); verify %.1f s on %d cores\n",
            r.serveSeconds, r.decodeSeconds, r.storeSeconds, r.verifySeconds, ProcessInfo.processInfo.activeProcessorCount)
        let cores = Double(ProcessInfo.processInfo.activeProcessorCount)
        out += String(
            format: "  bound with every core busy and nothing else: verify / (verify + parts / %d) = %.2f\n", Int(cores),
            r.verifySeconds / (r.verifySeconds + parts / cores))
        out += String(
            format: "  batches: %d bytes raw, %d compressed (deflate): ratio %.2f\n", r.rawBytes, r.compressedBytes,
            Double(r.rawBytes) / Double(max(r.compressedBytes, 1)))
        out += String(
            format: "  ledger verify of the synced device: %.1f s; resident memory grew by %.1f MB while it ran\n", r.ledgerVerifySeconds,
            Double(r.ledgerVerifyGrowth) / 1e6)
        out += "10 new entries on the \(r.entries)-entry ledger, A → C\n"
        out += "  link bytes both directions: \(r.tenBytes); the entries' own encoding: \(r.tenEncoded); beyond it: \(r.tenBytes - r.tenEncoded) (target < 10240)\n"
        out += "concurrent writes: \(r.concurrentWrites) on three devices at once (full mesh)\n"
        out += String(
            format: "  reorgs %d (%.2f per write, all devices), converged %.2f s after the last write, every write present once everywhere\n",
            r.concurrentReorgs, Double(r.concurrentReorgs) / Double(max(r.concurrentWrites, 1)), r.convergeSeconds)
        out += "a fork \(r.forkDepth) blocks deep on the \(r.entries)-entry chain\n"
        out += "  found at height \(r.forkFound.map(String.init) ?? "?") with \(r.forkHashes) hashes exchanged in \(r.forkRoundTrips) round trips (target ≤ 40 hashes; batches excluded)\n"
        out += String(
            format: "  the other branch (%d blocks) found, streamed and imported with a reorg in %.2f s (side-branch validation costs O(branch))\n",
            r.forkStored, r.forkSeconds)
        return out
    }
}
