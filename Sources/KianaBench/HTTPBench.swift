import Foundation
import KianaAI
import KianaCore
import KianaStore

/// `kiana bench http`: drives URLs of a running server with wrk (Debian's `wrk`) for a bounded
/// time with concurrent connections and reads requests per second, p50/p99 latency and errors
/// from its report. A static file served by nginx (Debian's `nginx-light`) with the same body as
/// /health is the reference, measured in the same run.
public struct HTTPBench: Sendable {
    public var seconds: Int
    public var connections: Int
    public var threads: Int
    public var wrk: String
    public var nginx: String

    public init(seconds: Int = 10, connections: Int = 16, threads: Int = 2, wrk: String = "/usr/bin/wrk", nginx: String = "/usr/sbin/nginx") {
        self.seconds = seconds
        self.connections = connections
        self.threads = threads
        self.wrk = wrk
        self.nginx = nginx
    }

    /// One target's figures.
    public struct Result: Sendable {
        public var name: String
        public var requests: Int
        public var perSecond: Double
        public var p50: Double
        public var p99: Double
        /// Socket errors (connect, read, write, timeout) plus non-2xx/3xx responses.
        public var errors: Int
    }

    /// A target: a name and a URL, or several URLs that wrk's Lua script cycles through.
    public struct Target: Sendable {
        public var name: String
        public var urls: [String]
        public init(name: String, urls: [String]) {
            self.name = name
            self.urls = urls
        }
    }

    public var hasWrk: Bool { FileManager.default.isExecutableFile(atPath: wrk) }
    public var hasNginx: Bool { FileManager.default.isExecutableFile(atPath: nginx) }

    /// Runs wrk against one target on a Dispatch thread, so the cooperative pool stays free
    /// while wrk runs.
    public func measure(_ target: Target) async throws -> Result {
        let bench = self
        return try await blocking { try bench.measure(target, headers: [:]) }
    }

    /// Runs wrk against one target.
    public func measure(_ target: Target, headers: [String: String] = [:]) throws -> Result {
        guard hasWrk else { throw KianaAIError(.toolMissing, "wrk is not installed (apt-get install wrk, or `make setup`)") }
        guard let first = target.urls.first, let url = URL(string: first), let host = url.host, let port = url.port else {
            throw KianaAIError(.invalidInput, "bad target URL")
        }
        let base = "http://\(host):\(port)"
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("kiana-wrk-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        // The Lua script cycles through the paths (one per request) and keeps the latency
        // distribution wrk prints with --latency.
        let paths = target.urls.map { String($0.dropFirst(base.count)) }
        let lua =
            "local paths = {" + paths.map { "\"" + Self.luaEscape($0) + "\"" }.joined(separator: ",") + "}\n"
            + "local i = 0\n"
            + headers.map { "wrk.headers[\"\(Self.luaEscape($0.key))\"] = \"\(Self.luaEscape($0.value))\"\n" }.joined()
            + "request = function()\n  i = i % #paths + 1\n  return wrk.format(\"GET\", paths[i])\nend\n"
        let script = dir.appendingPathComponent("paths.lua").path
        try Data(lua.utf8).write(to: URL(fileURLWithPath: script))
        let out = try Self.run(wrk, ["-t\(threads)", "-c\(connections)", "-d\(seconds)s", "--timeout", "10s", "--latency", "-s", script, base + paths[0]])
        return try Self.parse(out, name: target.name)
    }

    /// Parses wrk's report: "Requests/sec", the 50% and 99% lines of the latency distribution,
    /// "N requests in", socket errors and non-2xx/3xx responses.
    static func parse(_ out: String, name: String) throws -> Result {
        func number(after label: String) -> String? {
            guard let r = out.range(of: label) else { return nil }
            return out[r.upperBound...].split(whereSeparator: { $0 == " " || $0 == "\n" }).first.map(String.init)
        }
        func millis(_ s: String?) -> Double? {
            guard let s else { return nil }
            for (unit, scale) in [("us", 0.001), ("ms", 1.0), ("s", 1000.0), ("m", 60_000.0)] where s.hasSuffix(unit) {
                if let v = Double(s.dropLast(unit.count)) { return v * scale }
            }
            return nil
        }
        guard let rps = number(after: "Requests/sec:").flatMap(Double.init), let p50 = millis(number(after: "\n     50%")),
            let p99 = millis(number(after: "\n     99%"))
        else {
            throw KianaAIError(.invalidInput, "cannot read wrk's report:\n\(out)")
        }
        let requests =
            out.range(of: #"(\d+) requests in"#, options: .regularExpression)
            .flatMap { Int(out[$0].split(separator: " ")[0]) } ?? 0
        var errors = Int(number(after: "Non-2xx or 3xx responses:") ?? "0") ?? 0
        if let r = out.range(of: #"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)"#, options: .regularExpression) {
            errors += out[r].split(whereSeparator: { !$0.isNumber }).compactMap { Int($0) }.reduce(0, +)
        }
        return Result(name: name, requests: requests, perSecond: rps, p50: p50, p99: p99, errors: errors)
    }

    /// nginx serving `body` as a static file on a free loopback port; stopped by the returned closure.
    public func startNginx(body: String) throws -> (url: String, stop: @Sendable () -> Void) {
        guard hasNginx else { throw KianaAIError(.toolMissing, "nginx is not installed (apt-get install nginx-light, or `make bench`)") }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("kiana-nginx-\(UUID().uuidString)").path
        for sub in ["", "/www", "/logs", "/tmp"] { try FileManager.default.createDirectory(atPath: dir + sub, withIntermediateDirectories: true) }
        try Data(body.utf8).write(to: URL(fileURLWithPath: dir + "/www/health"))
        let port = try Self.freePort()
        let conf = """
            worker_processes \(threads);
            pid \(dir)/nginx.pid;
            error_log \(dir)/logs/error.log;
            events { worker_connections 1024; }
            http {
                access_log off;
                client_body_temp_path \(dir)/tmp; proxy_temp_path \(dir)/tmp; fastcgi_temp_path \(dir)/tmp;
                uwsgi_temp_path \(dir)/tmp; scgi_temp_path \(dir)/tmp;
                default_type application/json;
                server { listen 127.0.0.1:\(port); root \(dir)/www; }
            }
            """
        try Data(conf.utf8).write(to: URL(fileURLWithPath: dir + "/nginx.conf"))
        let p = Process()
        p.executableURL = URL(fileURLWithPath: nginx)
        p.arguments = ["-c", dir + "/nginx.conf", "-p", dir, "-g", "daemon off; user root;"]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        let stop: @Sendable () -> Void = {
            p.terminate()
            p.waitUntilExit()
            try? FileManager.default.removeItem(atPath: dir)
        }
        // Wait until it answers.
        let url = "http://127.0.0.1:\(port)/health"
        for _ in 0..<100 {
            if (try? Data(contentsOf: URL(string: url)!)) != nil { return (url, stop) }
            if !p.isRunning { break }
            usleep(50_000)
        }
        let log = (try? String(contentsOfFile: dir + "/logs/error.log", encoding: .utf8)) ?? ""
        stop()
        throw KianaAIError(.toolMissing, "nginx did not start: \(log.suffix(400))")
    }

    public static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw KianaAIError(.invalidInput, "socket() failed") }
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0 }
        }
        guard ok else { throw KianaAIError(.invalidInput, "cannot find a free port") }
        return Int(UInt16(bigEndian: addr.sin_port))
    }

    static func run(_ path: String, _ args: [String]) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: path)
        p.arguments = args
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        try p.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        let out = String(decoding: data, as: UTF8.self)
        guard p.terminationStatus == 0 else { throw KianaAIError(.invalidInput, "\(path) failed: \(out.suffix(400))") }
        return out
    }

    static func luaEscape(_ s: String) -> String {
        s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"").replacingOccurrences(of: "\n", with: "\\n")
    }

    /// The results as a table; `reference` is nginx's static file (nil: not measured).
    public func render(_ rows: [Result], reference: Result?) -> String {
        func f(_ v: Double, _ d: Int = 1) -> String { String(format: "%.\(d)f", v) }
        var out = "target".padded(to: 34) + "req/s".padded(to: 10) + "p50 ms".padded(to: 9) + "p99 ms".padded(to: 9) + "requests".padded(to: 10) + "errors\n"
        for r in rows + (reference.map { [$0] } ?? []) {
            out += r.name.padded(to: 34) + f(r.perSecond, 0).padded(to: 10) + f(r.p50, 2).padded(to: 9) + f(r.p99, 2).padded(to: 9) + "\(r.requests)".padded(to: 10) + "\(r.errors)\n"
        }
        if let reference, let health = rows.first {
            out +=
                "ratio \(health.name) / \(reference.name): \(f(health.perSecond / reference.perSecond, 2))x requests per second, "
                + "p99 \(f(health.p99 / max(reference.p99, 0.001), 2))x\n"
        }
        return out
    }
}

extension RetrievalSet {
    /// Writes the first `count` passages into `store` as knowledge items signed by `identity`,
    /// 200 to a block (the knowledge of the node `kiana bench http` measures).
    public func seed(_ store: LedgerStore, identity: DeviceIdentity, count: Int) throws {
        let ops = passages.prefix(count).map { KnowledgeOp.put(ItemID.random(), KnowledgeFields(title: $0.title, text: $0.text, tags: $0.tags)) }
        for start in stride(from: 0, to: ops.count, by: 200) {
            _ = try store.write(
                Array(ops[start..<min(start + 200, ops.count)]), identity: identity,
                now: currentMillis())
        }
    }
}
