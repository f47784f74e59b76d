import Foundation
import KianaCore
import KianaNet
import KianaStore
import KianaTestSupport
import Logging
import NIOCore
import NIOPosix
import Synchronization
import Testing

/// Admission of inbound connections: the controller's pools as pure logic, the refusal log's
/// budgets, and the listener under floods over real loopback TCP (Linux routes all of 127/8 to
/// lo, so flood sockets bound to 127.0.0.2 and up are other source addresses than the member's
/// 127.0.0.1).
@Suite(.serialized) struct AdmissionTests {
    // MARK: the controller

    static func ticket(_ opening: Admission.Opening) throws -> Admission.Ticket {
        guard case .admitted(let t) = opening else { throw KianaNetError(.refused, "refused: \(opening)") }
        return t
    }

    @Test("The pending pool holds its total and each source's share; beyond them connections are refused and counted")
    func pendingCaps() throws {
        let a = Admission(limits: AdmissionLimits(pending: 5, pendingPerSource: 2))
        _ = try Self.ticket(a.open(source: "10.0.0.1"))
        _ = try Self.ticket(a.open(source: "10.0.0.1"))
        #expect(a.open(source: "10.0.0.1") == .refused(.sourceFull))
        _ = try Self.ticket(a.open(source: "10.0.0.2"))
        _ = try Self.ticket(a.open(source: "10.0.0.2"))
        _ = try Self.ticket(a.open(source: "10.0.0.3"))
        #expect(a.open(source: "10.0.0.4") == .refused(.poolFull))
        #expect(a.open(source: "10.0.0.3") == .refused(.poolFull))
        let s = a.stats
        #expect(s.pending == 5 && s.members == 0 && s.open == 5)
        #expect(s.refusedPerSource == 1 && s.refusedPoolFull == 2 && s.refused == 3)
    }

    @Test("A member moves out of the pending pool: its slot and its source's share are free for the next handshake")
    func memberMove() throws {
        let a = Admission(limits: AdmissionLimits(pending: 2, pendingPerSource: 1, members: 3))
        let m = try Self.ticket(a.open(source: "10.0.0.1"))
        _ = try Self.ticket(a.open(source: "10.0.0.2"))
        #expect(a.open(source: "10.0.0.3") == .refused(.poolFull))
        #expect(a.promote(m, to: .member) == nil)
        #expect(a.stats.pending == 1 && a.stats.members == 1)
        // Promoting again changes nothing.
        #expect(a.promote(m, to: .member) == nil)
        #expect(a.stats.members == 1)
        let next = try Self.ticket(a.open(source: "10.0.0.1"))
        #expect(a.stats.pending == 2)
        a.close(m, outcome: .completed)
        a.close(next, outcome: .failed)
        let s = a.stats
        #expect(s.pending == 1 && s.members == 0 && s.handshakesCompleted == 1 && s.handshakesFailed == 1)
    }

    @Test("Members and pairing links have pools of their own, separate from handshakes and capped")
    func separatePools() throws {
        let a = Admission(limits: AdmissionLimits(pending: 10, pendingPerSource: 10, members: 2, pairing: 1))
        let t = try (0..<6).map { _ in try Self.ticket(a.open(source: "10.0.0.9")) }
        #expect(a.promote(t[0], to: .member) == nil)
        #expect(a.promote(t[1], to: .member) == nil)
        #expect(a.promote(t[2], to: .member) == .membersFull)
        #expect(a.promote(t[3], to: .pairing) == nil)
        #expect(a.promote(t[4], to: .pairing) == .pairingFull)
        var s = a.stats
        #expect(s.members == 2 && s.pairing == 1 && s.pending == 3 && s.refusedMembersFull == 2)
        // A refused promotion keeps its pending slot until the connection closes.
        a.close(t[2], outcome: .failed)
        a.close(t[0], outcome: .completed)
        #expect(a.promote(t[5], to: .member) == nil)
        a.close(t[3], outcome: .completed)
        a.close(t[3], outcome: .completed)
        s = a.stats
        #expect(s.members == 2 && s.pairing == 0 && s.pending == 1 && s.handshakesCompleted == 2 && s.handshakesFailed == 1)
    }

    @Test("Closing counts how the handshake ended and gives every slot back; closing twice changes nothing")
    func release() throws {
        let a = Admission(limits: AdmissionLimits(pending: 3, pendingPerSource: 3))
        let t = try (0..<3).map { _ in try Self.ticket(a.open(source: "10.0.0.1")) }
        a.close(t[0], outcome: .timedOut)
        a.close(t[1], outcome: .failed)
        a.close(t[1], outcome: .failed)
        #expect(a.promote(t[2], to: .member) == nil)
        a.close(t[2], outcome: .completed)
        let s = a.stats
        #expect(s.open == 0 && s.handshakesTimedOut == 1 && s.handshakesFailed == 1 && s.handshakesCompleted == 1)
        _ = try (0..<3).map { _ in try Self.ticket(a.open(source: "10.0.0.1")) }
    }

    @Test("An address a member link came from may use the reserve while strangers fill the pool, until it is forgotten")
    func memberReserve() throws {
        let a = Admission(limits: AdmissionLimits(pending: 2, pendingPerSource: 2, memberReserve: 1, memberAddressMemory: .seconds(60)))
        let t0 = ContinuousClock.now
        let m = try Self.ticket(a.open(source: "10.0.0.1", now: t0))
        #expect(a.promote(m, to: .member, now: t0) == nil)
        _ = try Self.ticket(a.open(source: "10.0.0.7", now: t0))
        _ = try Self.ticket(a.open(source: "10.0.0.8", now: t0))
        #expect(a.open(source: "10.0.0.9", now: t0) == .refused(.poolFull))
        // The member's address, its link still up: one more.
        let again = try Self.ticket(a.open(source: "10.0.0.1", now: t0))
        #expect(a.open(source: "10.0.0.1", now: t0) == .refused(.poolFull))
        a.close(again, outcome: .failed, now: t0)
        a.close(m, outcome: .completed, now: t0)
        // Link gone, address remembered for a minute.
        let later = try Self.ticket(a.open(source: "10.0.0.1", now: t0 + .seconds(59)))
        a.close(later, outcome: .failed)
        #expect(a.open(source: "10.0.0.1", now: t0 + .seconds(61)) == .refused(.poolFull))
    }

    @Test("A source is the IP address: ports differ per attempt, IPv4-mapped IPv6 is IPv4")
    func sources() throws {
        #expect(Admission.source(of: try SocketAddress(ipAddress: "192.168.1.5", port: 40000)) == "192.168.1.5")
        #expect(Admission.source(of: try SocketAddress(ipAddress: "::ffff:192.168.1.5", port: 1)) == "192.168.1.5")
        #expect(Admission.source(of: try SocketAddress(ipAddress: "fe80::1", port: 1)) == "fe80::1")
        #expect(Admission.source(of: nil) == "?")
    }

    @Test("The refusal log: one notice per source a minute with the count not logged, a cap over all sources, details within a budget")
    func refusalBudgets() {
        let log = RefusalLog(interval: .seconds(60), capacity: 4, maxNotices: 3, maxDetails: 5)
        let t0 = ContinuousClock.now
        #expect(log.decide(source: "a", now: t0) == .notice(suppressed: 0))
        #expect(log.decide(source: "a", now: t0) == .detail)
        #expect(log.decide(source: "a", now: t0) == .detail)
        #expect(log.decide(source: "b", now: t0) == .notice(suppressed: 0))
        #expect(log.decide(source: "c", now: t0) == .notice(suppressed: 0))
        // Over the notice budget: d is counted, not noticed; then the details run out too.
        #expect(log.decide(source: "d", now: t0) == .detail)
        #expect(log.decide(source: "d", now: t0) == .detail)
        #expect(log.decide(source: "d", now: t0) == .detail)
        #expect(log.decide(source: "a", now: t0) == .silent)
        // The next minute: d's first notice carries its three.
        #expect(log.decide(source: "d", now: t0 + .seconds(61)) == .notice(suppressed: 3))
        #expect(log.decide(source: "a", now: t0 + .seconds(61)) == .notice(suppressed: 3))
        #expect(log.shouldLog(source: "a", now: t0 + .seconds(62)) == nil)
    }

    @Test("The refusal log remembers a bounded number of sources, forgetting the longest unseen")
    func refusalCapacity() {
        let log = RefusalLog(interval: .seconds(60), capacity: 2, maxNotices: 10, maxDetails: 10)
        let t0 = ContinuousClock.now
        #expect(log.decide(source: "x", now: t0) == .notice(suppressed: 0))
        #expect(log.decide(source: "y", now: t0 + .seconds(1)) == .notice(suppressed: 0))
        #expect(log.decide(source: "x", now: t0 + .seconds(2)) == .detail)
        // z pushes out y (unseen longest); y is new again, x is not.
        #expect(log.decide(source: "z", now: t0 + .seconds(3)) == .notice(suppressed: 0))
        #expect(log.decide(source: "y", now: t0 + .seconds(4)) == .notice(suppressed: 0))
        #expect(log.decide(source: "z", now: t0 + .seconds(5)) == .detail)
    }

    // MARK: real sockets

    /// Lines a logger was given.
    final class LogLines: Sendable {
        struct Line {
            var level: Logger.Level
            var message: String
            var bytes: Int
        }
        let lines = Mutex<[Line]>([])
        var all: [Line] { lines.withLock { $0 } }
        func logger() -> Logger {
            var l = Logger(label: "admission-test") { _ in Handler(sink: self) }
            l.logLevel = .trace
            return l
        }

        struct Handler: LogHandler {
            let sink: LogLines
            var logLevel: Logger.Level = .trace
            var metadata: Logger.Metadata = [:]
            var metadataProvider: Logger.MetadataProvider?
            subscript(metadataKey key: String) -> Logger.Metadata.Value? {
                get { metadata[key] }
                set { metadata[key] = newValue }
            }
            func log(event: LogEvent) {
                let text = "\(event.level) \(event.message) \(event.metadata ?? [:])"
                sink.lines.withLock { $0.append(Line(level: event.level, message: "\(event.message)", bytes: text.utf8.count + 40)) }
            }
        }
    }

    /// Two members of one network (both genesis authorities), each with its own in-memory chain;
    /// `a` listens with `link`'s limits.
    static func members(link: LinkConfig, logger: Logger) throws -> (a: PeerNetwork, b: PeerNetwork) {
        let ida = DeviceIdentity.generate()
        let idb = DeviceIdentity.generate()
        let genesis = Block.genesis(identity: ida, time: 1_700_000_000_000, name: "admission", others: [idb.publicKey])
        var config = NetworkConfig()
        config.host = "127.0.0.1"
        config.port = 0
        config.discovery = false
        config.link = link
        var quiet = Logger(label: "admission-test-b")
        quiet.logLevel = .critical
        return (
            PeerNetwork(store: try Self.store(genesis), identity: ida, config: config, logger: logger),
            PeerNetwork(store: try Self.store(genesis), identity: idb, config: config, logger: quiet)
        )
    }

    /// A ledger in an in-memory database, started from `genesis`.
    static func store(_ genesis: Block) throws -> LedgerStore {
        let s = LedgerStore(database: try KianaDatabase())
        try s.initialize(genesis: genesis, now: genesis.header.time)
        return s
    }

    /// Runs `network`'s link listener while `body` runs with its port.
    static func withListener(_ network: PeerNetwork, _ body: @escaping @Sendable (Int) async throws -> Void) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await network.listener().run() }
            var port: Int?
            for _ in 0..<500 {
                port = await network.listeningPort
                if port != nil { break }
                try await Task.sleep(for: .milliseconds(10))
            }
            try await body(try #require(port))
            group.cancelAll()
        }
    }

    /// A raw TCP connection from `source` (a loopback address) to the listener.
    static func connect(from source: String, to port: Int) async throws -> any Channel {
        try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .bind(to: try SocketAddress(ipAddress: source, port: 0))
            .connect(host: "127.0.0.1", port: port).get()
    }

    /// Dials `network` from `b` as a member; returns how long the link took to come up, once
    /// `check` (run while the link is up) has run.
    static func memberLink(_ b: PeerNetwork, port: Int, check: @escaping @Sendable () async -> Void = {}) async throws -> Duration {
        let start = ContinuousClock.now
        return try await b.connect("127.0.0.1:\(port)", mode: .member) { _ in
            let took = ContinuousClock.now - start
            await check()
            return took
        }
    }

    @Test("50 held connections from another address take only their share; a member links at once, and the flood times out")
    func floodFromOneAddress() async throws {
        var link = LinkConfig()
        link.maxPendingHandshakes = 8
        link.maxPendingPerSource = 2
        let lines = LogLines()
        let (a, b) = try Self.members(link: link, logger: lines.logger())
        try await Self.withListener(a) { port in
            let half = Array(LinkPreamble(mode: .member, network: nil).encoded.prefix(LinkPreamble.size / 2))
            var flood: [any Channel] = []
            for i in 0..<50 {
                // A refused connection is reset at once; its connect may already see that.
                guard let c = try? await Self.connect(from: "127.0.0.2", to: port) else { continue }
                if i % 2 == 1 { try? await c.writeAndFlush(ByteBuffer(bytes: half)) }
                flood.append(c)
            }
            #expect(await eventually(every: .milliseconds(20)) { a.admissionStats.refusedPerSource >= 48 }, "\(a.admissionStats)")
            #expect(a.admissionStats.pending == 2)
            let took = try await Self.memberLink(b, port: port) {
                _ = await eventually(2, every: .milliseconds(20)) { a.admissionStats.members == 1 }
            }
            #expect(took < .seconds(2), "member link took \(took)")
            // The two held handshakes are cut off at the 2 s deadline; the member link ended.
            #expect(
                await eventually(6, every: .milliseconds(20)) {
                    let s = a.admissionStats
                    return s.pending == 0 && s.members == 0 && s.handshakesTimedOut == 2 && s.handshakesCompleted == 1
                }, "\(a.admissionStats)")
            for c in flood { c.close(promise: nil) }
        }
        let warnings = lines.all.filter { $0.level >= .warning }
        #expect(warnings.isEmpty, "\(warnings.map(\.message))")
    }

    @Test("Strangers on many addresses fill the pending pool; a stranger more is refused, a returning member still gets in")
    func returningMember() async throws {
        var link = LinkConfig()
        link.maxPendingHandshakes = 8
        link.maxPendingPerSource = 2
        link.handshakeTimeout = .seconds(4)
        let lines = LogLines()
        let (a, b) = try Self.members(link: link, logger: lines.logger())
        try await Self.withListener(a) { port in
            _ = try await Self.memberLink(b, port: port)
            #expect(await eventually(every: .milliseconds(20)) { a.admissionStats.members == 0 && a.admissionStats.handshakesCompleted == 1 })
            var flood: [any Channel] = []
            for i in 0..<50 {
                if let c = try? await Self.connect(from: "127.0.0.\(2 + i % 10)", to: port) { flood.append(c) }
            }
            #expect(await eventually(every: .milliseconds(20)) { a.admissionStats.refused >= 42 }, "\(a.admissionStats)")
            #expect(a.admissionStats.pending == 8)
            // A stranger on a fresh address: reset on arrival.
            let before = a.admissionStats.refusedPoolFull
            if let stranger = try? await Self.connect(from: "127.0.0.50", to: port) {
                #expect(await eventually(2, every: .milliseconds(20)) { !stranger.isActive }, "the stranger's connection stayed open")
            }
            #expect(await eventually(2, every: .milliseconds(20)) { a.admissionStats.refusedPoolFull == before + 1 }, "\(a.admissionStats)")
            let took = try await Self.memberLink(b, port: port) {
                _ = await eventually(2, every: .milliseconds(20)) { a.admissionStats.members == 1 }
            }
            #expect(took < .seconds(2), "member link took \(took)")
            #expect(a.admissionStats.pending == 8, "the flood still held the pool: \(a.admissionStats)")
            #expect(await eventually(every: .milliseconds(20)) { a.admissionStats.handshakesCompleted == 2 }, "\(a.admissionStats)")
            for c in flood { c.close(promise: nil) }
            #expect(await eventually(every: .milliseconds(20)) { a.admissionStats.open == 0 }, "\(a.admissionStats)")
        }
    }

    @Test("2,000 connect/close cycles from 100 addresses: every one counted, the log gets a bounded few lines, none a warning")
    func floodLogIsBounded() async throws {
        var link = LinkConfig()
        link.maxPendingHandshakes = 8
        link.maxPendingPerSource = 2
        let lines = LogLines()
        let (a, _) = try Self.members(link: link, logger: lines.logger())
        let cycles = 2000
        try await Self.withListener(a) { port in
            try await withThrowingTaskGroup(of: Void.self) { group in
                for worker in 0..<20 {
                    group.addTask {
                        for i in 0..<(cycles / 20) {
                            let source = "127.0.1.\(1 + (worker * 5 + i % 5))"
                            let c = try? await Self.connect(from: source, to: port)
                            try? await c?.close()
                        }
                    }
                }
                try await group.waitForAll()
            }
            func accounted(_ s: AdmissionStats) -> Int {
                s.refused + s.handshakesFailed + s.handshakesTimedOut + s.handshakesCompleted
            }
            _ = await eventually(10, every: .milliseconds(20)) { accounted(a.admissionStats) >= cycles && a.admissionStats.open == 0 }
            let s = a.admissionStats
            // A connection reset before it is accepted may never reach the listener.
            #expect(accounted(s) >= cycles * 95 / 100 && accounted(s) <= cycles, "\(s)")
            #expect(s.open == 0 && s.handshakesCompleted == 0)
            #expect(s.refused > 0 && s.handshakesFailed > 0, "\(s)")
        }
        let all = lines.all
        let refusals = all.filter { $0.message == "inbound connection refused" }
        let notices = refusals.filter { $0.level == .notice }
        #expect(notices.count >= 1 && notices.count <= 20, "\(notices.count) notices")
        #expect(refusals.count <= 120, "\(refusals.count) refusal lines")
        #expect(all.filter { $0.level >= .warning }.isEmpty, "\(all.filter { $0.level >= .warning }.map(\.message))")
        let bytes = all.reduce(0) { $0 + $1.bytes }
        #expect(bytes < 64 << 10, "\(bytes) bytes of log")
    }

    @Test("The listener stops in the middle of a connect/close flood without trapping (no accepted connection is dropped half-made)")
    func stopDuringFlood() async throws {
        var link = LinkConfig()
        link.maxPendingHandshakes = 8
        link.maxPendingPerSource = 4
        var quiet = Logger(label: "admission-test")
        quiet.logLevel = .critical
        let (a, _) = try Self.members(link: link, logger: quiet)
        final class Flag: Sendable {
            let value = Mutex(false)
            func set() { value.withLock { $0 = true } }
            var isSet: Bool { value.withLock { $0 } }
        }
        let stopListener = Flag()
        let stopFlood = Flag()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                try await withThrowingTaskGroup(of: Void.self) { listener in
                    listener.addTask { try await a.listener().run() }
                    while !stopListener.isSet { try await Task.sleep(for: .milliseconds(10)) }
                    listener.cancelAll()
                }
            }
            var port: Int?
            for _ in 0..<500 where port == nil {
                port = await a.listeningPort
                try await Task.sleep(for: .milliseconds(10))
            }
            let p = try #require(port)
            for worker in 0..<8 {
                group.addTask {
                    while !stopFlood.isSet {
                        let c = try? await Self.connect(from: "127.0.0.\(2 + worker)", to: p)
                        try? await c?.close()
                    }
                }
            }
            // Stop the listener while connections keep arriving, then the flood.
            try await Task.sleep(for: .milliseconds(400))
            stopListener.set()
            try await Task.sleep(for: .milliseconds(300))
            stopFlood.set()
            try await group.waitForAll()
        }
        #expect(a.admissionStats.refused + a.admissionStats.handshakesFailed > 0, "\(a.admissionStats)")
    }
}

@Suite struct SyncRequestRateTests {
    @Test func aMemberOverItsSyncRequestRateIsAnsweredBusyUntilTokensReturn() async throws {
        let book = PeerBook()
        let key = [UInt8](repeating: 1, count: 32)
        var allowed = 0
        for _ in 0..<300 where await book.allowRequest(key, rate: 50, burst: 200) { allowed += 1 }
        #expect(allowed >= 200 && allowed < 210, "a burst of 200, then (almost) nothing")
        // Another member is not affected.
        #expect(await book.allowRequest([UInt8](repeating: 2, count: 32), rate: 50, burst: 200))
        try await Task.sleep(for: .milliseconds(200))
        #expect(await book.allowRequest(key, rate: 50, burst: 200), "tokens come back at the rate")
    }
}
