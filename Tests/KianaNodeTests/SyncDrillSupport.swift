import Foundation
import KianaCore
import KianaTestSupport
import Synchronization
import Testing
#if canImport(Glibc)
    import Glibc
#endif

// The harness of SyncDrillTests: real `kiana serve` processes on loopback or each in a network
// namespace of Tests/netns/lab.sh, driven through the CLI and the REST API as a user would.

/// The drills' knobs, from the environment.
enum Drill {
    static var env: [String: String] { ProcessInfo.processInfo.environment }

    /// `KIANA_DRILL_SEED=N` replays seed N alone; otherwise `KIANA_DRILL_SEEDS` (default 1)
    /// fresh seeds, each printed before it runs.
    static func seeds() -> [UInt64] {
        if let s = env["KIANA_DRILL_SEED"], let n = UInt64(s.trimmingCharacters(in: .whitespaces)) { return [n] }
        let count = max(1, Int(env["KIANA_DRILL_SEEDS"] ?? "") ?? 1)
        var g = SystemRandomNumberGenerator()
        return (0..<count).map { _ in UInt64.random(in: 1...999_999, using: &g) }
    }

    /// Seconds the stranger flood lasts (`KIANA_FLOOD_SECONDS`, default 15).
    static var floodSeconds: Double { max(1, Double(env["KIANA_FLOOD_SECONDS"] ?? "") ?? 15) }

    /// Addresses the flood comes from (`KIANA_FLOOD_SOURCES`, default 1: 127.0.0.2 only).
    static var floodSources: Int { min(200, max(1, Int(env["KIANA_FLOOD_SOURCES"] ?? "") ?? 1)) }
}

struct DrillError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// The first integer that follows a match of `pattern` (e.g. `port ` in "… port 8470 …").
func intAfter(_ pattern: String, in text: String) -> Int? {
    guard let r = text.range(of: pattern + #"\d+"#, options: .regularExpression) else { return nil }
    return Int(text[r].reversed().prefix { $0.isNumber }.reversed().map(String.init).joined())
}

func percentile(_ values: [Double], _ p: Double) -> Double {
    guard !values.isEmpty else { return .nan }
    let s = values.sorted()
    return s[min(s.count - 1, Int((Double(s.count - 1) * p).rounded()))]
}

/// A TcpExt counter of this network namespace (/proc/net/netstat), e.g. ListenOverflows.
func tcpExtCounter(_ name: String) -> Int? {
    guard let text = try? String(contentsOfFile: "/proc/net/netstat", encoding: .utf8) else { return nil }
    let lines = text.split(separator: "\n").filter { $0.hasPrefix("TcpExt:") }
    guard lines.count >= 2 else { return nil }
    let names = lines[0].split(separator: " ")
    let values = lines[1].split(separator: " ")
    guard let i = names.firstIndex(where: { $0 == name }), i < values.count else { return nil }
    return Int(values[i])
}

func ms(_ seconds: Double) -> String { String(format: "%.1f ms", seconds * 1000) }
func secs(_ seconds: Double) -> String { String(format: "%.1f s", seconds) }

/// The lab of Tests/netns/lab.sh: member namespaces on one bridge, partitions by `split`.
struct DrillLab: Sendable {
    static let script = Shared.packageRoot.appendingPathComponent("Tests/netns/lab.sh").path
    let prefix: String

    /// Root and iproute2; under CI their absence is a failure.
    static var available: Bool {
        let ok = getuid() == 0 && ((try? runProcess("/usr/bin/env", ["ip", "netns", "list"]).status) == 0)
        if !ok && Shared.isCI { Issue.record("the sync drills need root and iproute2 (network namespaces)") }
        return ok
    }

    @discardableResult
    func run(_ args: [String]) throws -> String {
        let r = try runProcess("/bin/bash", [Self.script] + args)
        guard r.status == 0 else { throw DrillError("lab.sh \(args.joined(separator: " ")): \(String(decoding: r.err, as: UTF8.self))") }
        return String(decoding: r.out, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func up(members: Int) throws { try run(["up", prefix, "--members", String(members)]) }
    func ip(_ m: String) throws -> String { try run(["ip", prefix, m]) }
    func split(_ g1: String, _ g2: String) throws { try run(["split", prefix, g1, g2]) }
    func heal() throws { try run(["heal", prefix]) }
    func down() { _ = try? runProcess("/bin/bash", [Self.script, "down", prefix]) }
    /// argv that runs `command` inside member `m`.
    func exec(_ m: String, _ command: [String]) -> [String] { [Self.script, "exec", prefix, m] + command }

    static var root: String { ProcessInfo.processInfo.environment["KIANA_LAB_ROOT"].flatMap { $0.isEmpty ? nil : $0 } ?? "/tmp" }

    /// Records this test process as the lab's owner, so a later run can take down what a crashed
    /// run left behind.
    func markOwner() {
        try? Data("\(getpid())".utf8).write(to: URL(fileURLWithPath: "\(Self.root)/kiana-lab-\(prefix)/drill-owner"))
    }

    /// Takes down drill labs whose owning test process is gone (a crash skips the `defer`).
    static func downOrphans() {
        for name in (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? [] where name.hasPrefix("kiana-lab-kd") {
            guard let text = try? String(contentsOfFile: "\(root)/\(name)/drill-owner", encoding: .utf8), let pid = pid_t(text) else { continue }
            if kill(pid, 0) != 0 && errno == ESRCH { DrillLab(prefix: String(name.dropFirst("kiana-lab-".count))).down() }
        }
    }
}

/// One device: its data directory and, while it runs, its `kiana serve` (output captured).
/// Loopback nodes bind 127.0.0.1 on free ports; lab nodes live in member namespace `name`
/// (HTTP 127.0.0.1:8000 and links on <member address>:8470 inside it), and every command for
/// them runs inside that namespace, since the CLI's control commands reach the node over its
/// namespace's loopback.
final class DrillNode: @unchecked Sendable {
    let name: String
    let dir: String
    let lab: DrillLab?
    let ip: String
    private(set) var process: ChildProcess?
    private(set) var httpPort = 0
    private(set) var p2pPort = 0
    private(set) var device = ""
    private(set) var key = ""
    /// How often this node's serve was started (for log labels).
    private(set) var starts = 0

    init(name: String, dir: String, lab: DrillLab?, ip: String) {
        self.name = name
        self.dir = dir
        self.lab = lab
        self.ip = ip
        if lab != nil {
            httpPort = 8000
            p2pPort = 8470
        }
    }

    /// The same device in another data directory (a copy of this one's).
    func copy(to dir: String) -> DrillNode {
        let n = DrillNode(name: name, dir: dir, lab: lab, ip: ip)
        n.device = device
        n.key = key
        return n
    }

    var address: String { "\(ip):\(p2pPort)" }
    var isRunning: Bool { process?.process.isRunning ?? false }
    /// The running (or last stopped) process's output.
    var log: String { process?.output ?? lastLog }
    /// The output of the process `stop()` ended, so a failure message can still show it.
    var lastLog = ""
    var logBytes: Int { process?.output.utf8.count ?? 0 }

    func command(_ cmd: [String]) -> (String, [String]) {
        if let lab { return ("/bin/bash", lab.exec(name, cmd)) }
        return (cmd[0], Array(cmd.dropFirst()))
    }

    func run(_ cmd: [String], input: Data? = nil) async throws -> (status: Int32, out: String, err: String) {
        let (exe, args) = command(cmd)
        let r = try await runProcess(exe, args, input: input)
        return (r.status, String(decoding: r.out, as: UTF8.self), String(decoding: r.err, as: UTF8.self))
    }

    /// `kiana ARGS --data-dir DIR` where the node lives.
    func cli(_ args: [String], input: Data? = nil) async throws -> (status: Int32, out: String, err: String) {
        try await run([kianaBinary()] + args + ["--data-dir", dir], input: input)
    }

    func spawn(_ args: [String]) throws -> ChildProcess {
        let (exe, argv) = command([kianaBinary()] + args)
        return try ChildProcess(exe, argv)
    }

    func json(_ args: [String]) async throws -> Any {
        let r = try await cli(args + ["--json"])
        guard r.status == 0, let o = try? JSONSerialization.jsonObject(with: Data(r.out.utf8)) else {
            throw DrillError("\(name): kiana \(args.joined(separator: " ")) failed (\(r.status)): \(r.err)\(r.out.prefix(500))")
        }
        return o
    }

    func status() async throws -> [String: Any] {
        guard let s = try await json(["status"]) as? [String: Any] else { throw DrillError("\(name): status is not an object") }
        return s
    }

    /// Reads device ID and identity key from the data directory.
    func loadIdentity() async throws {
        let s = try await status()
        device = s["device"] as? String ?? ""
        key = s["identityKey"] as? String ?? ""
        guard !device.isEmpty, key.count == 64 else { throw DrillError("\(name): no identity in \(s)") }
    }

    /// (height, head hash, pending entries) from the data directory.
    func head() async throws -> (height: UInt64, hash: String, pending: Int) {
        let s = try await status()
        let h = s["head"] as? [String: Any]
        return (UInt64(h?["height"] as? Int ?? -1), h?["hash"] as? String ?? "", s["pending"] as? Int ?? -1)
    }

    func peers() async throws -> [[String: Any]] {
        (try await json(["peers", "list"]) as? [[String: Any]]) ?? []
    }

    func connectedMembers() async throws -> Set<String> {
        Set(try await peers().filter { $0["state"] as? String == "connected" && $0["member"] as? Bool == true }.compactMap { $0["device"] as? String })
    }

    /// Items with forgotten ones, sorted by ID, as canonical JSON text per item.
    func items() async throws -> [[String: Any]] {
        ((try await json(["list", "--all"]) as? [[String: Any]]) ?? []).sorted { ($0["id"] as? String ?? "") < ($1["id"] as? String ?? "") }
    }

    /// The entries of the canonical chain, genesis first, from `kiana export`.
    func chain() async throws -> [Entry] {
        let file = dir + ".export.json"
        defer { try? FileManager.default.removeItem(atPath: file) }
        let r = try await cli(["export", "-o", file])
        guard r.status == 0 else { throw DrillError("\(name): export failed: \(r.err)") }
        let data = try Data(contentsOf: URL(fileURLWithPath: file))
        guard let o = try JSONSerialization.jsonObject(with: data) as? [String: Any], let blocks = o["blocks"] as? [[String: Any]] else {
            throw DrillError("\(name): export is not a ledger export")
        }
        var entries: [Entry] = []
        for b in blocks {
            guard let text = b["cbor"] as? String, let bytes = Data(base64Encoded: text) else { throw DrillError("\(name): block without cbor") }
            entries += try Block(decoding: [UInt8](bytes)).entries
        }
        return entries
    }

    /// Starts `kiana serve` (nil log level: the node's default) and waits for its ports.
    func start(logLevel: String? = "info") async throws {
        var args = ["serve", "--data-dir", dir, "--discovery", "off", "--name", name, "--p2p-host", ip]
        args += lab != nil ? ["--port", "8000", "--p2p-port", "8470"] : ["--port", "0", "--p2p-port", "0"]
        let (exe, argv) = command([kianaBinary()] + args)
        var env = ProcessInfo.processInfo.environment
        // KIANA_DRILL_LOG_LEVEL overrides the level of every drill node (for a replay).
        env["KIANA_LOG_LEVEL"] = env["KIANA_DRILL_LOG_LEVEL"] ?? logLevel
        let p = try ChildProcess(exe, argv, environment: env)
        guard let line = await p.waitFor("device links on port", timeout: 180) else {
            p.signal(SIGKILL)
            throw DrillError("\(name): serve did not start:\n\(p.output)")
        }
        guard let http = intAfter(#"http://[^:\s]+:"#, in: line), let p2p = intAfter("device links on port ", in: line) else {
            p.signal(SIGKILL)
            throw DrillError("\(name): cannot read ports from \(line)")
        }
        httpPort = http
        p2pPort = p2p
        process = p
        starts += 1
    }

    /// SIGTERM and wait; the exit status (nil when not running).
    @discardableResult
    func stop() async -> Int32? {
        guard let p = process else { return nil }
        p.signal(SIGTERM)
        // Not stopped after 50 s: what its threads and signal masks were, before wait's SIGKILL.
        var s: Int32?
        for _ in 0..<2500 where p.process.isRunning { try? await Task.sleep(for: .milliseconds(20)) }
        if p.process.isRunning {
            let status = (try? String(contentsOfFile: "/proc/\(p.process.pid)/status", encoding: .utf8)) ?? ""
            let signals = status.split(separator: "\n").filter { $0.hasPrefix("Sig") || $0.hasPrefix("ShdPnd") }.joined(separator: " ")
            lastLog = "[still running 50 s after SIGTERM; \(signals)]\n"
        }
        s = await p.wait(timeout: 10)
        lastLog = p.output + lastLog
        process = nil
        return s
    }

    /// SIGKILL and reap.
    func crash() async {
        guard let p = process else { return }
        p.signal(SIGKILL)
        _ = await p.wait(timeout: 20)
        process = nil
    }

    /// For cleanup paths that cannot await.
    func forceKill() { process?.signal(SIGKILL) }

    /// A REST call through curl (inside the namespace for lab nodes).
    func rest(_ method: String, _ path: String, json body: [String: Any]? = nil) async throws -> (code: Int, json: [String: Any], body: String) {
        var args = ["/usr/bin/curl", "-s", "-m", "60", "-w", "\n%{http_code}", "-X", method]
        var input: Data?
        if let body {
            input = try JSONSerialization.data(withJSONObject: body)
            args += ["-H", "Content-Type: application/json", "--data-binary", "@-"]
        }
        args.append("http://127.0.0.1:\(httpPort)/api/v1/\(path)")
        let r = try await run(args, input: input)
        let lines = r.out.split(separator: "\n", omittingEmptySubsequences: false)
        let text = lines.dropLast().joined(separator: "\n")
        return (
            Int(lines.last ?? "") ?? 0, (try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]) ?? [:], text
        )
    }
}

/// Helpers over a set of nodes.
enum Nodes {
    /// Polls `condition` every `every` seconds until it holds; the seconds it took, nil on timeout.
    static func until(_ timeout: Double, every: Double = 0.5, _ condition: () async throws -> Bool) async rethrows -> Double? {
        let start = Date()
        while true {
            if try await condition() { return Date().timeIntervalSince(start) }
            if Date().timeIntervalSince(start) > timeout { return nil }
            try? await Task.sleep(for: .milliseconds(Int(every * 1000)))
        }
    }

    /// Every node links to every other (state connected, member).
    static func meshed(_ nodes: [DrillNode]) async throws -> Bool {
        for n in nodes {
            let want = Set(nodes.filter { $0 !== n }.map(\.device))
            guard want.isSubset(of: try await n.connectedMembers()) else { return false }
        }
        return true
    }

    /// Records an issue when `ok` is false, with `detail` (gathered only then), and throws
    /// unless `fatal` is false.
    static func confirm(
        _ ok: Bool, _ message: String, fatal: Bool = true, sourceLocation: SourceLocation = #_sourceLocation, detail: () async -> String = { "" }
    ) async throws {
        guard !ok else { return }
        let d = await detail()
        Issue.record(Comment(rawValue: message + (d.isEmpty ? "" : "\n" + d)), sourceLocation: sourceLocation)
        if fatal { throw DrillError(message) }
    }

    static func describePeers(_ nodes: [DrillNode]) async -> String {
        var out: [String] = []
        for n in nodes {
            let p = (try? await n.peers()) ?? []
            out.append(
                "\(n.name) \(n.device): "
                    + p.map { "\($0["device"] as? String ?? "?") \($0["state"] as? String ?? "?") h=\($0["height"] ?? "-") \($0["sync"] ?? "-")" }
                    .joined(separator: "; "))
        }
        return out.joined(separator: "\n")
    }

    /// All heads equal with nothing pending, on two polls in a row.
    static func converged(_ nodes: [DrillNode]) async throws -> Bool {
        var first: (UInt64, String)?
        for _ in 0..<2 {
            var heads: [(UInt64, String, Int)] = []
            for n in nodes { heads.append(try await n.head()) }
            guard Set(heads.map(\.1)).count == 1, heads.allSatisfy({ $0.2 == 0 }) else { return false }
            if let first, first.1 != heads[0].1 { return false }
            first = (heads[0].0, heads[0].1)
            try? await Task.sleep(for: .milliseconds(400))
        }
        return true
    }

    static func describeHeads(_ nodes: [DrillNode]) async -> String {
        var out: [String] = []
        for n in nodes {
            if let h = try? await n.head() {
                out.append("\(n.name): \(h.height) \(h.hash.prefix(12)) pending \(h.pending)")
            } else {
                out.append("\(n.name): ?")
            }
        }
        return out.joined(separator: ", ")
    }

    /// `kiana pair` on `authority`, `kiana join` for `joiner` (its data directory must not exist),
    /// the shown code typed in. Throws unless both succeed.
    /// A initialised as network `network` and started, B paired with it (not started).
    static func startPaired(_ a: DrillNode, _ b: DrillNode, network: String, logLevel: String? = "info") async throws {
        try #require(try await a.cli(["init", "--name", network]).status == 0)
        try await a.loadIdentity()
        try await a.start(logLevel: logLevel)
        try await pair(authority: a, joiner: b)
        try await b.loadIdentity()
    }

    /// `joiner` paired with authority `a` and voted in by `b` (the other authority): a third
    /// authority, not started.
    static func third(_ joiner: DrillNode, pairedBy a: DrillNode, votedBy b: DrillNode) async throws {
        try await pair(authority: a, joiner: joiner)
        try await joiner.loadIdentity()
        let vote = try await b.cli(["vote", "add", joiner.key])
        try #require(vote.status == 0, "\(vote.err)")
    }

    static func pair(authority: DrillNode, joiner: DrillNode) async throws {
        let pair = try authority.spawn(["pair", "--data-dir", authority.dir, "--timeout", "90"])
        defer { pair.signal(SIGKILL) }
        guard await pair.waitFor("Pairing window open", timeout: 60) != nil else { throw DrillError("pair did not open: \(pair.output)") }
        let join = try joiner.spawn(["join", authority.address, "--data-dir", joiner.dir, "--name", joiner.name, "--timeout", "90"])
        defer { join.signal(SIGKILL) }
        guard let line = await join.waitFor("Pairing code:", timeout: 60) else { throw DrillError("no code: \(join.output)") }
        guard await pair.waitFor("asks to join", timeout: 60) != nil else { throw DrillError("no request: \(pair.output)") }
        pair.write(String(line.split(separator: ":").last ?? "").trimmingCharacters(in: .whitespaces) + "\n")
        let ps = await pair.wait(timeout: 60)
        let js = await join.wait(timeout: 60)
        guard ps == 0, js == 0 else { throw DrillError("pairing failed: \(pair.output)\n\(join.output)") }
    }
}

/// A blocking HTTP/1.1 client on one keep-alive connection (for latency measurements, where
/// starting curl for every poll would cost more than what is measured).
final class HTTPConnection {
    let port: Int
    var fd: Int32 = -1
    var buffer: [UInt8] = []

    init(port: Int) { self.port = port }
    deinit { if fd >= 0 { close(fd) } }

    func connect() throws {
        if fd >= 0 { close(fd) }
        buffer = []
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw DrillError("socket: \(errno)") }
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        var tv = timeval(tv_sec: 15, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else {
            close(fd)
            fd = -1
            throw DrillError("connect 127.0.0.1:\(port): errno \(errno)")
        }
    }

    /// One request; reconnects once if the connection was closed.
    func request(_ method: String, _ path: String, json: Data? = nil) throws -> (code: Int, body: Data) {
        do { return try attempt(method, path, json) } catch {
            try connect()
            return try attempt(method, path, json)
        }
    }

    func attempt(_ method: String, _ path: String, _ json: Data?) throws -> (code: Int, body: Data) {
        if fd < 0 { try connect() }
        var head = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\n"
        if let json { head += "Content-Type: application/json\r\nContent-Length: \(json.count)\r\n" }
        head += "\r\n"
        let out = Array(head.utf8) + (json.map { [UInt8]($0) } ?? [])
        var sent = 0
        while sent < out.count {
            let n = out[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw DrillError("send failed") }
            sent += n
        }
        // Status line and headers.
        var headerEnd: Int?
        while headerEnd == nil {
            headerEnd = find([13, 10, 13, 10])
            if headerEnd == nil { try fill() }
        }
        let headerText = String(decoding: buffer[..<headerEnd!], as: UTF8.self)
        buffer.removeFirst(headerEnd! + 4)
        let lines = headerText.split(separator: "\r\n")
        let code = lines.first.flatMap { Int($0.split(separator: " ").dropFirst().first ?? "") } ?? 0
        var length: Int?
        var chunked = false
        var closeAfter = false
        for l in lines.dropFirst() {
            let parts = l.split(separator: ":", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
            guard parts.count == 2 else { continue }
            if parts[0] == "content-length" { length = Int(parts[1]) }
            if parts[0] == "transfer-encoding" && parts[1].contains("chunked") { chunked = true }
            if parts[0] == "connection" && parts[1] == "close" { closeAfter = true }
        }
        var body: [UInt8] = []
        if chunked {
            while true {
                var lineEnd = find([13, 10])
                while lineEnd == nil {
                    try fill()
                    lineEnd = find([13, 10])
                }
                let sizeText = String(decoding: buffer[..<lineEnd!], as: UTF8.self).split(separator: ";").first ?? ""
                buffer.removeFirst(lineEnd! + 2)
                guard let size = Int(sizeText.trimmingCharacters(in: .whitespaces), radix: 16) else { throw DrillError("bad chunk") }
                while buffer.count < size + 2 { try fill() }
                body += buffer[..<size]
                buffer.removeFirst(size + 2)
                if size == 0 { break }
            }
        } else if let length {
            while buffer.count < length { try fill() }
            body = Array(buffer[..<length])
            buffer.removeFirst(length)
        }
        if closeAfter {
            close(fd)
            fd = -1
        }
        return (code, Data(body))
    }

    func find(_ pattern: [UInt8]) -> Int? {
        guard buffer.count >= pattern.count else { return nil }
        for i in 0...(buffer.count - pattern.count) where buffer[i] == pattern[0] && Array(buffer[i..<(i + pattern.count)]) == pattern { return i }
        return nil
    }

    func fill() throws {
        var chunk = [UInt8](repeating: 0, count: 65536)
        let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        guard n > 0 else {
            close(fd)
            fd = -1
            throw DrillError("connection closed")
        }
        buffer += chunk[..<n]
    }
}

/// Threads that open TCP connections to a port from given source addresses and drop each at
/// once (RST, so neither side keeps TIME_WAIT), as fast as they can.
final class ConnectionFlood: @unchecked Sendable {
    let port: Int
    let sources: [String]
    let threads: Int
    let stopFlag = Atomic<Bool>(false)
    let opened = Atomic<Int>(0)
    let failed = Atomic<Int>(0)
    let running = Atomic<Int>(0)

    init(port: Int, sources: [String], threads: Int) {
        self.port = port
        self.sources = sources
        self.threads = threads
    }

    func start() {
        for t in 0..<threads {
            running.add(1, ordering: .relaxed)
            let source = sources[t % sources.count]
            let thread = Thread { [self] in
                self.loop(source: source)
                self.running.subtract(1, ordering: .relaxed)
            }
            thread.stackSize = 256 << 10
            thread.start()
        }
    }

    func loop(source: String) {
        var target = sockaddr_in()
        target.sin_family = sa_family_t(AF_INET)
        target.sin_port = in_port_t(UInt16(port).bigEndian)
        target.sin_addr.s_addr = inet_addr("127.0.0.1")
        var local = sockaddr_in()
        local.sin_family = sa_family_t(AF_INET)
        local.sin_port = 0
        local.sin_addr.s_addr = inet_addr(source)
        var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
        while !stopFlag.load(ordering: .relaxed) {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            guard fd >= 0 else {
                failed.add(1, ordering: .relaxed)
                usleep(1000)
                continue
            }
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
            let bound = withUnsafePointer(to: &local) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            let rc =
                bound == 0
                ? withUnsafePointer(to: &target) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
                }
                : -1
            if rc == 0 { opened.add(1, ordering: .relaxed) } else { failed.add(1, ordering: .relaxed) }
            close(fd)
        }
    }

    /// Stops the threads and waits until they are gone.
    func stop() {
        stopFlag.store(true, ordering: .relaxed)
        while running.load(ordering: .relaxed) > 0 { usleep(5000) }
    }
}
