import Foundation
import KianaTestSupport
import Testing

/// A node serving while a large upload is embedded: it answers, finds what is taught meanwhile,
/// and stops promptly. Timed, so `make test` runs this suite on its own (decision 114).
@Suite(.serialized) struct UploadLoadTests {
    /// While a large upload is embedded, the node keeps answering: /health, keyword and hybrid
    /// search each answer at once (before, they waited for the whole upload's embedding, which
    /// took the few shared store threads), and the upload's chunks are found by keyword meanwhile.
    @Test(.needsModels) func searchAndHealthAnswerWhileAnUploadIsEmbedded() async throws {
        guard Models.hasMiniLM else {
            if Shared.isCI { Issue.record("the models are missing from \(Models.directory)") }
            return
        }
        let served = try await ServeTests.Served.start()
        defer { served.close() }
        let u = served.url
        var r = try await RestAPITests.call(u + "/api/v1/knowledge", method: "POST", body: #"{"text":"The spare key hangs behind the blue door."}"#)
        #expect(r.code == 201)
        // 300 sections of about 700 characters: 300 chunks to embed.
        var doc = ""
        for i in 0..<300 {
            doc += "## Section \(i)\n\n" + (0..<60).map { "marker\(i) word\($0)" }.joined(separator: " ") + ".\n\n"
        }
        let body = String(decoding: try JSONSerialization.data(withJSONObject: ["files": [["name": "big.md", "text": doc]], "stream": false]), as: UTF8.self)
        let started = Date()
        async let upload = RestAPITests.call(u + "/api/v1/ingest", method: "POST", body: body, seconds: 900)
        var probes: [(what: String, seconds: Double)] = []
        var sawChunks = false
        try await Task.sleep(for: .seconds(2))
        // Once the upload's chunks are written (its last section is found by keyword), a fact
        // taught meanwhile is found by meaning at once (no word in common with the question),
        // though the upload's chunks wait to be embedded before it.
        let written = try await eventually(120, every: .milliseconds(200)) {
            ((try await RestAPITests.call(u + "/api/v1/search?mode=keyword&q=marker299").json["hits"] as? [[String: Any]]) ?? []).isEmpty == false
        }
        #expect(written, "the upload's chunks were not written")
        r = try await RestAPITests.call(u + "/api/v1/knowledge", method: "POST", body: #"{"text":"My dentist appointment is on Thursday at 3pm with Dr. Okonkwo."}"#)
        let dentist = try #require(r.json["id"] as? String, "\(r.body)")
        let backlog = try await kiana(["index", "status", "--json", "--data-dir", served.dir.path])
        let waitingThen = ((try? JSONSerialization.jsonObject(with: Data(backlog.out.utf8))) as? [String: Any])?["waiting"] as? Int ?? 0
        r = try await RestAPITests.call(u + "/api/v1/search?mode=vector&k=5&q=" + "when is my appointment with the tooth doctor".addingPercentEncoding(withAllowedCharacters: .urlQueryAllowed)!)
        #expect(((r.json["hits"] as? [[String: Any]]) ?? []).contains { $0["id"] as? String == dentist }, "waiting: \(waitingThen); \(r.body.prefix(400))")
        #expect(waitingThen > 8, "the upload's backlog was gone before the fact was taught (\(waitingThen) waiting): nothing shown")
        // Probes until the upload is done (it reports through `upload` below; its chunks are all
        // written before it embeds, so the last section is findable once writing is over).
        while Date().timeIntervalSince(started) < 600 {
            for (what, path) in [
                ("health", "/health"), ("keyword", "/api/v1/search?mode=keyword&q=marker299"), ("hybrid", "/api/v1/search?q=spare%20key"),
            ] {
                let t = Date()
                let p = try await RestAPITests.call(u + path, seconds: 120)
                probes.append((what, Date().timeIntervalSince(t)))
                #expect(p.code == 200, "\(what): \(p.code) \(p.body.prefix(200))")
                if what == "keyword", (p.json["hits"] as? [[String: Any]])?.isEmpty == false { sawChunks = true }
            }
            let waiting = try await kiana(["index", "status", "--json", "--data-dir", served.dir.path])
            let json = (try? JSONSerialization.jsonObject(with: Data(waiting.out.utf8))) as? [String: Any]
            if sawChunks, (json?["pending"] as? Int ?? json?["waiting"] as? Int ?? 0) == 0 { break }
            try await Task.sleep(for: .milliseconds(500))
        }
        let done = try await upload
        let total = Date().timeIntervalSince(started)
        #expect(done.code == 200 && (done.json["embedded"] as? Int ?? 0) >= 1, "\(done.code) \(done.body.prefix(300))")
        let slow = probes.filter { $0.seconds > 5 }
        let p90 = percentile(probes.map(\.seconds), 0.9)
        print("rest: \(probes.count) probes while a 300-chunk upload was embedded (\(String(format: "%.1f", total)) s): slowest \(String(format: "%.2f", probes.map(\.seconds).max() ?? 0)) s")
        #expect(probes.count >= 6, "only \(probes.count) probes during the upload (\(total) s): it was too quick to show anything")
        #expect(slow.isEmpty && p90 < 1, "probes while the upload was embedded: p90 \(p90) s, over 5 s: \(slow)")
        #expect(sawChunks, "the upload's chunks were not found by keyword while it was embedded")
        // Once embedded, the chunks are found by meaning too.
        r = try await RestAPITests.call(u + "/api/v1/search?mode=vector&q=marker150%20word12&k=20")
        #expect(((r.json["hits"] as? [[String: Any]]) ?? []).contains { ($0["source"] as? String ?? "").contains("big.md#") }, "\(r.body.prefix(300))")
    }

    /// SIGTERM while an upload is embedded: the node stops within its shutdown bound (the
    /// upload's embedding ends after the batch at hand; before, it waited for all of it), exits
    /// 0, and after a restart the rest is embedded.
    @Test(.needsModels) func anUploadBeingEmbeddedDoesNotHoldUpShutdown() async throws {
        guard Models.hasMiniLM else {
            if Shared.isCI { Issue.record("the models are missing from \(Models.directory)") }
            return
        }
        let dir = try TempDir()
        defer { dir.cleanup() }
        #expect(try await kiana(["init", "--data-dir", dir.path]).status == 0)
        var node = try ServeTests.Running.loopback(dir.path)
        defer { if node.process.isRunning { node.process.terminate() } }
        let port = try #require(await node.waitForPort(), "\(node.text)")
        var doc = ""
        for i in 0..<300 { doc += "## Section \(i)\n\n" + (0..<60).map { "marker\(i) word\($0)" }.joined(separator: " ") + ".\n\n" }
        let body = String(decoding: try JSONSerialization.data(withJSONObject: ["files": [["name": "big.md", "text": doc]], "stream": false]), as: UTF8.self)
        async let upload = RestAPITests.call("http://127.0.0.1:\(port)/api/v1/ingest", method: "POST", body: body, seconds: 600)
        // Stopped once the embedding is under way (some chunks have vectors, most do not).
        func waiting() async throws -> Int {
            let s = try await kiana(["index", "status", "--json", "--data-dir", dir.path])
            return ((try? JSONSerialization.jsonObject(with: Data(s.out.utf8))) as? [String: Any])?["waiting"] as? Int ?? -1
        }
        #expect(try await eventually(120, every: .milliseconds(200)) { let w = try await waiting(); return w > 0 && w < 290 })
        let t = Date()
        node.process.terminate()
        #expect(node.waitForExit(timeout: 40))
        let stopped = Date().timeIntervalSince(t)
        print("rest: SIGTERM during an upload's embedding: stopped in \(String(format: "%.1f", stopped)) s, \(try await waiting()) chunks still waiting")
        #expect(node.process.terminationStatus == 0, "\(node.text.suffix(2000))")
        #expect(stopped < 30, "stopped after \(stopped) s")
        _ = try await upload
        // Started again, the indexing service embeds the rest.
        node = try ServeTests.Running.loopback(dir.path)
        _ = try #require(await node.waitForPort(), "\(node.text)")
        let drained = try await eventually(300, every: .seconds(1)) { try await waiting() == 0 }
        let left = try await waiting()
        #expect(drained, "still waiting: \(left)")
        node.process.interrupt()
        #expect(node.waitForExit())
    }

}
