import Foundation
import KianaTestSupport
import Testing

/// The HTTP port under a hostile network, against real `kiana serve` processes on loopback, with
/// Tests/python/slowloris.py as the attacker (Linux routes all of 127/8 to lo, so its sockets
/// bound to 127.0.0.2 and up are other source addresses than the probes' 127.0.0.1):
/// deadlines on heads, bodies, idle keep-alive and stalled readers; a slow-loris flood while
/// /health, writes, an authenticated client elsewhere and ledger sync with a paired node carry
/// on; and the descriptor budget raised, divided and refused when too small.
@Suite(.serialized) struct HTTPHostileTests {
    /// The P2P port of the node `serve` started last (the suite runs serialized).
    nonisolated(unsafe) static var lastP2PPort = 0
    static let script = Shared.packageRoot.appendingPathComponent("Tests/python/slowloris.py").path

    /// Runs slowloris.py and returns its JSON report.
    static func attack(_ args: [String]) async throws -> [String: Any] {
        let r = try await runProcess(python3(), [script] + args)
        let out = String(decoding: r.out, as: UTF8.self)
        guard r.status == 0, let line = out.split(separator: "\n").last,
            let o = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
        else {
            throw DrillError("slowloris.py \(args.first ?? "") failed (\(r.status)): \(out) \(String(decoding: r.err, as: UTF8.self).suffix(1500))")
        }
        return o
    }

    /// `kiana serve` with `extra` flags (and a shell `ulimit` first when given); its HTTP port.
    static func serve(_ dir: String, _ extra: [String] = [], ulimit: String? = nil) async throws -> (ChildProcess, Int) {
        let args = ["serve", "--data-dir", dir, "--port", "0", "--p2p-port", "0", "--p2p-host", "127.0.0.1", "--discovery", "off"] + extra
        let p: ChildProcess
        if let ulimit {
            let quoted = ([kianaBinary()] + args).map { "'\($0)'" }.joined(separator: " ")
            p = try ChildProcess("/bin/sh", ["-c", "ulimit \(ulimit) && exec \(quoted)"], environment: ["KIANA_LOG_LEVEL": "info"])
        } else {
            p = try ChildProcess(kianaBinary(), args, environment: ["KIANA_LOG_LEVEL": "info"])
        }
        guard let line = await p.waitFor("device links on port", timeout: 90), let port = intAfter(#"http://[^:\s]+:"#, in: line) else {
            p.signal(SIGKILL)
            throw DrillError("serve did not start: \(p.output)")
        }
        lastP2PPort = intAfter("device links on port ", in: line) ?? 0
        return (p, port)
    }

    /// One metric's value from /metrics (the sum over its label sets when `label` is nil).
    static func metric(_ port: Int, _ name: String, label: String? = nil, token: String? = nil) async throws -> Double? {
        var args = ["-s", "-m", "10"]
        if let token { args += ["-H", "Authorization: Bearer \(token)"] }
        let text = String(decoding: try await runProcess("/usr/bin/curl", args + ["http://127.0.0.1:\(port)/metrics"]).out, as: UTF8.self)
        var total: Double?
        for line in text.split(separator: "\n") where line.hasPrefix(name) && !line.hasPrefix("#") {
            let key = line.split(separator: " ").first.map(String.init) ?? ""
            guard key == name || key.hasPrefix(name + "{") else { continue }
            if let label, !key.contains(label) { continue }
            total = (total ?? 0) + (Double(line.split(separator: " ").last ?? "") ?? 0)
        }
        return total
    }

    static func rssKiB(_ pid: pid_t) -> Int? {
        guard let s = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
            let line = s.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") })
        else { return nil }
        return Int(line.split(separator: " ").dropFirst().first ?? "")
    }

    @Test("A head that trickles is cut at the head deadline with 408; an idle keep-alive connection at the idle deadline; a 10 B/s body with 408")
    func deadlines() async throws {
        let dir = try TempDir("kiana-http-deadlines")
        defer { dir.cleanup() }
        #expect(try await kiana(["init", "--data-dir", dir.path]).status == 0)
        let token = "deadline-token-0123456789"
        let (node, port) = try await Self.serve(dir.path, ["--http-head-timeout", "3", "--http-idle-timeout", "4", "--token", token])
        defer { node.signal(SIGKILL) }
        let p = ["--port", String(port), "--token", token]

        async let trickle = Self.attack(["trickle-head", "--seconds", "15"] + p)
        async let trickleFast = Self.attack(["trickle-head", "--seconds", "15", "--byte-every", "0.005"] + p)
        async let idle = Self.attack(["idle", "--seconds", "15"] + p)
        async let body = Self.attack(["slow-body", "--rate", "10", "--seconds", "40"] + p)
        async let fast = Self.attack(["slow-body", "--rate", "100000", "--seconds", "10"] + p)
        let (t, tf, i, b, f) = try await (trickle, trickleFast, idle, body, fast)

        // One byte a second never makes a head: closed at 3 s (bytes do not extend it), with 408.
        // A byte every 5 ms too, and the 408 then an orderly end (not a reset, which can destroy
        // the 408 unread) although bytes keep arriving as the deadline passes: a lingering close.
        for t in [t, tf] {
            let ts = t["seconds"] as? Double ?? 0
            #expect(t["how"] as? String == "eof" && (2.5...6).contains(ts), "\(t)")
            #expect((t["reply"] as? String ?? "").hasPrefix("HTTP/1.1 408"), "\(t)")
        }
        // Answered, then kept alive with nothing to do: closed at the 4 s idle deadline.
        let idleSeconds = i["seconds"] as? Double ?? 0
        #expect(i["status"] as? Int == 200 && i["how"] as? String == "eof" && (3.5...8).contains(idleSeconds), "\(i)")
        // A body at 10 B/s (under the 500 B/s floor) gets 408 after the first 10 s window.
        let bs = b["seconds"] as? Double ?? 0
        #expect(b["status"] as? Int == 408 && (9...25).contains(bs), "\(b)")
        #expect((b["reply"] as? String ?? "").contains("slower than 500 bytes/s"), "\(b)")
        // The same body at full speed is stored.
        #expect(f["status"] as? Int == 201, "\(f)")
        // A client that waits for 100 Continue is told to go on at once.
        let started = ContinuousClock.now
        let expect = try await runProcess(
            "/usr/bin/curl",
            ["-s", "-m", "30", "--expect100-timeout", "20", "-H", "Expect: 100-continue", "-H", "Authorization: Bearer \(token)",
             "-H", "Content-Type: application/json", "-d",
             #"{"text":"sent after 100 Continue"}"#, "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:\(port)/api/v1/knowledge"])
        #expect(String(decoding: expect.out, as: UTF8.self) == "201" && ContinuousClock.now - started < .seconds(5))
        // A request answered before its body is read (no token: 401) is answered at once, and
        // its connection does not stay busy draining the body at the sender's 600 B/s: it is
        // closed at the head deadline (3 s).
        let early = try await Self.attack(["slow-body", "--rate", "600", "--seconds", "20", "--size", "3000000", "--port", String(port), "--linger"])
        #expect(early["status"] as? Int == 401 && (early["seconds"] as? Double ?? 0) < 1, "\(early)")
        #expect(early["closedAfter"].flatMap { $0 as? Double }.map { (2...7).contains($0) } == true, "\(early)")
        // A pipelined request whose body comes slowly (above the floor) after a quick one: both answered.
        let piped = try await Self.attack(["pipelined-body", "--rate", "2000", "--size", "8000", "--seconds", "30"] + p)
        #expect(piped["statuses"] as? [Int] == [200, 201], "\(piped)")
        // An Upgrade request followed by junk: the decoder stops parsing, so the junk would pile
        // up unread; the connection is closed instead.
        let upgrade = try await Self.attack(["upgrade", "--seconds", "10"] + p)
        #expect(upgrade["how"] as? String == "closed" && (upgrade["seconds"] as? Double ?? 99) < 2, "\(upgrade)")
        #expect(try await Self.metric(port, "kiana_http_connections_closed_total", label: "head-timeout", token: token) ?? 0 >= 1)
        #expect(try await Self.metric(port, "kiana_http_connections_closed_total", label: "idle-timeout", token: token) ?? 0 >= 1)
        #expect(try await Self.metric(port, "kiana_http_connections_closed_total", label: "body-timeout", token: token) ?? 0 >= 1)
    }

    @Test("Event streams whose clients stop reading are closed at the write-stall deadline and their slots given back")
    func stalledEventStreams() async throws {
        let dir = try TempDir("kiana-http-stall")
        defer { dir.cleanup() }
        #expect(try await kiana(["init", "--data-dir", dir.path]).status == 0)
        let (node, port) = try await Self.serve(dir.path, ["--http-write-stall-timeout", "3", "--http-idle-timeout", "3"])
        defer { node.signal(SIGKILL) }
        // Enough blocks that replaying them from height 0 fills a reader's buffers many times over.
        let w = try await Self.attack(["write", "--port", String(port), "--count", "500"])
        #expect(w["status"] as? Int == 201, "\(w)")
        // A large ordinary (not streamed) answer read slowly but steadily is delivered whole,
        // though it takes longer than the idle and write-stall deadlines: it is not idle until
        // the client has it all.
        let slow = try await Self.attack(["slow-read", "--port", String(port), "--path", "/api/v1/knowledge?limit=500", "--rate", "40000", "--seconds", "60"])
        let length = slow["contentLength"] as? Int ?? -1
        #expect(slow["how"] as? String == "complete" && slow["body"] as? Int == length && length > 100_000, "\(slow)")
        #expect((slow["seconds"] as? Double ?? 0) > 3, "the read should outlast the deadlines: \(slow)")
        // 32 streams (the node's limit) that read their head, then nothing.
        let s = try await Self.attack(["stall", "--port", String(port), "--connections", "32", "--seconds", "8"])
        let statuses = s["statuses"] as? [String: Int] ?? [:]
        #expect(statuses["200"] == 32, "\(s)")
        // While they hold every slot, a 33rd stream is refused with 503 and Retry-After …
        #expect(s["extraBefore"] as? Int == 503 && s["retryAfter"] as? String == "2", "\(s)")
        // … and after the deadline they were closed, and a new stream gets a slot.
        #expect(s["closed"] as? Int == 32, "\(s)")
        #expect(s["extraAfter"] as? Int == 200, "\(s)")
        #expect(try await Self.metric(port, "kiana_http_connections_closed_total", label: "write-stall") ?? 0 >= 32)
    }

    @Test("Slow-loris from one address for 60 s: /health p99 < 100 ms, writes acknowledged and synced, a token holder elsewhere served, the log small")
    func slowLoris() async throws {
        let seconds = Int(ProcessInfo.processInfo.environment["KIANA_SLOWLORIS_SECONDS"] ?? "") ?? 60
        let tmp = try TempDir("kiana-slowloris")
        defer { tmp.cleanup() }
        let a = tmp.path + "/a"
        let b = tmp.path + "/b"
        let token = "drill-token-0123456789"
        #expect(try await kiana(["init", "--data-dir", a, "--name", "home"]).status == 0)
        // A serves its API with a token (the LAN case); B is paired with it and syncs.
        let (serveA, port) = try await Self.serve(a, ["--token", token])
        defer { serveA.signal(SIGKILL) }
        let ok = try await PairingTests.pair(authority: PairingTests.Node(dir: a, process: serveA, p2p: Self.lastP2PPort), joiner: b, name: "beta")
        #expect(ok.pair == 0 && ok.join == 0, "\(ok.pairOut) \(ok.joinOut)")
        let nodeB = try await PairingTests.serve(b)
        defer { nodeB.process.signal(SIGKILL) }
        let idB = try nodeIdentity(b)
        #expect(try await eventually(30) { try PairingTests.connectedMembers(a) == [idB.device] }, "\(PairingTests.describe(a, b))")
        let p = ["--port", String(port), "--token", token]
        let cap = try #require(try await Self.metric(port, "kiana_http_connections_cap", token: token))
        // Warm up (first requests, a write that loads the embedder to index it, sync), then the
        // baseline once resident memory has settled.
        _ = try await Self.attack(["write", "--text", "warm-up write"] + p)
        _ = try await Self.attack(["probe", "--seconds", "2"] + p)
        var rssBefore = 0
        for _ in 0..<30 {
            try await Task.sleep(for: .seconds(2))
            let now = try #require(Self.rssKiB(serveA.process.pid))
            if rssBefore > 0, abs(now - rssBefore) * 100 < rssBefore { break }
            rssBefore = now
        }
        let fdsBefore = try #require(try await Self.metric(port, "kiana_fds_in_use", token: token))
        let logBefore = serveA.output.utf8.count

        // 20,000 half-open connections (at most 2,000 new ones a second) from 127.0.0.2, for `seconds`.
        async let flood = Self.attack(
            ["flood", "--connections", "20000", "--seconds", String(seconds), "--sources", "127.0.0.2", "--rate", "2000"] + p)
        try await Task.sleep(for: .seconds(3))
        async let health = Self.attack(["probe", "--seconds", String(seconds - 8), "--interval", "0.05"] + p)
        async let elsewhere = Self.attack(["probe", "--seconds", String(seconds - 8), "--interval", "0.5", "--source", "127.0.0.10"] + p)
        // Writes during the flood: acknowledged, then on A and synced to B.
        var written: [String] = []
        var peakOpen = 0.0
        for round in 0..<3 {
            try await Task.sleep(for: .seconds(Double(seconds) / 5))
            let text = "drill write \(round) \(UUID().uuidString.prefix(8))"
            let w = try await Self.attack(["write", "--text", text] + p)
            #expect(w["status"] as? Int == 201, "write \(round) during the flood: \(w)")
            if w["status"] as? Int == 201 { written.append(text) }
            let open = try await Self.metric(port, "kiana_http_connections", label: "state=", token: token) ?? 0
            peakOpen = max(peakOpen, open)
            let fds = try await Self.metric(port, "kiana_fds_in_use", token: token) ?? 0
            let limit = try await Self.metric(port, "kiana_fds_limit", token: token) ?? 0
            #expect(open <= cap && fds < limit, "open \(open) of cap \(cap); fds \(fds) of \(limit)")
        }
        let status = try await kiana(["status", "--data-dir", a])
        #expect(status.out.contains("HTTP:") && status.out.contains("Descriptors:"), "\(status.out)")
        let (f, h, e) = try await (flood, health, elsewhere)
        print("slow-loris: flood \(f); /health \(h); 127.0.0.10 \(e); peak open \(peakOpen) of \(cap)")

        let attempts = f["attempts"] as? Int ?? 0
        #expect(attempts >= 3 * Int(cap), "the flood made only \(attempts) connections: \(f)")
        #expect(h["failures"] as? Int == 0 && (h["count"] as? Int ?? 0) > 100, "\(h)")
        #expect((h["p99"] as? Double ?? 1e9) < 100, "/health p99 under the flood: \(h)")
        #expect(e["failures"] as? Int == 0 && (e["count"] as? Int ?? 0) > 10, "the token holder on 127.0.0.10: \(e)")
        let grown = serveA.output.utf8.count - logBefore
        #expect(grown < 100_000, "the log grew by \(grown) bytes")
        // Every acknowledged write is on A and reached B.
        let items = try await kiana(["list", "--data-dir", a]).out
        for text in written { #expect(items.contains(text), "\(text) is not on A") }
        #expect(written.count == 3)
        #expect(
            try await eventually(20) {
                let list = try kiana(["list", "--data-dir", b]).out
                return written.allSatisfy { list.contains($0) }
            }, "B did not get the writes made during the flood")
        // Afterwards: no leaked descriptors or connections, memory back near its baseline.
        var fdsAfter = 0.0
        _ = await eventually(15) {
            fdsAfter = Double((try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(serveA.process.pid)/fd").count) ?? 0)
            return fdsAfter <= fdsBefore + 4
        }
        #expect(fdsAfter <= fdsBefore + 4, "descriptors \(fdsBefore) before, \(fdsAfter) after")
        let rssAfter = try #require(Self.rssKiB(serveA.process.pid))
        print("slow-loris: fds \(fdsBefore) → \(fdsAfter); RSS \(rssBefore) KiB → \(rssAfter) KiB")
        #expect(Double(rssAfter) <= Double(rssBefore) * 1.10 + 4096, "RSS \(rssBefore) KiB before, \(rssAfter) KiB after")
    }

    @Test("Slow-loris from 40 addresses fills the whole pool: loopback and a token holder elsewhere still get in, the pool never exceeds its cap")
    func slowLorisFromManyAddresses() async throws {
        let seconds = (Int(ProcessInfo.processInfo.environment["KIANA_SLOWLORIS_SECONDS"] ?? "") ?? 60) / 2
        let dir = try TempDir("kiana-slowloris-many")
        defer { dir.cleanup() }
        let token = "drill-token-many-0123456789"
        #expect(try await kiana(["init", "--data-dir", dir.path]).status == 0)
        let (node, port) = try await Self.serve(dir.path, ["--token", token])
        defer { node.signal(SIGKILL) }
        let p = ["--port", String(port), "--token", token]
        let cap = try #require(try await Self.metric(port, "kiana_http_connections_cap", token: token))
        // 40 addresses × 64 per address is 2,560: more than the 960 strangers may hold.
        let sources = (1...40).map { "127.0.1.\($0)" }.joined(separator: ",")
        async let flood = Self.attack(["flood", "--connections", "3000", "--seconds", String(seconds), "--sources", sources, "--rate", "1500"] + p)
        try await Task.sleep(for: .seconds(8))
        async let health = Self.attack(["probe", "--seconds", String(seconds - 12), "--interval", "0.05"] + p)
        // A LAN device that has used its token before (it is remembered) and one new to the node.
        async let known = Self.attack(["probe", "--seconds", String(seconds - 12), "--interval", "0.5", "--source", "127.0.0.10"] + p)
        var peak = 0.0
        for _ in 0..<3 {
            try await Task.sleep(for: .seconds(Double(seconds - 14) / 3))
            let open = try await Self.metric(port, "kiana_http_connections", label: "state=", token: token) ?? 0
            peak = max(peak, open)
        }
        let (f, h, k) = try await (flood, health, known)
        print("slow-loris, 40 addresses: flood \(f); /health \(h); 127.0.0.10 \(k); peak open \(peak) of \(cap)")
        #expect(peak <= cap && peak >= cap - 128, "the flood should fill the pool: peak \(peak) of \(cap)")
        #expect((f["attempts"] as? Int ?? 0) >= 3 * Int(cap), "\(f)")
        // The pool is full here, so every newcomer displaces someone, and the flood, the probes and
        // the node share two cores: p99 was 41-147 ms over repeated runs. The 100 ms bound is the
        // one-address drill's (above); this one must stay well inside a user's patience.
        #expect(h["failures"] as? Int == 0 && (h["p99"] as? Double ?? 1e9) < 250, "/health: \(h)")
        #expect(k["failures"] as? Int == 0 && (k["count"] as? Int ?? 0) > 5, "the token holder on 127.0.0.10: \(k)")
        let displaced = try await Self.metric(port, "kiana_http_connections_closed_total", label: "displaced-awaiting-head", token: token) ?? 0
        #expect(displaced > 0)
    }

    @Test("The open-file limit is raised to the hard limit and divided; one too small to run a node is refused with a clear message")
    func descriptorBudget() async throws {
        let dir = try TempDir("kiana-http-budget")
        defer { dir.cleanup() }
        #expect(try await kiana(["init", "--data-dir", dir.path]).status == 0)
        var hard = rlimit()
        getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &hard)
        let hardLimit = Int(min(hard.rlim_max, 1 << 20))
        // Soft 256, hard as it is: the node raises its soft limit to the hard one.
        do {
            let (node, port) = try await Self.serve(dir.path, [], ulimit: "-Sn 256")
            defer { node.signal(SIGKILL) }
            #expect(try await Self.metric(port, "kiana_fds_limit") == Double(hardLimit))
            let cap = try await Self.metric(port, "kiana_http_connections_cap") ?? 0
            #expect(cap == Double(min(1024, hardLimit)) || cap < 1024, "cap \(cap)")
            #expect(node.output.contains("softLimitAtStart=256"), "\(node.output)")
            node.signal(SIGTERM)
            _ = await node.wait()
        }
        // Hard 800: HTTP gets what the other parts leave, and the node says so.
        do {
            let (node, port) = try await Self.serve(dir.path, [], ulimit: "-n 800")
            defer { node.signal(SIGKILL) }
            let cap = try #require(try await Self.metric(port, "kiana_http_connections_cap"))
            let http = try #require(try await Self.metric(port, "kiana_fds_budget", label: "part=\"http\""))
            #expect(cap == http && cap < 1024 && cap >= 16, "cap \(cap)")
            #expect(node.output.contains("HTTP connections capped by the open-file limit"), "\(node.output)")
            node.signal(SIGTERM)
            _ = await node.wait()
        }
        // Hard 200: too small; refused before anything listens.
        let small = try await runProcess(
            "/bin/sh", ["-c", "ulimit -n 200 && exec '\(kianaBinary())' serve --data-dir '\(dir.path)' --port 0 --p2p-port 0 --discovery off"])
        let err = String(decoding: small.err, as: UTF8.self)
        #expect(small.status != 0 && err.contains("open-file limit (200") && err.contains("ulimit -n"), "\(small.status) \(err)")
    }
}
