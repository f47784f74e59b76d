import Foundation
import KianaTestSupport
import Testing

/// Logs and metrics of a real `kiana serve`: JSON-lines logs that a JSON parser reads line by
/// line, request IDs carried from `X-Request-ID` into the log and back, no token and no
/// knowledge text (taught, searched or asked) anywhere in the log even at debug, and /metrics
/// read by the official Python Prometheus parser, with the series the Grafana dashboard in
/// deploy/ queries.
@Suite(.serialized) struct ObservabilityTests {
    static func curl(_ args: [String]) async throws -> (code: Int, body: String, headers: String) {
        let headers = FileManager.default.temporaryDirectory.appendingPathComponent("kiana-h-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: headers) }
        let r = try await runProcess("/usr/bin/curl", ["-s", "-m", "120", "-D", headers, "-w", "\n%{http_code}"] + args)
        let text = String(decoding: r.out, as: UTF8.self)
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        return (Int(lines.last ?? "") ?? 0, lines.dropLast().joined(separator: "\n"), (try? String(contentsOfFile: headers, encoding: .utf8)) ?? "")
    }

    static func header(_ name: String, in headers: String) -> String? {
        headers.split(separator: "\r\n").first { $0.lowercased().hasPrefix(name.lowercased() + ":") }
            .map { String($0.dropFirst(name.count + 1)).trimmingCharacters(in: .whitespaces) }
    }

    @Test(.needsModels) func jsonLogsRequestIDsNoSecretsAndPrometheusMetrics() async throws {
        guard Models.hasSmolLM && Models.hasMiniLM else {
            if Shared.isCI { Issue.record("the models are missing from \(Models.directory)") }
            return
        }
        let dir = try TempDir()
        defer { dir.cleanup() }
        #expect(try await kiana(["init", "--data-dir", dir.path]).status == 0)
        let token = "tok" + UUID().uuidString.replacingOccurrences(of: "-", with: "")
        let node = try ChildProcess(
            kianaBinary(),
            [
                "serve", "--data-dir", dir.path, "--port", "0", "--p2p-port", "0", "--p2p-host", "127.0.0.1", "--discovery", "off",
                "--log-format", "json", "--log-level", "debug", "--token", token,
            ])
        let line = try #require(await node.waitFor("serving http://", timeout: 60), "serve did not start: \(node.output)")
        let port = try #require(line.range(of: #"127\.0\.0\.1:(\d+)"#, options: .regularExpression).flatMap { Int(line[$0].split(separator: ":").last!) })
        let u = "http://127.0.0.1:\(port)"
        let auth = ["-H", "Authorization: Bearer \(token)"]

        // Knowledge text that must never reach the log: taught, searched for, asked about.
        let marker = "Quokkamarker" + String(UInt32.random(in: 100_000...999_999))
        var r = try await Self.curl(
            auth + ["-H", "X-Request-ID: client-id.42", "-H", "Content-Type: application/json", "--data-binary", #"{"text":"The \#(marker) lives in the shed."}"#, u + "/api/v1/knowledge"])
        #expect(r.code == 201, "\(r.body)")
        #expect(Self.header("X-Request-ID", in: r.headers) == "client-id.42", "\(r.headers)")
        r = try await Self.curl(auth + [u + "/api/v1/search?q=\(marker)"])
        #expect(r.code == 200 && r.body.contains(marker), "\(r.body)")
        let generated = try #require(Self.header("X-Request-ID", in: r.headers), "\(r.headers)")
        #expect(generated.count == 16 && generated.allSatisfy(\.isHexDigit), "\(generated)")
        // A malformed client ID is replaced, not logged.
        r = try await Self.curl(auth + ["-H", "X-Request-ID: bad id with spaces \(marker)", u + "/api/v1/knowledge"])
        #expect(r.code == 200 && Self.header("X-Request-ID", in: r.headers)?.contains(" ") == false, "\(r.headers)")
        r = try await Self.curl(
            auth + ["-H", "Content-Type: application/json", "--data-binary", #"{"question":"Where does the \#(marker) live?","stream":false,"max_tokens":16}"#, u + "/api/v1/ask"])
        #expect(r.code == 200, "\(r.body)")
        r = try await Self.curl([u + "/api/v1/knowledge"])
        #expect(r.code == 401)

        // /metrics through the official Python parser, and the dashboard's series.
        let scraped = try await Self.curl(auth + [u + "/metrics"])
        #expect(scraped.code == 200)
        let file = dir.path + "/metrics.txt"
        try scraped.body.write(toFile: file, atomically: true, encoding: .utf8)
        let py = try await runProcess(
            python3(), [Shared.packageRoot.path + "/Tests/python/metrics_check.py", file, Shared.packageRoot.path + "/deploy/grafana-dashboard.json"])
        #expect(py.status == 0, "\(String(decoding: py.err, as: UTF8.self))")
        let parsed = try #require(try JSONSerialization.jsonObject(with: py.out) as? [String: Any])
        let families = try #require(parsed["families"] as? [String: String])
        let expectedTypes = [
            "kiana_http_requests": "counter", "kiana_http_request_duration_seconds": "histogram", "kiana_ledger_height": "gauge",
            "kiana_knowledge_items": "gauge", "kiana_tokens_generated": "counter", "kiana_ledger_pending_entries": "gauge",
            "kiana_store_bytes": "gauge", "kiana_models_loaded": "gauge", "kiana_p2p_links": "gauge", "kiana_p2p_connections": "gauge",
            "kiana_p2p_refused": "counter", "kiana_sync_blocks_in": "counter", "kiana_sync_errors": "counter",
        ]
        for (name, type) in expectedTypes { #expect(families[name] == type, "\(name): \(families[name] ?? "missing")") }
        let samples = try #require(parsed["samples"] as? [[Any]])
        func value(_ name: String, _ labels: [String: String] = [:]) -> Double? {
            samples.first { ($0[0] as? String) == name && ($0[1] as? [String: String]) == labels }?[2] as? Double
        }
        #expect(value("kiana_http_requests_total", ["method": "POST", "route": "/api/v1/knowledge", "status": "201"]) == 1)
        #expect(value("kiana_http_requests_total", ["method": "GET", "route": "/api/v1/knowledge", "status": "401"]) == 1)
        #expect(value("kiana_http_request_duration_seconds_count", ["method": "POST", "route": "/api/v1/ask"]) == 1)
        #expect(value("kiana_ledger_height") == 1 && value("kiana_knowledge_items") == 1)
        #expect((value("kiana_tokens_generated_total") ?? 0) > 0)
        #expect((value("kiana_store_bytes") ?? 0) > 4096)
        #expect(value("kiana_models_loaded") == 1)
        #expect(parsed["dashboard_missing"] as? [String] == [], "the dashboard queries series /metrics lacks: \(parsed["dashboard_missing"] ?? "-")")
        #expect((parsed["dashboard_panels"] as? Int ?? 0) >= 10)

        node.signal(SIGTERM)
        let status = await node.wait()
        #expect(status == 0, "exit \(status): \(node.output.suffix(2000))")

        // Every log line is one JSON object; the only other line is serve's own banner.
        let lines = node.output.split(separator: "\n").map(String.init)
        var objects: [[String: Any]] = []
        for l in lines {
            if l.hasPrefix("KI_ana node ") && l.contains("serving http://") { continue }
            let object = try? JSONSerialization.jsonObject(with: Data(l.utf8)) as? [String: Any]
            #expect(object != nil, "not a JSON log line: \(l)")
            if let object { objects.append(object) }
        }
        #expect(objects.count > 10)
        for o in objects {
            #expect(o["time"] is String && o["level"] is String && o["msg"] is String && o["source"] is String, "\(o)")
        }
        let requests = objects.filter { $0["msg"] as? String == "request answered" }
        let tagged = try #require(requests.first { $0["request"] as? String == "client-id.42" }, "\(requests)")
        #expect(tagged["route"] as? String == "/api/v1/knowledge" && tagged["status"] as? String == "201" && tagged["method"] as? String == "POST")
        #expect(requests.contains { $0["request"] as? String == generated && $0["route"] as? String == "/api/v1/search" })
        #expect(requests.contains { $0["status"] as? String == "401" })
        #expect(objects.contains { $0["msg"] as? String == "node stopped" })
        // Neither the token nor any knowledge text, at any level.
        #expect(!node.output.contains(token), "the token is in the log")
        #expect(!node.output.contains(marker), "knowledge text is in the log: \(lines.filter { $0.contains(marker) })")
    }

    /// The logfmt default: one line per event, values with spaces, quotes, `=` or line breaks
    /// quoted and escaped, so a value can never start a line of its own or forge a key.
    @Test func logfmtLinesOfARealNodeParse() async throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        #expect(try await kiana(["init", "--data-dir", dir.path]).status == 0)
        let node = try ChildProcess(
            kianaBinary(),
            ["serve", "--data-dir", dir.path, "--port", "0", "--p2p-port", "0", "--p2p-host", "127.0.0.1", "--discovery", "off", "--log-level", "info"])
        let line = try #require(await node.waitFor("serving http://", timeout: 60), "serve did not start: \(node.output)")
        let port = try #require(line.range(of: #"127\.0\.0\.1:(\d+)"#, options: .regularExpression).flatMap { Int(line[$0].split(separator: ":").last!) })
        _ = try await Self.curl(["-H", "X-Request-ID: a=b", "http://127.0.0.1:\(port)/api/v1/knowledge"])
        node.signal(SIGTERM)
        #expect(await node.wait() == 0)
        let lines = node.output.split(separator: "\n").map(String.init).filter { !$0.hasPrefix("KI_ana node ") }
        #expect(lines.count >= 4, "\(lines)")
        for l in lines {
            let pairs = try #require(Self.logfmt(l), "not logfmt: \(l)")
            #expect(Array(pairs.prefix(4).map(\.0)) == ["time", "level", "source", "msg"], "\(l)")
        }
        let request = try #require(lines.compactMap(Self.logfmt).first { $0.contains { $0 == ("msg", "request answered") } })
        // "a=b" is not a valid ID: replaced by a generated one.
        let id = try #require(request.first { $0.0 == "request" }?.1)
        #expect(id.count == 16 && id != "a=b")
    }

    /// Nobody reads the log (its pipe is full): requests are still answered promptly, SIGTERM
    /// still stops the node, and once the log is read again it says how many lines it dropped.
    /// In JSON mode even the error that stops a second node on the same directory is JSON.
    @Test func anUnreadLogNeverStallsTheNode() async throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        #expect(try await kiana(["init", "--data-dir", dir.path]).status == 0)
        let env = ProcessInfo.processInfo.environment
        let node = try Spawned(
            kianaBinary(),
            ["serve", "--data-dir", dir.path, "--port", "0", "--p2p-port", "0", "--p2p-host", "127.0.0.1", "--discovery", "off", "--log-level", "info",
             "--log-format", "json"],
            environment: env)
        defer { if node.isRunning { node.signal(SIGKILL) } }
        // The banner (stdout) gives the port; standard error is not read until the end.
        var banner = ""
        let start = Date()
        while !banner.contains("serving http://"), Date().timeIntervalSince(start) < 60 {
            let d = node.stdout.availableData
            if d.isEmpty { break }
            banner += String(decoding: d, as: UTF8.self)
        }
        let port = try #require(banner.range(of: #"127\.0\.0\.1:(\d+)"#, options: .regularExpression).flatMap { Int(banner[$0].split(separator: ":").last!) }, "\(banner)")
        // 6,000 answered requests log ~1.4 MB: more than the pipe (64 KiB) and the queue (1 MiB) hold.
        let script = """
            import http.client, sys, time
            c = http.client.HTTPConnection("127.0.0.1", \(port), timeout=5)
            worst = 0.0
            for i in range(6000):
                t = time.monotonic()
                c.request("GET", "/api/v1/knowledge?limit=1")
                r = c.getresponse(); r.read()
                if r.status != 200: sys.exit("status %d at request %d" % (r.status, i))
                worst = max(worst, time.monotonic() - t)
            print("worst %.3f s" % worst)
            """
        let py = try await runProcess(python3(), ["-c", script])
        #expect(py.status == 0, "requests stalled with the log unread: \(String(decoding: py.err, as: UTF8.self))")
        // A second node on the same directory: refused, and its error is a JSON log line.
        let second = try await kiana(["serve", "--data-dir", dir.path, "--port", "0", "--p2p-port", "0", "--discovery", "off", "--log-format", "json"])
        #expect(second.status == 1)
        let errLines = second.err.split(separator: "\n")
        #expect(!errLines.isEmpty && errLines.allSatisfy { (try? JSONSerialization.jsonObject(with: Data($0.utf8))) != nil }, "\(second.err)")
        #expect(second.err.contains("\"level\":\"error\"") && second.err.contains("already serving"), "\(second.err)")

        // The log is read again: the queued lines, then the count of those dropped.
        let stderr = try #require(node.stderr)
        let reading = Task.detached { stderr.readDataToEndOfFile() }
        try await Task.sleep(for: .seconds(1))
        node.signal(SIGTERM)
        let stopBy = Date().addingTimeInterval(20)
        while node.isRunning && Date() < stopBy { try? await Task.sleep(for: .milliseconds(50)) }
        #expect(!node.isRunning, "SIGTERM did not stop a node whose log is unread")
        #expect(node.exitStatus == 0)
        let log = String(decoding: await reading.value, as: UTF8.self)
        #expect(log.contains("log lines dropped"), "\(log.suffix(500))")
        for l in log.split(separator: "\n") {
            #expect((try? JSONSerialization.jsonObject(with: Data(l.utf8))) != nil, "not JSON: \(l.prefix(300))")
        }
    }

    /// A strict logfmt reader: `key=value` pairs separated by one space; a value is bare
    /// (no space, quote, `=` or backslash) or double-quoted with `\"`, `\\`, `\n`, `\r`, `\t` escapes.
    static func logfmt(_ line: String) -> [(String, String)]? {
        var out: [(String, String)] = []
        var i = line.startIndex
        while i < line.endIndex {
            guard let eq = line[i...].firstIndex(of: "=") else { return nil }
            let key = String(line[i..<eq])
            guard !key.isEmpty, !key.contains(" "), !key.contains("\"") else { return nil }
            i = line.index(after: eq)
            var value = ""
            if i < line.endIndex, line[i] == "\"" {
                i = line.index(after: i)
                var closed = false
                while i < line.endIndex {
                    let c = line[i]
                    if c == "\\" {
                        i = line.index(after: i)
                        guard i < line.endIndex else { return nil }
                        switch line[i] {
                        case "\"": value.append("\"")
                        case "\\": value.append("\\")
                        case "n": value.append("\n")
                        case "r": value.append("\r")
                        case "t": value.append("\t")
                        case "u":
                            let hex = line[line.index(after: i)...].prefix(4)
                            guard hex.count == 4, let v = UInt32(hex, radix: 16), let s = Unicode.Scalar(v) else { return nil }
                            value.unicodeScalars.append(s)
                            i = line.index(i, offsetBy: 4)
                        default: return nil
                        }
                    } else if c == "\"" {
                        closed = true
                        i = line.index(after: i)
                        break
                    } else {
                        value.append(c)
                    }
                    i = line.index(after: i)
                }
                guard closed else { return nil }
            } else {
                let end = line[i...].firstIndex(of: " ") ?? line.endIndex
                value = String(line[i..<end])
                guard !value.contains("\""), !value.contains("=") else { return nil }
                i = end
            }
            out.append((key, value))
            if i < line.endIndex {
                guard line[i] == " " else { return nil }
                i = line.index(after: i)
            }
        }
        return out
    }
}
