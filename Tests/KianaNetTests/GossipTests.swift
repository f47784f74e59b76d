import Foundation
import KianaCore
import KianaNet
import KianaStore
import Logging
import Testing

/// Devices in this process, linked over loopback TCP by real `PeerNetwork` services: writes
/// made at the same time on several devices converge (the loser of a fork re-seals its entries
/// and they reach everyone), and each write is on every chain exactly once.
@Suite struct GossipTests {
    struct Device {
        let identity: DeviceIdentity
        let store: LedgerStore
        let network: PeerNetwork
    }

    static func device(_ identity: DeviceIdentity, genesis: Block, logger given: Logger? = nil) throws -> Device {
        let store = LedgerStore(database: try KianaDatabase())
        try store.initialize(genesis: genesis, now: genesis.header.time)
        var config = NetworkConfig()
        config.host = "127.0.0.1"
        config.port = 0
        config.discovery = false
        config.dialInterval = .milliseconds(200)
        var logger = given ?? Logger(label: "gossip")
        if given == nil { logger.logLevel = .critical }
        let seal: @Sendable () async -> Void = { _ = try? await blocking { try store.sealPending(identity: identity, now: currentMillis()) } }
        let network = PeerNetwork(store: store, identity: identity, config: config, logger: logger, hooks: .init(afterImport: seal, tick: seal))
        return Device(identity: identity, store: store, network: network)
    }

    /// Starts each device's listener and dialer (and announcer) in `group`; their link ports.
    static func run(_ devices: [Device], in group: inout ThrowingTaskGroup<Void, any Error>, announcer: Bool) async throws -> [Int] {
        var ports: [Int] = []
        for d in devices {
            let (stream, cont) = AsyncStream<Int>.makeStream()
            group.addTask { try await d.network.listener { cont.yield($0) }.run() }
            group.addTask { try await d.network.dialer.run() }
            if announcer { group.addTask { try await d.network.announcer.run() } }
            var it = stream.makeAsyncIterator()
            ports.append(try #require(await it.next()))
        }
        return ports
    }

    static func until(_ seconds: Double, _ condition: () async throws -> Bool) async throws -> Bool {
        let end = Date().addingTimeInterval(seconds)
        while Date() < end {
            if try await condition() { return true }
            try await Task.sleep(for: .milliseconds(20))
        }
        return try await condition()
    }

    @Test("Two devices that each know the other's address keep one link; neither redials it every interval")
    func addressesBothWaysMakeOneStableLink() async throws {
        let ids = [DeviceIdentity.generate(), DeviceIdentity.generate()]
        let genesis = Block.genesis(identity: ids[0], time: currentMillis() - 1000, others: [ids[1].publicKey])
        let lines = [AdmissionTests.LogLines(), AdmissionTests.LogLines()]
        let devices = try ids.indices.map { try Self.device(ids[$0], genesis: genesis, logger: lines[$0].logger()) }
        try await withThrowingTaskGroup(of: Void.self) { group in
            let ports = try await Self.run(devices, in: &group, announcer: false)
            // As the README has it for a VPN: `kiana peers add` on both sides.
            _ = try devices[0].store.addPeerAddress("127.0.0.1:\(ports[1])", now: currentMillis())
            _ = try devices[1].store.addPeerAddress("127.0.0.1:\(ports[0])", now: currentMillis())
            let linked = try await Self.until(20) {
                for d in devices where await d.network.registry.all.count != 1 { return false }
                return true
            }
            #expect(linked)
            // Settle (the first dials may cross), then count the links made in 3 s (10 dial intervals).
            try await Task.sleep(for: .seconds(1))
            let before = lines.map { $0.all.filter { $0.message == "link up" }.count }
            try await Task.sleep(for: .seconds(3))
            let after = lines.map { $0.all.filter { $0.message == "link up" }.count }
            #expect(after == before, "links made in 3 s: \(zip(after, before).map { $0 - $1 })")
            for d in devices { #expect(await d.network.registry.all.count == 1) }
            group.cancelAll()
        }
    }

    @Test("Concurrent writes on two or three devices converge, each write once on every chain", arguments: [2, 2, 2, 3, 3])
    func concurrentWritesConverge(count: Int) async throws {
        let ids = (0..<count).map { _ in DeviceIdentity.generate() }
        let genesis = Block.genesis(identity: ids[0], time: currentMillis() - 1000, others: ids.dropFirst().map(\.publicKey))
        let devices = try ids.map { try Self.device($0, genesis: genesis) }
        try await withThrowingTaskGroup(of: Void.self) { group in
            let ports = try await Self.run(devices, in: &group, announcer: true)
            // A full mesh: each dials the ones after it.
            for i in devices.indices {
                for j in devices.indices where j > i { _ = try devices[i].store.addPeerAddress("127.0.0.1:\(ports[j])", now: currentMillis()) }
            }
            let meshed = try await Self.until(20) {
                var all = true
                for d in devices where await d.network.registry.all.count != count - 1 { all = false }
                return all
            }
            #expect(meshed)
            var written: [[UInt8]] = []
            try await withThrowingTaskGroup(of: [[UInt8]].self) { writers in
                for d in devices {
                    writers.addTask {
                        var out: [[UInt8]] = []
                        for i in 0..<15 {
                            let r = try await blocking {
                                try d.store.write([.put(ItemID.random(), KnowledgeFields(text: "w\(i)"))], identity: d.identity, now: currentMillis())
                            }
                            out.append(r.entries[0].id)
                            try await Task.sleep(for: .milliseconds(Int.random(in: 1...8)))
                        }
                        return out
                    }
                }
                for try await ids in writers { written += ids }
            }
            let converged = try await Self.until(20) {
                // Heads read before and after the pending pools: a seal in between moves a head.
                let heads = try devices.map { try $0.store.head() }
                let pending = try devices.map { try $0.store.pendingCount() }.reduce(0, +)
                let after = try devices.map { try $0.store.head() }
                return heads.allSatisfy { $0 == heads[0] } && pending == 0 && after == heads
            }
            let seen = "heads \(try devices.map { try $0.store.head()?.height ?? 0 }) pending \(try devices.map { try $0.store.pendingCount() })"
            #expect(converged, "\(seen)")
            for d in devices {
                // findEntry refuses an ID that is on the chain twice (ambiguous) and one that is missing.
                for id in written { _ = try d.store.findEntry(idPrefix: Hex.encode(id)) }
                #expect(try d.store.counts().items == written.count)
                #expect(throws: Never.self) { try d.store.verify(now: currentMillis()) }
            }
            group.cancelAll()
        }
    }
}
