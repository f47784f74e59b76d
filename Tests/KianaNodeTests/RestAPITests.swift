import Foundation
import KianaTestSupport
import Testing

/// KI_ana's own REST API on a real `kiana serve`, through curl: knowledge CRUD, search, ask
/// streamed as Server-Sent Events with citations in the final event, ledger status, readiness
/// and Prometheus metrics.
@Suite struct RestAPITests {
    struct Reply { var code: Int; var body: String; var json: [String: Any] }

    static func call(_ url: String, method: String = "GET", body: String? = nil, seconds: Int = 60) async throws -> Reply {
        var args = ["-s", "-N", "-m", "\(seconds)", "-w", "\n%{http_code}", "-X", method]
        if body != nil { args += ["-H", "Content-Type: application/json", "--data-binary", "@-"] }
        let r = try await runProcess("/usr/bin/curl", args + [url], input: body.map { Data($0.utf8) })
        let text = String(decoding: r.out, as: UTF8.self)
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        let b = lines.dropLast().joined(separator: "\n")
        return Reply(code: Int(lines.last ?? "") ?? 0, body: b,
                     json: (try? JSONSerialization.jsonObject(with: Data(b.utf8)) as? [String: Any]) ?? [:])
    }

    @Test func knowledgeSearchAskLedgerReadyMetrics() async throws {
        guard Models.hasSmolLM && Models.hasMiniLM else {
            if Shared.isCI { Issue.record("the models are missing from \(Models.directory)") }
            return
        }
        let tmp = try TempDir(); defer { tmp.cleanup() }
        #expect(try await kiana(["init", "--data-dir", tmp.path]).status == 0)
        let node = try ServeTests.Running.loopback(tmp.path)
        defer { node.process.interrupt(); _ = node.waitForExit() }
        let port = try #require(await node.waitForPort(), "\(node.text)")
        let u = "http://127.0.0.1:\(port)"

        var r = try await Self.call(u + "/ready")
        #expect(r.code == 503 && r.json["store"] as? Bool == true && r.json["model"] as? Bool == false, "\(r.body)")
        r = try await Self.call(u + "/api/v1/knowledge", method: "POST", body: #"{"text":"The bike lock code is 4711.","tags":["home"]}"#)
        #expect(r.code == 201)
        let id = try #require(r.json["id"] as? String)
        r = try await Self.call(u + "/api/v1/knowledge", method: "POST", body: #"{"text":"Our wifi password is Sunflower42."}"#)
        let other = try #require(r.json["id"] as? String)
        r = try await Self.call(u + "/api/v1/knowledge", method: "POST", body: #"{"text":"  "}"#)
        #expect(r.code == 400)
        r = try await Self.call(u + "/api/v1/knowledge/\(id)")
        #expect(r.json["text"] as? String == "The bike lock code is 4711." && r.json["tags"] as? [String] == ["home"])
        r = try await Self.call(u + "/api/v1/knowledge/ffffffff")
        #expect(r.code == 404)
        r = try await Self.call(u + "/api/v1/search?q=bike%20lock&k=1")
        #expect((r.json["hits"] as? [[String: Any]])?.first?["id"] as? String == id, "\(r.body)")
        r = try await Self.call(u + "/api/v1/search?q=password&mode=keyword&tag=home")
        #expect((r.json["hits"] as? [[String: Any]])?.isEmpty == true, "tag filter: \(r.body)")
        r = try await Self.call(u + "/api/v1/search?q=x&k=500")
        #expect(r.code == 400)

        // Ask, streamed: token events, then a done event whose citation is the item.
        r = try await Self.call(u + "/api/v1/ask", method: "POST", body: #"{"question":"What is the bike lock code?","temperature":0,"max_tokens":40}"#, seconds: 240)
        #expect(r.code == 200)
        let events = r.body.components(separatedBy: "\n\n").filter { !$0.isEmpty }
        #expect(events.filter { $0.hasPrefix("event: token") }.count > 1, "\(r.body)")
        let done = try #require(events.last { $0.hasPrefix("event: done") })
        let data = try #require(done.split(separator: "\n").first { $0.hasPrefix("data: ") }.map { String($0.dropFirst(6)) })
        let final = try #require(try JSONSerialization.jsonObject(with: Data(data.utf8)) as? [String: Any])
        #expect((final["citations"] as? [[String: Any]])?.first?["id"] as? String == id, "\(final)")
        let conversation = try #require(final["conversation"] as? String)
        #expect(try await kiana(["conversations", conversation, "--data-dir", tmp.path]).out.contains("What is the bike lock code?"))
        r = try await Self.call(u + "/api/v1/conversations")
        #expect((r.json["conversations"] as? [[String: Any]])?.first?["id"] as? String == conversation, "\(r.body)")
        r = try await Self.call(u + "/api/v1/conversations/\(conversation)")
        let turns = r.json["messages"] as? [[String: Any]] ?? []
        #expect(turns.map { $0["role"] as? String } == ["user", "assistant"] && (turns.last?["citations"] as? [String]) == [id], "\(r.body)")
        #expect(try await Self.call(u + "/api/v1/conversations/nope").code == 404)

        r = try await Self.call(u + "/ready")
        #expect(r.code == 200 && r.json["ready"] as? Bool == true, "\(r.body)")
        r = try await Self.call(u + "/api/v1/knowledge/\(other)", method: "DELETE")
        #expect(r.json["forgotten"] as? String == other)
        r = try await Self.call(u + "/api/v1/knowledge")
        #expect(r.json["total"] as? Int == 1)
        r = try await Self.call(u + "/api/v1/ledger")
        #expect(r.json["height"] as? Int == 3 && r.json["items"] as? Int == 1, "\(r.body)")

        let m = try await Self.call(u + "/metrics").body
        #expect(m.contains(#"kiana_http_requests_total{method="POST",route="/api/v1/knowledge",status="201"} 2"#), "\(m)")
        #expect(m.contains(#"kiana_http_requests_total{method="GET",route="/api/v1/knowledge/{id}",status="404"} 1"#), "\(m)")
        #expect(m.contains("kiana_ledger_height 3") && m.contains("kiana_knowledge_items 1"))
        let tokens = m.split(separator: "\n").first { $0.hasPrefix("kiana_tokens_generated_total ") }.flatMap { Int($0.split(separator: " ").last!) } ?? 0
        #expect(tokens > 0)
        #expect(m.contains(#"kiana_http_request_duration_seconds_count{method="POST",route="/api/v1/ask"} 1"#))
    }

    @Test("The web UI's files are served from a fixed table; no path reaches the file system")
    func webUIAndNoPathTraversal() async throws {
        let tmp = try TempDir(); defer { tmp.cleanup() }
        #expect(try await kiana(["init", "--data-dir", tmp.path]).status == 0)
        let node = try ServeTests.Running.loopback(tmp.path)
        defer { node.process.interrupt(); _ = node.waitForExit() }
        let port = try #require(await node.waitForPort(), "\(node.text)")
        let u = "http://127.0.0.1:\(port)"
        let page = try await Self.call(u + "/")
        #expect(page.code == 200 && page.body.contains("<script src=\"/ui/app.js\">") && !page.body.contains("https://"))
        let js = try await Self.call(u + "/ui/app.js")
        #expect(js.code == 200 && js.body.contains("/api/v1/ask"))
        #expect(try await Self.call(u + "/ui/style.css").code == 200)
        // The OpenAPI document is served, and every route it lists exists (no 404/405).
        let spec = try await Self.call(u + "/openapi.json")
        let paths = try #require(spec.json["paths"] as? [String: [String: Any]], "\(spec.body.prefix(200))")
        #expect(paths.count >= 18)
        for (path, ops) in paths where !path.contains("{") {
            for method in ops.keys {
                let r = try await Self.call(u + path, method: method.uppercased(), body: method == "post" ? "{}" : nil)
                #expect(r.code != 404 && r.code != 405 && r.code != 0, "\(method) \(path) → \(r.code)")
            }
        }
        for path in ["/ui/../../../../etc/passwd", "/ui/%2e%2e/%2e%2e/etc/passwd", "/ui/..%2fPackage.swift", "/ui/index.html/../../Package.swift",
                     "/Package.swift", "/ui/", "/ui/app.js%00.png"] {
            let r = try await runProcess("/usr/bin/curl", ["-s", "--path-as-is", "-o", "/dev/null", "-w", "%{http_code}", u + path])
            let code = String(decoding: r.out, as: UTF8.self)
            #expect(code == "404" || code == "400", "\(path) → \(code)")
        }
    }
}
