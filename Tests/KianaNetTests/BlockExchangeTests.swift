import Foundation
import KianaCore
import KianaNet
import KianaStore
import Logging
import Synchronization
import Testing

/// A ledger in memory for the block exchange: one linear chain, every block validated with
/// KianaCore's rules before it is kept (no SQLite).
final class MemoryChain: SyncStore, Sendable {
    struct State {
        var blocks: [Block]
        var ledger: LedgerState
        var imports = 0
    }
    let state: Mutex<State>

    init(genesis: Block) throws {
        state = Mutex(State(blocks: [genesis], ledger: try LedgerState(genesis: genesis, now: genesis.header.time)))
    }

    /// Seals `count` blocks of one knowledge entry each, signed by `identity`.
    func grow(_ count: Int, identity: DeviceIdentity) throws {
        try state.withLock { s in
            for _ in 0..<count {
                let parent = s.blocks.last!
                let seq = UInt64(s.blocks.count)
                let e = Entry(
                    signedBy: identity, network: s.ledger.network, sequence: seq, hlc: HLC(wall: parent.header.time + 1, logical: 0),
                    kind: .knowledgePut, payload: KnowledgeOp.put(ItemID.random(), KnowledgeFields(text: "fact \(seq)")).payload)
                let b = Block.seal(entries: [e], parent: parent.header, parentHash: parent.hash, time: parent.header.time + 1, identity: identity)
                try s.ledger.append(b, now: b.header.time)
                s.blocks.append(b)
            }
        }
    }

    var height: UInt64 { state.withLock { UInt64($0.blocks.count - 1) } }
    var imports: Int { state.withLock { $0.imports } }

    func networkID() throws -> [UInt8]? { state.withLock { $0.blocks[0].hash } }
    func chainHead() throws -> LedgerHead? { state.withLock { LedgerHead(height: $0.blocks.last!.height, hash: $0.blocks.last!.hash) } }
    func chainMembership() throws -> Membership { state.withLock { $0.ledger.membership } }
    func hasBlock(_ hash: [UInt8]) throws -> Bool { state.withLock { $0.blocks.contains { $0.hash == hash } } }
    func heightOnChain(of hash: [UInt8]) throws -> UInt64? { state.withLock { $0.blocks.first { $0.hash == hash }?.height } }
    func chainHashes() throws -> [[UInt8]] { state.withLock { $0.blocks.map(\.hash) } }
    func encodedBlocks(from: UInt64, through: UInt64) throws -> [[UInt8]] {
        state.withLock { s in
            guard from < UInt64(s.blocks.count), from <= through else { return [] }
            return s.blocks[Int(from)...Int(min(through, UInt64(s.blocks.count - 1)))].map(\.encoded)
        }
    }
    func importPeerBlocks(_ blocks: [Block], now: UInt64) throws -> Bool {
        try state.withLock { s in
            s.imports += 1
            var changed = false
            for b in blocks where !s.blocks.contains(where: { $0.hash == b.hash }) {
                try s.ledger.append(b, now: now)
                s.blocks.append(b)
                changed = true
            }
            return changed
        }
    }
    func knownPeerAddresses() throws -> [String] { [] }
}

/// A source that answers from another exchange, counting the requests (no socket between).
final class DirectSource: BlockSource {
    let exchange: BlockExchange
    let requests = Mutex(0)
    init(exchange: BlockExchange) { self.exchange = exchange }
    var label: String { "direct" }
    func blocks(after locator: [[UInt8]]) async throws -> [[UInt8]] {
        requests.withLock { $0 += 1 }
        return try await exchange.blocks(after: locator)
    }
}

@Suite struct BlockExchangeTests {
    let owner = DeviceIdentity.generate()
    var logger: Logger {
        var l = Logger(label: "exchange")
        l.logLevel = .critical
        return l
    }

    func pair(_ ahead: Int, behind: Int) throws -> (MemoryChain, MemoryChain) {
        let genesis = Block.genesis(identity: owner, time: 1_700_000_000_000, name: "x")
        let a = try MemoryChain(genesis: genesis)
        let b = try MemoryChain(genesis: genesis)
        try a.grow(ahead, identity: owner)
        // b has the first `behind` blocks of a.
        let first = try a.encodedBlocks(from: 1, through: UInt64(behind)).map { try Block(decoding: $0) }
        if !first.isEmpty { _ = try b.importPeerBlocks(first, now: .max / 2) }
        return (a, b)
    }

    @Test("A device behind pulls exactly what it lacks, in batches", arguments: [(1200, 0), (1200, 700), (10, 9), (499, 0), (500, 0)])
    func pullCatchesUp(_ ahead: Int, _ behind: Int) async throws {
        let (a, b) = try pair(ahead, behind: behind)
        let source = DirectSource(exchange: BlockExchange(store: a, logger: logger))
        let changed = await BlockExchange(store: b, logger: logger).pull(from: source, now: { .max / 2 })
        #expect(changed)
        let (ha, hb) = (try a.chainHead(), try b.chainHead())
        #expect(b.height == a.height && ha == hb)
        let missing = ahead - behind
        // One request per full batch, plus the short (or empty) one that ends the pull.
        #expect(source.requests.withLock { $0 } == missing / BlockExchange.defaultBatch + 1)
    }

    @Test func inStepMeansNoRequestAtAll() async throws {
        let (a, b) = try pair(30, behind: 30)
        let source = DirectSource(exchange: BlockExchange(store: a, logger: logger))
        let changed = await BlockExchange(store: b, logger: logger).pull(from: source, peerHead: try a.chainHead()?.hash, now: { .max / 2 })
        #expect(!changed && source.requests.withLock { $0 } == 0 && b.imports == 1)
    }

    @Test func locatorsAnswerFromTheNewestSharedBlock() async throws {
        let (a, _) = try pair(100, behind: 0)
        let ex = BlockExchange(store: a, logger: logger, batch: 10)
        let hashes = try a.chainHashes()
        func heights(_ locator: [[UInt8]]) async throws -> [UInt64] { try await ex.blocks(after: locator).map { try Block(decoding: $0).height } }
        #expect(try await heights([hashes[42]]) == Array(43...52))
        #expect(try await heights([Array(repeating: 9, count: 32), hashes[99]]) == [100])
        #expect(try await heights([Array(repeating: 9, count: 32)]).first == 0)
        #expect(try await heights([hashes[100]]).isEmpty)
        if case .error(let code, _) = await ex.answer(.map(["locator": .array(Array(repeating: .bytes(hashes[0]), count: 65))])) {
            #expect(code == .invalidInput)
        } else {
            Issue.record("a 65-hash locator was answered")
        }
    }

    @Test func aForgedBlockStopsThePullAndKeepsNothingOfIt() async throws {
        let (a, b) = try pair(20, behind: 0)
        struct Tampering: BlockSource {
            let inner: DirectSource
            var label: String { "tampering" }
            func blocks(after locator: [[UInt8]]) async throws -> [[UInt8]] {
                var out = try await inner.blocks(after: locator)
                // Re-sign block 5 with a stranger's key: valid signature, no authority.
                let stranger = DeviceIdentity.generate()
                let b5 = try Block(decoding: out[4])
                let parent = try Block(decoding: out[3])
                out[4] = Block.seal(entries: b5.entries, parent: parent.header, parentHash: parent.hash, time: b5.header.time, identity: stranger).encoded
                return out
            }
        }
        let ex = BlockExchange(store: b, logger: logger)
        _ = await ex.pull(from: Tampering(inner: DirectSource(exchange: BlockExchange(store: a, logger: logger))), now: { .max / 2 })
        #expect(b.height < 5, "nothing from the forged block on is kept")
    }
}
