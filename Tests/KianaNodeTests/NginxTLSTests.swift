import Foundation
import KianaTestSupport
import Testing

/// deploy/nginx.conf run for real: Debian's nginx with a certificate this test makes, in front of
/// a real `kiana serve`, checked through HTTPS with curl.
@Suite struct NginxTLSTests {
    static let nginx = "/usr/sbin/nginx"

    /// The shipped site file with this test's ports, certificate and node swapped in.
    static func site(http: Int, https: Int, node: Int, cert: String, key: String) throws -> String {
        let shipped = try String(contentsOf: Shared.packageRoot.appendingPathComponent("deploy/nginx.conf"), encoding: .utf8)
        var s = shipped
        for (from, to) in [
            ("listen 80;", "listen 127.0.0.1:\(http);"), ("listen [::]:80;", ""), ("listen 443 ssl;", "listen 127.0.0.1:\(https) ssl;"),
            ("listen [::]:443 ssl;", ""), ("/etc/ssl/kiana/fullchain.pem", cert), ("/etc/ssl/kiana/privkey.pem", key),
            ("127.0.0.1:8000", "127.0.0.1:\(node)"),
        ] {
            #expect(s.contains(from), "deploy/nginx.conf no longer has \(from)")
            s = s.replacingOccurrences(of: from, with: to)
        }
        return s
    }

    struct Curl {
        var base: String
        var token: String
        /// Status, headers and body of one request through nginx (certificate checked against the test's CA).
        func call(_ path: String, _ extra: [String] = [], auth: Bool = true, ca: String) async throws -> (code: Int, headers: String, body: String) {
            var args = ["-s", "-m", "20", "--cacert", ca, "-D", "-", "-o", "-"] + extra
            if auth { args += ["-H", "Authorization: Bearer \(token)"] }
            let r = try await runProcess("/usr/bin/curl", args + [base + path])
            let text = String(decoding: r.out, as: UTF8.self)
            let parts = text.components(separatedBy: "\r\n\r\n")
            let status = parts.first?.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0
            return (status, parts.first ?? "", parts.dropFirst().joined(separator: "\r\n\r\n"))
        }
    }

    @Test func theShippedProxyServesTheNodeOverTLS() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: Self.nginx), "nginx is missing (make setup installs nginx-light)")
        let dir = try TempDir()
        defer { dir.cleanup() }
        // A CA-less self-signed certificate for 127.0.0.1 and localhost.
        let cert = dir.path + "/cert.pem"
        let key = dir.path + "/key.pem"
        let made = try await runProcess(
            "/usr/bin/openssl",
            [
                "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", key, "-out", cert,
            ])
        #expect(made.status == 0, "\(String(decoding: made.err, as: UTF8.self))")

        let token = "nginx-test-token-0123456789"
        let node = try ServeTests.Running(
            ["serve", "--data-dir", dir.path + "/node", "--port", "0", "--p2p-port", "0", "--discovery", "off", "--token", token])
        defer { if node.process.isRunning { node.process.interrupt() } }
        let nodePort = try #require(await node.waitForPort(), "\(node.text)")

        let (httpPort, httpsPort) = (LLMCLITests.freePort(), LLMCLITests.freePort())
        let site = dir.path + "/kiana.conf"
        try Data(try Self.site(http: httpPort, https: httpsPort, node: nodePort, cert: cert, key: key).utf8).write(to: URL(fileURLWithPath: site))
        let main = """
            pid \(dir.path)/nginx.pid;
            error_log \(dir.path)/error.log;
            events { worker_connections 64; }
            http {
                access_log off;
                client_body_temp_path \(dir.path)/body;
                proxy_temp_path \(dir.path)/proxy;
                fastcgi_temp_path \(dir.path)/fastcgi;
                uwsgi_temp_path \(dir.path)/uwsgi;
                scgi_temp_path \(dir.path)/scgi;
                include \(site);
            }
            """
        try Data(main.utf8).write(to: URL(fileURLWithPath: dir.path + "/nginx.conf"))
        let check = try await runProcess(Self.nginx, ["-t", "-p", dir.path, "-c", dir.path + "/nginx.conf"])
        #expect(check.status == 0, "nginx -t: \(String(decoding: check.err, as: UTF8.self))")
        let proxy = try ChildProcess(Self.nginx, ["-p", dir.path, "-c", dir.path + "/nginx.conf", "-g", "daemon off; master_process off;"])
        defer { proxy.signal(SIGQUIT) }
        let c = Curl(base: "https://127.0.0.1:\(httpsPort)", token: token)
        var up = false
        for _ in 0..<100 where !up {
            up = (try? await c.call("/health", ca: cert).code) == 200
            if !up { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(up, "nginx did not answer: \(String(decoding: FileManager.default.contents(atPath: dir.path + "/error.log") ?? Data(), as: UTF8.self))")

        // Plain HTTP is redirected; HTTPS carries HSTS.
        let plain = try await runProcess("/usr/bin/curl", ["-s", "-m", "10", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}", "http://127.0.0.1:\(httpPort)/health"])
        let redirect = String(decoding: plain.out, as: UTF8.self)
        #expect(redirect.hasPrefix("301 https://127.0.0.1"), "\(redirect)")
        let health = try await c.call("/health", ca: cert)
        #expect(health.headers.lowercased().contains("strict-transport-security: max-age=63072000"))
        #expect(health.headers.lowercased().contains("x-content-type-options: nosniff"))
        #expect(!health.headers.lowercased().contains("server: nginx/"))
        // TLS 1.2 and 1.3 only.
        #expect(try await runProcess("/usr/bin/curl", ["-s", "-m", "10", "--cacert", cert, "--tls-max", "1.1", "-o", "/dev/null", c.base + "/health"]).status != 0)
        #expect(try await runProcess("/usr/bin/curl", ["-s", "-m", "10", "--cacert", cert, "--tlsv1.2", "--tls-max", "1.2", "-o", "/dev/null", c.base + "/health"]).status == 0)

        // The token is required through the proxy (the node sees every request from loopback).
        #expect(try await c.call("/api/v1/knowledge", auth: false, ca: cert).code == 401)
        #expect(try await c.call("/api/v1/knowledge", ca: cert).code == 200)
        // Metrics and the control surface are not served publicly; the node still has them.
        for path in ["/metrics", "/metrics/", "//metrics/", "/control/status"] { #expect(try await c.call(path, ca: cert).code == 404, "\(path)") }
        #expect(try await c.call("/control/status", ca: cert).code == 404)
        let direct = try await runProcess("/usr/bin/curl", ["-s", "-m", "10", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Authorization: Bearer \(token)", "http://127.0.0.1:\(nodePort)/metrics"])
        #expect(String(decoding: direct.out, as: UTF8.self) == "200")

        // The event stream passes unbuffered: a write shows up on it at once.
        let events = try ChildProcess(
            "/usr/bin/curl", ["-s", "-N", "-m", "30", "--cacert", cert, "-H", "Authorization: Bearer \(token)", c.base + "/api/v1/events"])
        defer { events.signal(SIGTERM) }
        #expect(await events.waitFor("event: hello", timeout: 30) != nil, "\(events.output)")
        let post = try await c.call(
            "/api/v1/knowledge", ["-X", "POST", "-H", "Content-Type: application/json", "-d", #"{"text":"the proxy passes events at once"}"#], ca: cert)
        #expect(post.code == 201 || post.code == 200, "\(post.body)")
        let written = Date()
        let line = await events.waitFor("event: block", timeout: 5)
        #expect(line != nil, "no block event through the proxy")
        #expect(Date().timeIntervalSince(written) < 3)

        // Streamed generation arrives token by token through the proxy, not in one piece at the
        // end (answers to questions stream the same way; a trusted answer quoted from the
        // knowledge is one chunk, so raw generation is what shows the proxy does not buffer).
        if Models.hasSmolLM {
            let gen = try ChildProcess(
                "/usr/bin/curl",
                [
                    "-s", "-N", "-m", "120", "--cacert", cert, "-H", "Authorization: Bearer \(token)", "-H", "Content-Type: application/json",
                    "-d", #"{"model":"smollm2-135m-instruct","prompt":"Count from one to ten:","stream":true,"options":{"num_predict":24}}"#,
                    c.base + "/api/generate",
                ])
            var tokenTimes: [Date] = []
            var sawDone = false
            while let l = await gen.nextLine(timeout: 120) {
                if l.contains(#""done":false"#) { tokenTimes.append(Date()) }
                if l.contains(#""done":true"#) {
                    sawDone = true
                    break
                }
            }
            #expect(sawDone && tokenTimes.count >= 5, "\(tokenTimes.count) tokens: \(gen.output.prefix(500))")
            let spread = (tokenTimes.last ?? Date()).timeIntervalSince(tokenTimes.first ?? Date())
            // Buffered by the proxy, every line would arrive within a few milliseconds at the end.
            #expect(spread > 0.05, "all \(tokenTimes.count) tokens arrived within \(spread) s: the proxy buffers the stream")
            print("nginx: \(tokenTimes.count) streamed tokens arrived over \(String(format: "%.2f", spread)) s")
            gen.signal(SIGTERM)
            // An answer to a question streams through too (event: token … event: done).
            let ask = try await c.call(
                "/api/v1/ask", ["-N", "-m", "120", "-X", "POST", "-H", "Content-Type: application/json", "-d", #"{"question":"What does the proxy pass?"}"#],
                ca: cert)
            #expect(ask.code == 200 && ask.body.contains("event: token") && ask.body.contains("event: done"), "\(ask.body.prefix(300))")
        } else if Shared.isCI {
            Issue.record("the language model is missing from \(Models.directory)")
        }

        // An upload streams through and its progress events arrive; too large a body is refused by nginx.
        let text = String(repeating: "Proxies pass uploads through to the node. ", count: 2000)
        let upload = try await c.call(
            "/api/v1/ingest", ["-N", "-m", "120", "-X", "POST", "-H", "Content-Type: application/json", "-d", #"{"files":[{"name":"notes.txt","text":"\#(text)"}]}"#],
            ca: cert)
        #expect(upload.code == 200, "\(upload.body.prefix(300))")
        #expect(upload.body.contains("event: progress") && upload.body.contains("event: done"), "\(upload.body.prefix(300))")
        let big = dir.path + "/big.json"
        try Data(count: 33 << 20).write(to: URL(fileURLWithPath: big))
        #expect(try await c.call("/api/v1/ingest", ["-X", "POST", "-H", "Content-Type: application/json", "--data-binary", "@" + big], ca: cert).code == 413)
        node.process.interrupt()
        #expect(node.waitForExit())
    }
}
