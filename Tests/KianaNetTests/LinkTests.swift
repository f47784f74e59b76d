import Foundation
import KianaCore
import KianaNet
import KianaTestSupport
import Logging
import NIOCore
import NIOPosix
import Synchronization
import Testing

/// Device links over real loopback TCP against an independent implementation in Python
/// (PyPI noiseprotocol + cryptography + cbor2: Tests/python/link_peer.py), in both roles, and
/// the bad cases: forged identity, other network, wrong version, stalls, oversized and garbage
/// input. Nothing here is mocked.
@Suite(.serialized) struct LinkTests {
    static let peer = Shared.packageRoot.appendingPathComponent("Tests/python/link_peer.py").path
    static let network = SHA.hash(Array("link test network".utf8))

    /// The default settings, but a Python peer (noiseprotocol) on a loaded two-core machine gets
    /// 10 s for its handshake: these tests are about the protocol; the deadline has its own test.
    static var patient: LinkConfig {
        var c = LinkConfig()
        c.handshakeTimeout = .seconds(10)
        c.dialHandshakeTimeout = .seconds(10)
        return c
    }

    static func context(
        identity: DeviceIdentity = .generate(), network: [UInt8]? = LinkTests.network, config: LinkConfig = LinkTests.patient,
        admit: @escaping LinkAdmission = { _ in nil }
    ) -> LinkContext {
        var logger = Logger(label: "link-test")
        logger.logLevel = .warning
        return LinkContext(
            identity: identity, network: network, config: config, logger: logger,
            helloInfo: { .map(["name": "swift"]) }, admit: admit,
            onRequest: { _, m in m.type == "echo" ? .body(m.body) : nil })
    }

    /// What the test server saw.
    final class Seen: @unchecked Sendable {
        let lock = NSLock()
        var links = 0, open = 0, errors: [String] = [], echoed = 0
        func update(_ f: (Seen) -> Void) {
            lock.lock()
            f(self)
            lock.unlock()
        }
        var snapshot: (links: Int, open: Int, errors: [String], echoed: Int) {
            lock.lock()
            defer { lock.unlock() }
            return (links, open, errors, echoed)
        }
    }

    /// Runs a link listener on a free loopback port while `body` runs. Each accepted link asks
    /// the peer for one echo, then stays until the peer closes.
    static func withServer(_ context: LinkContext, _ body: @escaping @Sendable (Int, Seen) async throws -> Void) async throws {
        let seen = Seen()
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .bind(host: "127.0.0.1", port: 0) { Link.wrap($0) }
        let port = server.channel.localAddress!.port!
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                try await server.executeThenClose { inbound in
                    try await withThrowingDiscardingTaskGroup { conns in
                        for try await conn in inbound {
                            seen.update { $0.open += 1 }
                            conns.addTask {
                                defer { seen.update { $0.open -= 1 } }
                                do {
                                    try await Link.run(conn, dial: nil, context: context) { link in
                                        seen.update { $0.links += 1 }
                                        let r = try await link.request("echo", .map(["from": "swift"]))
                                        if r == .map(["from": "swift"]) { seen.update { $0.echoed += 1 } }
                                        try await Task.sleep(for: .seconds(60))
                                    }
                                } catch {
                                    seen.update { $0.errors.append("\(error)") }
                                }
                            }
                        }
                    }
                }
            }
            try await body(port, seen)
            server.channel.close(promise: nil)
            group.cancelAll()
        }
    }

    static func python(_ args: [String]) throws -> ChildProcess {
        try ChildProcess(python3(), [peer] + args)
    }

    static func events(_ p: ChildProcess) -> [[String: Any]] {
        p.output.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
    }

    @Test("Python initiator ↔ Swift responder: handshake, hello, requests both ways, errors keep the link")
    func pythonInitiator() async throws {
        let identity = DeviceIdentity.generate()
        try await Self.withServer(Self.context(identity: identity)) { port, seen in
            let p = try Self.python(["connect", "127.0.0.1:\(port)", "--network", Hex.encode(Self.network), "--scenario", "echo"])
            let status = await p.wait()
            #expect(status == 0, "\(p.output)")
            let ev = Self.events(p)
            let hs = try #require(ev.first { $0["event"] as? String == "handshake" })
            #expect(hs["peer_identity"] as? String == Hex.encode(identity.publicKey))
            let echo = try #require(ev.first { $0["event"] as? String == "echo" })
            #expect(echo["served"] as? Int == 1)
            #expect(seen.snapshot.echoed == 1)
        }
    }

    @Test("Swift initiator ↔ Python responder, with payloads both ways")
    func swiftInitiator() async throws {
        let p = try Self.python(["listen", "--network", Hex.encode(Self.network), "--scenario", "echo"])
        let first = try #require(await p.nextLine())
        let port = try #require((try JSONSerialization.jsonObject(with: Data(first.utf8)) as? [String: Any])?["port"] as? Int)
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(host: "127.0.0.1", port: port) { Link.wrap($0) }
        let seen = Seen()
        nonisolated(unsafe) var hash: [UInt8] = []
        do {
            // The link lives until Python has had its four requests answered and closes it.
            try await Link.run(channel, dial: LinkPreamble(mode: .member, network: Self.network), context: Self.context()) { link in
                hash = link.handshakeHash
                let big = CBOR.bytes([UInt8](repeating: 7, count: 200_000))
                let r = try await link.request("echo", .map(["big": big]))
                if r == .map(["big": big]) { seen.update { $0.echoed += 1 } }
                try await Task.sleep(for: .seconds(30))
            }
        } catch let e as KianaNetError {
            #expect(e.code == .closed, "\(e)")
        }
        #expect(seen.snapshot.echoed == 1)
        #expect(await p.wait() == 0, "\(p.output)")
        let hs = try #require(Self.events(p).first { $0["event"] as? String == "handshake" })
        #expect(hs["handshake_hash"] as? String == Hex.encode(hash))
    }

    @Test("Rekeying every 7 messages interoperates in both directions", arguments: [true, false])
    func rekey(swiftListens: Bool) async throws {
        var config = Self.patient
        config.rekeyEvery = 7
        if swiftListens {
            try await Self.withServer(Self.context(config: config)) { port, _ in
                let p = try Self.python(["connect", "127.0.0.1:\(port)", "--network", Hex.encode(Self.network), "--scenario", "rekey", "--rekey", "7"])
                #expect(await p.wait() == 0, "\(p.output)")
                let ev = try #require(Self.events(p).first { $0["event"] as? String == "rekey" })
                #expect((ev["sent"] as? Int ?? 0) > 200)
            }
        } else {
            let p = try Self.python(["listen", "--network", Hex.encode(Self.network), "--scenario", "serve", "--rekey", "7"])
            let first = try #require(await p.nextLine())
            let port = try #require((try JSONSerialization.jsonObject(with: Data(first.utf8)) as? [String: Any])?["port"] as? Int)
            let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(host: "127.0.0.1", port: port) { Link.wrap($0) }
            do {
                try await Link.run(channel, dial: LinkPreamble(mode: .member, network: Self.network), context: Self.context(config: config)) { link in
                    for i in 0..<50 {
                        let r = try await link.request("echo", .map(["n": .unsigned(UInt64(i))]))
                        #expect(r == .map(["n": .unsigned(UInt64(i))]))
                    }
                }
            } catch {
                _ = await p.wait()
                Issue.record("\(error); python: \(p.output)")
            }
            #expect(await p.wait() == 0, "\(p.output)")
            let ev = try #require(Self.events(p).first { $0["event"] as? String == "served" })
            #expect(ev["served"] as? Int == 50)
        }
    }

    @Test("A forged identity signature is refused (either role)")
    func forged() async throws {
        try await Self.withServer(Self.context()) { port, seen in
            let p = try Self.python(["connect", "127.0.0.1:\(port)", "--network", Hex.encode(Self.network), "--scenario", "forge"])
            #expect(await p.wait() == 0, "\(p.output)")
            #expect(seen.snapshot.links == 0)
            #expect(seen.snapshot.errors.contains { $0.contains("does not cover the peer's static key") }, "\(seen.snapshot.errors)")
        }
        let p = try Self.python(["listen", "--network", Hex.encode(Self.network), "--scenario", "forge"])
        let first = try #require(await p.nextLine())
        let port = try #require((try JSONSerialization.jsonObject(with: Data(first.utf8)) as? [String: Any])?["port"] as? Int)
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(host: "127.0.0.1", port: port) { Link.wrap($0) }
        await #expect(throws: KianaNetError.self) {
            try await Link.run(channel, dial: LinkPreamble(mode: .member, network: Self.network), context: Self.context()) { _ in }
        }
        _ = await p.wait()
    }

    @Test("A device of another network and a key admission refuses get no link")
    func refusals() async throws {
        try await Self.withServer(Self.context()) { port, seen in
            let other = SHA.hash(Array("another network".utf8))
            let p = try Self.python(["connect", "127.0.0.1:\(port)", "--network", Hex.encode(other), "--scenario", "echo"])
            #expect(await p.wait() != 0)
            #expect(seen.snapshot.errors.contains { $0.contains("another network") }, "\(seen.snapshot.errors)")
        }
        try await Self.withServer(Self.context(admit: { _ in "not an authority of this network" })) { port, seen in
            let p = try Self.python(["connect", "127.0.0.1:\(port)", "--network", Hex.encode(Self.network), "--scenario", "echo"])
            #expect(await p.wait() != 0)
            #expect(seen.snapshot.links == 0)
            #expect(seen.snapshot.errors.contains { $0.contains("not an authority") }, "\(seen.snapshot.errors)")
        }
    }

    @Test("No common protocol version: the peer gets a bye and the link closes")
    func badVersion() async throws {
        try await Self.withServer(Self.context()) { port, seen in
            let p = try Self.python(["connect", "127.0.0.1:\(port)", "--network", Hex.encode(Self.network), "--scenario", "bad-version"])
            #expect(await p.wait() == 0, "\(p.output)")
            #expect(Self.events(p).contains { $0["event"] as? String == "bye" })
            #expect(seen.snapshot.errors.contains { $0.contains("no common protocol version") })
        }
    }

    @Test("A peer that stalls mid-handshake is cut off at the deadline, and nothing leaks")
    func stall() async throws {
        var config = LinkConfig()
        config.handshakeTimeout = .seconds(1)
        try await Self.withServer(Self.context(config: config)) { port, seen in
            let start = ContinuousClock.now
            let peers = try (0..<5).map { _ in try Self.python(["connect", "127.0.0.1:\(port)", "--network", Hex.encode(Self.network), "--scenario", "stall"]) }
            for p in peers {
                #expect(await p.wait(timeout: 10) == 0, "\(p.output)")
                #expect(Self.events(p).contains { $0["event"] as? String == "closed-by-peer" })
            }
            #expect(ContinuousClock.now - start < .seconds(8))
            for _ in 0..<50 where seen.snapshot.open > 0 { try await Task.sleep(for: .milliseconds(20)) }
            #expect(seen.snapshot.open == 0)
        }
    }

    @Test(
        "Oversized, undecodable, tampered, empty and truncated frames drop the link; the server keeps serving",
        arguments: ["oversized", "garbage", "tampered", "empty-frame", "truncated"])
    func hostileMessages(scenario: String) async throws {
        try await Self.withServer(Self.context()) { port, seen in
            let p = try Self.python(["connect", "127.0.0.1:\(port)", "--network", Hex.encode(Self.network), "--scenario", scenario])
            #expect(await p.wait() == 0, "\(p.output)")
            let good = try Self.python(["connect", "127.0.0.1:\(port)", "--network", Hex.encode(Self.network), "--scenario", "echo"])
            #expect(await good.wait() == 0, "\(good.output)")
            for _ in 0..<50 where seen.snapshot.open > 0 { try await Task.sleep(for: .milliseconds(20)) }
            #expect(seen.snapshot.open == 0)
        }
    }

    @Test("A peer that streams without end is cut off at the link's limit; the node keeps serving")
    func floodedStreamIsCutOff() async throws {
        var config = Self.patient
        config.maxStreamItems = 1000
        try await Self.withServer(Self.context(config: config)) { port, seen in
            let p = try Self.python(["connect", "127.0.0.1:\(port)", "--network", Hex.encode(Self.network), "--scenario", "flood-stream", "--flood", "20000"])
            #expect(await p.wait(timeout: 60) == 0, "\(p.output)")
            #expect(Self.events(p).contains { $0["event"] as? String == "closed-by-peer" }, "\(p.output)")
            for _ in 0..<100 where seen.snapshot.errors.isEmpty { try await Task.sleep(for: .milliseconds(20)) }
            #expect(seen.snapshot.errors.contains { $0.contains("streamed more than this link holds") }, "\(seen.snapshot.errors)")
            #expect(seen.snapshot.echoed == 0)
            let good = try Self.python(["connect", "127.0.0.1:\(port)", "--network", Hex.encode(Self.network), "--scenario", "echo"])
            #expect(await good.wait() == 0, "\(good.output)")
        }
    }

    @Test("A peer that sends pings and never reads its pongs is cut off; the node keeps reading and serving")
    func deafPeerIsCutOff() async throws {
        try await Self.withServer(Self.context()) { port, seen in
            let p = try Self.python(["connect", "127.0.0.1:\(port)", "--network", Hex.encode(Self.network), "--scenario", "deaf", "--flood", "2000000"])
            #expect(await p.wait(timeout: 60) == 0, "\(p.output.suffix(2000))")
            #expect(Self.events(p).contains { $0["event"] as? String == "closed-by-peer" }, "\(p.output.suffix(2000))")
            for _ in 0..<100 where seen.snapshot.errors.isEmpty { try await Task.sleep(for: .milliseconds(20)) }
            #expect(seen.snapshot.errors.contains { $0.contains("does not read its answers") }, "\(seen.snapshot.errors)")
            let good = try Self.python(["connect", "127.0.0.1:\(port)", "--network", Hex.encode(Self.network), "--scenario", "echo"])
            #expect(await good.wait() == 0, "\(good.output)")
        }
    }

    @Test("A peer that floods notifications gets at most a few handled at once; the link still answers")
    func floodedNotificationsAreBounded() async throws {
        final class Concurrency: Sendable {
            let state = Mutex((now: 0, max: 0, handled: 0))
            func enter() {
                state.withLock {
                    $0.now += 1
                    $0.max = Swift.max($0.max, $0.now)
                    $0.handled += 1
                }
            }
            func leave() { state.withLock { $0.now -= 1 } }
        }
        let seenNotes = Concurrency()
        var config = Self.patient
        config.maxNotifications = 4
        var logger = Logger(label: "link-test")
        logger.logLevel = .warning
        let context = LinkContext(
            identity: .generate(), network: Self.network, config: config, logger: logger,
            helloInfo: { .map([:]) }, admit: { _ in nil },
            onRequest: { _, m in m.type == "echo" ? .body(m.body) : nil },
            onNotify: { _, _ in
                seenNotes.enter()
                try? await Task.sleep(for: .milliseconds(20))
                seenNotes.leave()
            })
        try await Self.withServer(context) { port, _ in
            let p = try Self.python(["connect", "127.0.0.1:\(port)", "--network", Hex.encode(Self.network), "--scenario", "flood-notify", "--flood", "5000"])
            #expect(await p.wait(timeout: 60) == 0, "\(p.output)")
            #expect(Self.events(p).contains { $0["event"] as? String == "flooded" && $0["alive"] as? Bool == true }, "\(p.output)")
        }
        let s = seenNotes.state.withLock { $0 }
        #expect(s.max <= 4 && s.max >= 1, "\(s)")
        #expect(s.handled < 5000, "some of the flood must have been dropped: \(s)")
    }
}
