import Foundation
import KianaTestSupport
import Testing

/// Multicast DNS for real, inside network namespaces this test creates (Tests/netns/lab.sh):
/// interop with avahi (avahi-browse, avahi-publish) and python-zeroconf in both directions,
/// goodbye on shutdown, discovery latency, and three nodes that find each other with no
/// addresses given. Multicast never touches the machine's real interfaces.
@Suite(.serialized) struct DiscoveryTests {
    static let lab = Shared.packageRoot.appendingPathComponent("Tests/netns/lab.sh").path
    static let zeroconf = Shared.packageRoot.appendingPathComponent("Tests/python/zeroconf_peer.py").path

    /// Root, iproute2 and avahi are needed; under CI their absence is a failure.
    static var available: Bool {
        let ok =
            getuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/sbin/avahi-daemon")
            && FileManager.default.isExecutableFile(atPath: "/usr/bin/avahi-browse")
            && ((try? runProcess("/usr/bin/env", ["ip", "netns", "list"]).status) == 0)
        if !ok && Shared.isCI { Issue.record("network namespace tests need root, iproute2 and avahi (scripts/setup.sh installs them)") }
        return ok
    }

    struct Lab {
        let prefix: String
        func run(_ args: [String]) throws -> String {
            let r = try runProcess("/bin/bash", [DiscoveryTests.lab] + args)
            try #require(r.status == 0, "lab.sh \(args): \(String(decoding: r.err, as: UTF8.self))")
            return String(decoding: r.out, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        }
        func ip(_ m: String) throws -> String { try run(["ip", prefix, m]) }
        func ifname(_ m: String) throws -> String { try run(["ifname", prefix, m]) }
        /// Arguments that run a command inside member `m` (with the lab's D-Bus for avahi tools).
        func exec(_ m: String, _ command: [String]) -> [String] { [DiscoveryTests.lab, "exec", prefix, m] + command }
        func spawn(_ m: String, _ command: [String], environment: [String: String]? = nil) throws -> ChildProcess {
            try ChildProcess("/bin/bash", exec(m, command), environment: environment)
        }
        func down() { _ = try? runProcess("/bin/bash", [DiscoveryTests.lab, "down", prefix]) }
    }

    static func withLab(three: Bool = false, _ body: (Lab) async throws -> Void) async throws {
        let lab = Lab(prefix: "kt\(getpid() % 10000)")
        lab.down()
        defer { lab.down() }
        _ = try lab.run(["up", lab.prefix] + (three ? ["--three"] : []))
        try await body(lab)
    }

    static func json(_ line: String) -> [String: Any]? {
        try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
    }

    static func serve(_ lab: Lab, _ m: String, dir: String) async throws -> (process: ChildProcess, p2p: Int, started: Date) {
        let started = Date()
        let ifname = try lab.ifname(m)
        let p = try lab.spawn(
            m,
            [
                kianaBinary(), "serve", "--data-dir", dir, "--port", "0", "--p2p-port", "0",
                "--discovery-interface", ifname,
            ], environment: ["KIANA_LOG_LEVEL": "info"])
        let line = try #require(await p.waitFor("device links on port", timeout: 60), "\(p.output)")
        let port = try #require(line.range(of: #"port (\d+)"#, options: .regularExpression).flatMap { Int(line[$0].dropFirst(5)) })
        return (p, port, started)
    }

    @Test("Our announcement is resolved by avahi-browse and python-zeroconf; we resolve avahi-publish and zeroconf; goodbye on exit")
    func interop() async throws {
        guard Self.available else { return }
        try await Self.withLab { lab in
            _ = try lab.run(["avahi", lab.prefix, "b"])
            let tmp = try TempDir("kiana-mdns")
            defer { tmp.cleanup() }
            let dir = tmp.path + "/a"
            #expect(try await kiana(["init", "--data-dir", dir, "--name", "home"]).status == 0)
            let device = try nodeIdentity(dir).device
            try #require(!device.isEmpty)
            let ipA = try lab.ip("a")
            let ipB = try lab.ip("b")

            // A browser already running in b sees the new device appear: measure the delay.
            let watcher = try lab.spawn(
                "b", [kianaBinary(), "discover", "--interface", try lab.ifname("b"), "--timeout", "8", "--json"], environment: ["KIANA_LOG_LEVEL": "info"])
            try await Task.sleep(for: .milliseconds(300))
            let node = try await Self.serve(lab, "a", dir: dir)
            let seen = try #require(
                await watcher.waitFor(device, timeout: 8),
                "watcher: \(watcher.output) node: \(node.process.output) after \(Date().timeIntervalSince(node.started)) s")
            let at = try #require(Self.json(seen)?["at"] as? Int)
            // The node logs when its mDNS socket is up (before the RFC 6762 §8.1 probing that must
            // precede any announcement): from there to "resolved" in the other namespace is the
            // discovery latency; from process start adds the node's own start-up.
            func logLine(_ text: String) -> Substring? { node.process.output.split(separator: "\n").first { $0.contains(text) } }
            func field(_ line: Substring, _ name: String) -> Int? {
                line.range(of: name + #"=(\d+)"#, options: .regularExpression).flatMap { Int(line[$0].dropFirst(name.count + 1)) }
            }
            let ready = try #require(logLine("mDNS socket ready"), "\(node.process.output)")
            let readyAt = try #require(field(ready, "epochMs"))
            // The node's log line can reach its pipe after the browser printed (it is written by
            // a thread of its own): look for it for a while.
            _ = await eventually(5) { logLine("mDNS service announced") != nil }
            let announced = try #require(logLine("mDNS service announced"), "\(node.process.output)")
            let announcedAt = try #require(field(announced, "epochMs"))
            let discoveryMs = at - readyAt
            let fromStartMs = Double(at) - node.started.timeIntervalSince1970 * 1000
            print(
                "discovery: new device resolved by a running browser \(discoveryMs) ms after its mDNS socket opened, \(at - announcedAt) ms after its first announcement (\(Int(fromStartMs)) ms after `kiana serve` was started; RFC 6762 probing takes 750-900 ms of it)"
            )
            // The schedule that keeps a new device visible within a second (decision 33): a wait
            // of 0-150 ms, then three probes 250 ms apart, then the announcement. Counted by the
            // node, since on a busy machine the timers themselves run late.
            #expect(field(announced, "probes") == 3 && (0...150).contains(field(announced, "jitterMs") ?? -1), "\(announced)")
            #expect(announcedAt - readyAt >= 750 && announcedAt - readyAt < 2000, "\(announcedAt - readyAt) ms of probing")
            // The browser resolves the first announcement, not the repeat one second later (a
            // timed bound on the whole, < 1 s, failed by chance with tests running beside it).
            #expect(at - announcedAt < 1000, "\(at - announcedAt) ms")

            // avahi resolves our service with address, port and TXT.
            let browse = try await runProcess("/bin/bash", lab.exec("b", ["avahi-browse", "-rtp", "_kiana._tcp"]))
            let out = String(decoding: browse.out, as: UTF8.self)
            let resolved = try #require(out.split(separator: "\n").first { $0.hasPrefix("=;") && $0.contains(";\(ipA);") }, "\(out)")
            #expect(resolved.contains(";\(node.p2p);"))
            #expect(resolved.contains("\"id=\(device)\""))
            #expect(resolved.contains("\"net="))
            // python-zeroconf resolves it too.
            let zc = try await runProcess("/bin/bash", lab.exec("b", [python3(), Self.zeroconf, "browse", "--ip", ipB, "--timeout", "5", "--count", "1"]))
            let zcEvent = try #require(Self.json(String(decoding: zc.out, as: UTF8.self).split(separator: "\n").first.map(String.init) ?? ""))
            #expect(zcEvent["port"] as? Int == node.p2p)
            #expect((zcEvent["addresses"] as? [String]) == [ipA])
            #expect((zcEvent["txt"] as? [String: String])?["id"] == device)

            // Services published by avahi and by python-zeroconf in b are resolved by our browser in a.
            let avahiPub = try lab.spawn("b", ["avahi-publish", "-s", "avahi peer", "_kiana._tcp", "4242", "id=avahi-one", "v=1"])
            let zcPub = try lab.spawn(
                "b", [python3(), Self.zeroconf, "publish", "--ip", ipB, "--name", "zc peer", "--port", "5151", "--txt", "id=zc-one", "--seconds", "30"])
            _ = try #require(await zcPub.waitFor("published", timeout: 15), "\(zcPub.output)")
            _ = try #require(await avahiPub.waitFor("Established", timeout: 15), "\(avahiPub.output)")
            // Let their start-up announcements (at 0, 1 and 2 s) pass: a responder may not multicast
            // a record again within a second of the last time (RFC 6762 §6), and the measurement
            // is of browsing, not of that pause.
            try await Task.sleep(for: .milliseconds(3200))
            var latencies: [Double] = []
            for _ in 0..<3 {
                let d = try await runProcess(
                    "/bin/bash", lab.exec("a", [kianaBinary(), "discover", "--interface", try lab.ifname("a"), "--timeout", "2", "--json"]))
                let events = String(decoding: d.out, as: UTF8.self).split(separator: "\n").compactMap { Self.json(String($0)) }
                let avahi = try #require(events.first { $0["instance"] as? String == "avahi peer" }, "\(events)")
                #expect(avahi["port"] as? Int == 4242 && (avahi["txt"] as? [String: String])?["id"] == "avahi-one")
                #expect((avahi["addresses"] as? [String]) == [ipB])
                let z = try #require(events.first { $0["instance"] as? String == "zc peer" }, "\(events)")
                #expect(z["port"] as? Int == 5151 && (z["txt"] as? [String: String])?["id"] == "zc-one")
                latencies.append(max(avahi["ms"] as? Double ?? 9e9, z["ms"] as? Double ?? 9e9))
            }
            print("discovery: browser start to both foreign services resolved: \(latencies.map { Int($0) }) ms")
            // Usually one query round (0.2-0.3 s). If another browser on the link (here the node in a)
            // queried less than a second earlier, the responders may not multicast again yet (RFC 6762
            // §6) and the answer comes with our second query, at 1 s: 2 s bounds both cases.
            #expect(latencies.allSatisfy { $0 < 2000 })
            avahiPub.signal(SIGTERM)
            _ = await avahiPub.wait()

            // Goodbye: a browser in b sees the service leave right after SIGTERM, not at TTL expiry.
            let leaving = try lab.spawn("b", [python3(), Self.zeroconf, "browse", "--ip", ipB, "--timeout", "10"])
            _ = try #require(await leaving.waitFor(device, timeout: 5), "\(leaving.output)")
            node.process.signal(SIGTERM)
            #expect(await node.process.wait() == 0, "\(node.process.output)")
            let removed = await leaving.waitFor("\"removed\"", timeout: 5)
            #expect(removed != nil, "no goodbye seen: \(leaving.output)")
            leaving.signal(SIGTERM)
            zcPub.signal(SIGTERM)
            _ = await zcPub.wait()
            _ = await watcher.wait()
        }
    }

    @Test("Three nodes in three namespaces pair, then find and link each other with no addresses given")
    func threeNodes() async throws {
        guard Self.available else { return }
        try await Self.withLab(three: true) { lab in
            let tmp = try TempDir("kiana-mdns3")
            defer { tmp.cleanup() }
            let a = tmp.path + "/a"
            let b = tmp.path + "/b"
            let c = tmp.path + "/c"
            #expect(try await kiana(["init", "--data-dir", a]).status == 0)
            let nodeA = try await Self.serve(lab, "a", dir: a)
            let ipA = try lab.ip("a")

            let idA = try nodeIdentity(a).device
            try #require(!idA.isEmpty)
            func pair(_ joiner: String, in m: String, byDeviceID: Bool = false) async throws -> String {
                let pair = try lab.spawn("a", [kianaBinary(), "pair", "--data-dir", a, "--timeout", "30"])
                _ = try #require(await pair.waitFor("Pairing window open"), "\(pair.output)")
                #expect(await pair.waitFor("kiana join \(ipA):\(nodeA.p2p)", timeout: 5) != nil, "\(pair.output)")
                #expect(await pair.waitFor("kiana join \(idA)", timeout: 5) != nil, "\(pair.output)")
                // The second joiner names the authority by device ID and finds it by multicast DNS.
                let target = byDeviceID ? idA : "\(ipA):\(nodeA.p2p)"
                let join = try lab.spawn(
                    m,
                    [
                        kianaBinary(), "join", target, "--data-dir", joiner, "--timeout", "30",
                        "--interface", try lab.ifname(m),
                    ])
                if byDeviceID { #expect(await join.waitFor("Found \(idA) at \(ipA):\(nodeA.p2p)", timeout: 10) != nil, "\(join.output)") }
                let codeLine = try #require(await join.waitFor("Pairing code:"), "\(join.output)")
                _ = try #require(await pair.waitFor("asks to join"), "\(pair.output)")
                pair.write(String(codeLine.split(separator: ":").last!) + "\n")
                #expect(await pair.wait() == 0, "\(pair.output)")
                #expect(await join.wait() == 0, "\(join.output)")
                return join.output
            }
            _ = try await pair(b, in: "b")
            let nodeB = try await Self.serve(lab, "b", dir: b)
            _ = try await pair(c, in: "c", byDeviceID: true)
            let keyC = try nodeIdentity(c).key
            try #require(!keyC.isEmpty)
            #expect(try await kiana(["vote", "add", keyC, "--data-dir", b]).status == 0)
            let nodeC = try await Self.serve(lab, "c", dir: c)

            func members(_ dir: String, in m: String) throws -> [[String: Any]] {
                let r = try runProcess("/bin/bash", lab.exec(m, [kianaBinary(), "peers", "list", "--json", "--data-dir", dir]))
                return (try? JSONSerialization.jsonObject(with: r.out) as? [[String: Any]]) ?? []
            }
            func connected(_ dir: String, in m: String) throws -> Int {
                try members(dir, in: m).filter { $0["state"] as? String == "connected" && $0["member"] as? Bool == true }.count
            }
            let end = Date().addingTimeInterval(30)
            while Date() < end {
                if try connected(a, in: "a") == 2 && connected(b, in: "b") == 2 && connected(c, in: "c") == 2 { break }
                try await Task.sleep(for: .milliseconds(300))
            }
            #expect(try connected(a, in: "a") == 2, "\((try? members(a, in: "a")) ?? [])")
            #expect(try connected(b, in: "b") == 2, "\((try? members(b, in: "b")) ?? [])")
            #expect(try connected(c, in: "c") == 2, "\((try? members(c, in: "c")) ?? [])")
            // B and C never had each other's address: their link came from multicast discovery.
            let ipC = try lab.ip("c")
            #expect(try members(b, in: "b").contains { ($0["address"] as? String)?.hasPrefix(ipC + ":") == true }, "\((try? members(b, in: "b")) ?? [])")
            for n in [nodeA, nodeB, nodeC] { n.process.signal(SIGTERM) }
            for n in [nodeA, nodeB, nodeC] { #expect(await n.process.wait() == 0, "\(n.process.output)") }
        }
    }
}
