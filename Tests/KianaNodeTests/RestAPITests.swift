import Foundation
import KianaTestSupport
import Testing

/// KI_ana's own REST API on a real `kiana serve`, through curl: knowledge CRUD, search, ask
/// streamed as Server-Sent Events with citations in the final event, ledger status, readiness
/// and Prometheus metrics.
@Suite struct RestAPITests {
    struct Reply {
        var code: Int
        var body: String
        var json: [String: Any]
    }

    static func call(_ url: String, method: String = "GET", body: String? = nil, headers: [String] = [], seconds: Int = 60) async throws -> Reply {
        var args = ["-s", "-N", "-m", "\(seconds)", "-w", "\n%{http_code}", "-X", method] + headers.flatMap { ["-H", $0] }
        if body != nil { args += ["-H", "Content-Type: application/json", "--data-binary", "@-"] }
        let r = try await runProcess("/usr/bin/curl", args + [url], input: body.map { Data($0.utf8) })
        let text = String(decoding: r.out, as: UTF8.self)
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        let b = lines.dropLast().joined(separator: "\n")
        return Reply(
            code: Int(lines.last ?? "") ?? 0, body: b,
            json: (try? JSONSerialization.jsonObject(with: Data(b.utf8)) as? [String: Any]) ?? [:])
    }

    @Test(.needsModels) func knowledgeSearchAskLedgerReadyMetrics() async throws {
        guard Models.hasSmolLM && Models.hasMiniLM else {
            if Shared.isCI { Issue.record("the models are missing from \(Models.directory)") }
            return
        }
        let served = try await ServeTests.Served.start()
        defer { served.close() }
        let (tmp, u) = (served.dir, served.url)

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

        // Ask, streamed: the checked answer as a token event, then a done event whose citation
        // is the item and whose supporting sentence is the item's.
        r = try await Self.call(
            u + "/api/v1/ask", method: "POST", body: #"{"question":"What is the bike lock code?","temperature":0,"max_tokens":40}"#, seconds: 240)
        #expect(r.code == 200)
        let events = r.body.components(separatedBy: "\n\n").filter { !$0.isEmpty }
        #expect(events.contains { $0.hasPrefix("event: token") && $0.contains("4711") }, "\(r.body)")
        let done = try #require(events.last { $0.hasPrefix("event: done") })
        let data = try #require(done.split(separator: "\n").first { $0.hasPrefix("data: ") }.map { String($0.dropFirst(6)) })
        let final = try #require(try JSONSerialization.jsonObject(with: Data(data.utf8)) as? [String: Any])
        #expect((final["citations"] as? [[String: Any]])?.first?["id"] as? String == id, "\(final)")
        #expect((final["support"] as? [[String: Any]])?.first?["text"] as? String == "The bike lock code is 4711.", "\(final)")
        #expect(final["abstained"] as? Bool == false, "\(final)")
        let conversation = try #require(final["conversation"] as? String)
        #expect(try await kiana(["conversations", conversation, "--data-dir", tmp.path]).out.contains("What is the bike lock code?"))
        r = try await Self.call(u + "/api/v1/conversations")
        #expect((r.json["conversations"] as? [[String: Any]])?.first?["id"] as? String == conversation, "\(r.body)")
        r = try await Self.call(u + "/api/v1/conversations/\(conversation)")
        let turns = r.json["messages"] as? [[String: Any]] ?? []
        #expect(turns.map { $0["role"] as? String } == ["user", "assistant"] && (turns.last?["citations"] as? [String]) == [id], "\(r.body)")
        // Reopened, the answer carries what it showed: the numbered citations and the sentence that supports it.
        let shown = turns.last ?? [:]
        #expect(
            (shown["cited"] as? [[String: Any]])?.first.map { [$0["number"] as? Int == 1, $0["id"] as? String == id] } == [true, true]
                && (shown["support"] as? [[String: Any]])?.first?["text"] as? String == "The bike lock code is 4711."
                && shown["abstained"] as? Bool == false && (turns.first?["cited"] as? [Any])?.isEmpty == true, "\(r.body)")
        #expect(try await Self.call(u + "/api/v1/conversations/nope").code == 404)
        // Deleted, what was asked and answered is gone from the list, from reading, and from the
        // database file's bytes (not left in free pages); the knowledge it cited stays.
        let second = try await Self.call(u + "/api/v1/ask", method: "POST", body: #"{"question":"Where is Zanzibar-9137?","stream":false,"max_tokens":8}"#, seconds: 240)
        let secondID = try #require(second.json["conversation"] as? String, "\(second.body)")
        r = try await Self.call(u + "/api/v1/conversations/\(conversation)", method: "DELETE")
        #expect(r.code == 204, "\(r.code) \(r.body)")
        #expect(try await Self.call(u + "/api/v1/conversations/\(conversation)").code == 404)
        #expect(try await Self.call(u + "/api/v1/conversations/\(conversation)", method: "DELETE").code == 404)
        let deletedByCLI = try await kiana(["conversations", String(secondID.prefix(8)), "--delete", "--data-dir", tmp.path])
        #expect(deletedByCLI.status == 0 && deletedByCLI.out.contains("Deleted conversation \(secondID)"), "\(deletedByCLI.out)\(deletedByCLI.err)")
        r = try await Self.call(u + "/api/v1/conversations")
        #expect((r.json["conversations"] as? [[String: Any]])?.isEmpty == true, "\(r.body)")
        _ = try await kiana(["status", "--data-dir", tmp.path])
        let fileBytes = ["/kiana.sqlite", "/kiana.sqlite-wal"].compactMap { FileManager.default.contents(atPath: tmp.path + $0) }
        #expect(!fileBytes.contains { $0.range(of: Data("Zanzibar-9137".utf8)) != nil }, "the deleted question is still in the database file")
        #expect(try await Self.call(u + "/api/v1/knowledge/\(id)").code == 200)

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
        // The P2P port's admission counters (the node serves the link port here).
        #expect(m.contains(#"kiana_p2p_connections{pool="members"} 0"#) && m.contains(#"kiana_p2p_refused_total{reason="pool-full"} 0"#), "\(m)")
        let tokens = m.split(separator: "\n").first { $0.hasPrefix("kiana_tokens_generated_total ") }.flatMap { Int($0.split(separator: " ").last!) } ?? 0
        #expect(tokens > 0)
        #expect(m.contains(#"kiana_http_request_duration_seconds_count{method="POST",route="/api/v1/ask"} 2"#))
    }

    static func events(_ body: String) -> [(name: String, data: [String: Any])] {
        body.components(separatedBy: "\n\n").compactMap { block in
            let lines = block.split(separator: "\n")
            guard let name = lines.first(where: { $0.hasPrefix("event: ") })?.dropFirst(7),
                let data = lines.first(where: { $0.hasPrefix("data: ") })?.dropFirst(6)
            else { return nil }
            return (String(name), (try? JSONSerialization.jsonObject(with: Data(data.utf8)) as? [String: Any]) ?? [:])
        }
    }

    @Test("The live peers event comes when the peers change, not on every tick of the stream")
    func peersEventOnlyOnChange() async throws {
        let served = try await ServeTests.Served.start()
        defer { served.close() }
        // A peer address nothing answers at: the peer list is not empty and does not change.
        #expect(try await kiana(["peers", "add", "127.0.0.1:9", "--data-dir", served.dir.path]).status == 0)
        let live = try ChildProcess("/usr/bin/curl", ["-s", "-N", "-m", "60", served.url + "/api/v1/events"])
        defer { live.signal(SIGTERM) }
        #expect(await live.waitFor("127.0.0.1:9", timeout: 30) != nil, "\(live.output)")
        // The stream looks about four times a second; the same list must not be sent again.
        try await Task.sleep(for: .seconds(4))
        let peers = Self.events(live.output + "\n\n").filter { $0.name == "peers" }
        #expect((1...2).contains(peers.count), "\(peers.count) peers events in 4 s: \(live.output.suffix(600))")
    }

    @Test("Edit, ingest with progress, ledger explorer, device, live events; bad input is refused with a code")
    func editIngestLedgerDeviceEvents() async throws {
        let served = try await ServeTests.Served.start()
        defer { served.close() }
        let (port, u) = (served.port, served.url)

        // Live events: a stream opened now (its hello received) sees the knowledge written next.
        let live = try ChildProcess("/usr/bin/curl", ["-s", "-N", "-m", "60", u + "/api/v1/events"])
        defer { live.signal(SIGTERM) }
        #expect(await live.waitFor("event: hello", timeout: 30) != nil, "\(live.output)")
        var r = try await Self.call(u + "/api/v1/knowledge", method: "POST", body: #"{"text":"The spare key is under the blue pot.","tags":["home"]}"#)
        let id = try #require(r.json["id"] as? String, "\(r.body)")
        // The block event comes first, then its knowledge event naming the item.
        #expect(await live.waitFor("\"item\":\"\(id)\"", timeout: 30) != nil, "\(live.output)")
        let stream = Self.events(live.output + "\n\n")
        #expect(stream.first?.name == "hello")
        #expect(stream.contains { $0.name == "knowledge" && $0.data["item"] as? String == id && $0.data["op"] as? String == "put" }, "\(stream)")
        #expect(stream.contains { $0.name == "block" && $0.data["height"] as? Int == 1 })
        // Resuming from a height replays what was missed.
        let replay = try ChildProcess("/usr/bin/curl", ["-s", "-N", "-m", "60", "-H", "Last-Event-ID: 0", u + "/api/v1/events"])
        defer { replay.signal(SIGTERM) }
        #expect(await replay.waitFor("\"item\":\"\(id)\"", timeout: 30) != nil, "\(replay.output)")
        #expect(Self.events(replay.output + "\n\n").contains { $0.name == "knowledge" && $0.data["item"] as? String == id })
        // Its hello names the height it resumes from with that block's hash, not the head's.
        let genesis = try await Self.call(u + "/api/v1/ledger/blocks/0")
        let hello = try #require(Self.events(replay.output + "\n\n").first { $0.name == "hello" }?.data)
        #expect(hello["height"] as? Int == 0 && hello["head"] as? String == genesis.json["hash"] as? String, "\(hello) \(genesis.body.prefix(200))")

        // Edit.
        r = try await Self.call(u + "/api/v1/knowledge/\(id)", method: "PUT", body: #"{"text":"The spare key is under the red pot.","title":"Key"}"#)
        #expect(
            r.code == 200 && r.json["text"] as? String == "The spare key is under the red pot." && r.json["title"] as? String == "Key"
                && r.json["tags"] as? [String] == ["home"], "\(r.body)")
        r = try await Self.call(u + "/api/v1/knowledge/\(id)", method: "PUT", body: #"{"text":"   "}"#)
        #expect(r.code == 400 && (r.json["error"] as? [String: Any])?["code"] as? String == "invalid-input", "\(r.body)")
        r = try await Self.call(u + "/api/v1/knowledge/abcdef0123", method: "PUT", body: #"{"text":"x"}"#)
        #expect(r.code == 404 && (r.json["error"] as? [String: Any])?["message"] as? String != nil, "\(r.body)")
        // Versions: GET names the entry that last changed the item as its ETag; a PUT sent with
        // an older one as If-Match (a second tab's stale form) is refused, and nothing changes.
        let head = try await runProcess("/usr/bin/curl", ["-s", "-D", "-", "-o", "/dev/null", u + "/api/v1/knowledge/\(id)"])
        let etag = String(decoding: head.out, as: UTF8.self).split(separator: "\r\n").first { $0.lowercased().hasPrefix("etag:") }
            .map { $0.dropFirst(5).trimmingCharacters(in: .whitespaces) }
        let current = try await Self.call(u + "/api/v1/knowledge/\(id)")
        #expect(etag == "\"\(current.json["entry"] as? String ?? "?")\"", "\(String(decoding: head.out, as: UTF8.self))")
        r = try await Self.call(u + "/api/v1/knowledge/\(id)", method: "PUT", body: #"{"title":"Tab B"}"#, headers: ["If-Match: \(etag ?? "")"])
        #expect(r.code == 200 && r.json["title"] as? String == "Tab B", "\(r.body)")
        r = try await Self.call(u + "/api/v1/knowledge/\(id)", method: "PUT", body: #"{"title":"Tab A"}"#, headers: ["If-Match: \(etag ?? "")"])
        #expect(r.code == 412 && (r.json["error"] as? [String: Any])?["code"] as? String == "changed", "\(r.code) \(r.body)")
        #expect(try await Self.call(u + "/api/v1/knowledge/\(id)").json["title"] as? String == "Tab B")
        // A save that changes nothing writes nothing: the version stays.
        let unchangedBefore = try await Self.call(u + "/api/v1/knowledge/\(id)").json["entry"] as? String
        r = try await Self.call(u + "/api/v1/knowledge/\(id)", method: "PUT", body: #"{"title":"Tab B"}"#)
        #expect(r.code == 200 && r.json["entry"] as? String == unchangedBefore && unchangedBefore != nil, "\(r.body)")
        r = try await Self.call(u + "/api/v1/knowledge/\(id)", method: "PUT", body: #"{"title":"Key"}"#, headers: ["If-Match: \"0\", *"])
        #expect(r.code == 400, "a list with * in it is not a version: \(r.code) \(r.body)")
        // Four tabs save at the same moment from the same version: exactly one gets through.
        let base = try await Self.call(u + "/api/v1/knowledge/\(id)").json["entry"] as? String ?? "?"
        let codes = try await withThrowingTaskGroup(of: Int.self) { group in
            for tab in 0..<4 {
                group.addTask {
                    try await Self.call(u + "/api/v1/knowledge/\(id)", method: "PUT", body: "{\"title\":\"Tab \(tab)\"}", headers: ["If-Match: \"\(base)\""]).code
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }.sorted()
        }
        #expect(codes == [200, 412, 412, 412], "\(codes)")
        r = try await Self.call(u + "/api/v1/knowledge/\(id)", method: "PUT", body: #"{"title":"Key"}"#, headers: ["If-Match: W/\"\(base)\""])
        #expect(r.code == 412, "a weak tag never matches: \(r.code) \(r.body)")
        r = try await Self.call(u + "/api/v1/knowledge/\(id)", method: "PUT", body: #"{"title":"Key"}"#, headers: ["If-Match: *"])
        #expect(r.code == 200 && r.json["title"] as? String == "Key", "\(r.body)")

        // Ingest uploaded files with streamed progress; the second upload of the same file changes nothing.
        let upload =
            ##"{"files":[{"name":"garden.md","text":"# Garden\n\nThe roses need water every Sunday morning.\n\n## Shed\n\nThe lawn mower lives in the shed."}],"tags":["garden"]}"##
        r = try await Self.call(u + "/api/v1/ingest", method: "POST", body: upload, seconds: 120)
        let ingest = Self.events(r.body)
        #expect(ingest.contains { $0.name == "progress" && $0.data["phase"] as? String == "reading" }, "\(r.body)")
        let report = try #require(ingest.last { $0.name == "done" }?.data, "\(r.body)")
        #expect(report["filesNew"] as? Int == 1 && (report["chunksAdded"] as? Int ?? 0) >= 1, "\(report)")
        r = try await Self.call(u + "/api/v1/search?q=roses%20water&mode=keyword&k=1")
        #expect(((r.json["hits"] as? [[String: Any]])?.first?["source"] as? String ?? "").contains("/uploads/garden.md#"), "\(r.body)")
        r = try await Self.call(u + "/api/v1/ingest", method: "POST", body: upload.replacingOccurrences(of: "{\"files\"", with: "{\"stream\":false,\"files\""))
        #expect(r.json["changed"] as? Bool == false && r.json["filesUnchanged"] as? Int == 1, "\(r.body)")
        // Another file of the same name is not taken as a new version unless the client says so:
        // 409 exists before anything is read or streamed, and the first file's knowledge stays.
        let other = ##"{"files":[{"name":"garden.md","text":"# Office\n\nThe office plants need water on Fridays."}]}"##
        r = try await Self.call(u + "/api/v1/ingest", method: "POST", body: other)
        #expect(r.code == 409 && (r.json["error"] as? [String: Any])?["code"] as? String == "exists"
            && ((r.json["error"] as? [String: Any])?["message"] as? String ?? "").contains("garden.md"), "\(r.code) \(r.body)")
        #expect((try await Self.call(u + "/api/v1/search?q=roses&mode=keyword").json["hits"] as? [Any])?.count == 1)
        r = try await Self.call(u + "/api/v1/ingest", method: "POST", body: other.replacingOccurrences(of: "{\"files\"", with: "{\"stream\":false,\"replace\":true,\"files\""))
        #expect(r.code == 200 && r.json["filesChanged"] as? Int == 1, "\(r.body)")
        #expect((try await Self.call(u + "/api/v1/search?q=roses&mode=keyword").json["hits"] as? [Any])?.count == 0)
        r = try await Self.call(u + "/api/v1/ingest", method: "POST", body: upload.replacingOccurrences(of: "{\"files\"", with: "{\"stream\":false,\"replace\":true,\"files\""))
        #expect(r.code == 200 && r.json["filesChanged"] as? Int == 1, "the garden again: \(r.body)")
        // While a `kiana ingest` holds this data directory's ingest lock, an upload is refused at
        // once (409), not left waiting on one of the node's few store threads; the node serves on.
        let holder = try ChildProcess(
            python3(),
            ["-c", "import fcntl, sys; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); print('locked', flush=True); sys.stdin.readline()",
             served.dir.path + "/ingest.lock"])
        #expect(await holder.nextLine() == "locked")
        r = try await Self.call(u + "/api/v1/ingest", method: "POST", body: upload.replacingOccurrences(of: "{\"files\"", with: "{\"stream\":false,\"files\""), seconds: 20)
        #expect(r.code == 409 && (r.json["error"] as? [String: Any])?["code"] as? String == "conflict", "\(r.code) \(r.body)")
        #expect(try await Self.call(u + "/health").code == 200)
        holder.write("\n")
        _ = await holder.wait()
        for bad in [
            #"{"files":[{"name":"../evil.md","text":"x"}]}"#, #"{"files":[{"name":"tool.exe","text":"x"}]}"#,
            #"{"files":[{"name":"a.md"}]}"#, #"{"paths":["relative/path"]}"#, #"{}"#, #"{"files":[{"name":"\u202egnp.md","text":"x"}]}"#,
        ] {
            r = try await Self.call(u + "/api/v1/ingest", method: "POST", body: bad)
            #expect(r.code == 400 && (r.json["error"] as? [String: Any])?["code"] as? String == "invalid-input", "\(bad) → \(r.code) \(r.body)")
        }

        // A file that cannot be read is named as uploaded, without the node's own paths.
        r = try await Self.call(u + "/api/v1/ingest", method: "POST", body: #"{"stream":false,"files":[{"name":"broken.pdf","text":"not a pdf"}]}"#)
        let failed = r.json["filesFailed"] as? [String] ?? []
        #expect(failed.count == 1 && failed[0].hasPrefix("broken.pdf: ") && !failed[0].contains(served.dir.path), "\(r.body)")
        // It is not kept: another file of that name is new, not "uploaded before".
        #expect(!FileManager.default.fileExists(atPath: served.dir.path + "/uploads/broken.pdf"))
        r = try await Self.call(u + "/api/v1/ingest", method: "POST", body: #"{"stream":false,"files":[{"name":"broken.pdf","text":"still not a pdf"}]}"#)
        #expect(r.code == 200 && (r.json["filesFailed"] as? [String])?.count == 1, "\(r.code) \(r.body)")
        // Failures are matched by exact name: a failing "pear.md: notes.md" does not take pear.md's file with it.
        r = try await Self.call(
            u + "/api/v1/ingest", method: "POST",
            body: ##"{"stream":false,"files":[{"name":"pear.md","text":"# Pear\n\nThe pear tree needs pruning in March."},{"name":"pear.md: notes.md","text":""}]}"##)
        #expect(r.code == 200 && r.json["filesNew"] as? Int == 1 && (r.json["filesFailed"] as? [String])?.count == 1, "\(r.code) \(r.body)")
        #expect(FileManager.default.fileExists(atPath: served.dir.path + "/uploads/pear.md"))
        // A replacement that cannot be read leaves the kept file and its knowledge as they were.
        let keptGarden = try Data(contentsOf: served.dir.url.appendingPathComponent("uploads/garden.md"))
        r = try await Self.call(u + "/api/v1/ingest", method: "POST", body: #"{"stream":false,"replace":true,"files":[{"name":"garden.md","text":"\u0000binary"}]}"#)
        #expect(r.code == 200 && (r.json["filesFailed"] as? [String])?.first?.hasPrefix("garden.md: ") == true, "\(r.code) \(r.body)")
        #expect(try Data(contentsOf: served.dir.url.appendingPathComponent("uploads/garden.md")) == keptGarden)
        #expect((try await Self.call(u + "/api/v1/search?q=roses&mode=keyword").json["hits"] as? [Any])?.count == 1)

        // Ledger explorer: status, blocks newest first, one block with its entries, an entry, proofs, verify.
        r = try await Self.call(u + "/api/v1/ledger")
        let height = try #require(r.json["height"] as? Int)
        #expect(height >= 3 && r.json["blocks"] as? Int == height + 1, "\(r.body)")
        r = try await Self.call(u + "/api/v1/ledger/blocks?limit=2")
        let list = r.json["blocks"] as? [[String: Any]] ?? []
        #expect(list.map { $0["height"] as? Int } == [height, height - 1], "\(r.body)")
        r = try await Self.call(u + "/api/v1/ledger/blocks?before=1")
        #expect((r.json["blocks"] as? [[String: Any]])?.map { $0["height"] as? Int } == [0])
        r = try await Self.call(u + "/api/v1/ledger/blocks/1")
        let entries = r.json["entries"] as? [[String: Any]] ?? []
        #expect(entries.count == 1 && entries.first?["item"] as? String == id && entries.first?["kind"] as? String == "knowledge.put", "\(r.body)")
        let entryID = try #require(entries.first?["id"] as? String)
        r = try await Self.call(u + "/api/v1/ledger/entries/\(entryID.prefix(10))")
        #expect(r.json["id"] as? String == entryID && r.json["height"] as? Int == 1)
        #expect(try await Self.call(u + "/api/v1/ledger/blocks/9999").code == 404)
        #expect(try await Self.call(u + "/api/v1/ledger/blocks/x").code == 400)
        r = try await Self.call(u + "/api/v1/ledger/proof/\(id)")  // an item: the entry that last changed it (the last edit, block 5)
        #expect(r.json["verified"] as? Bool == true && r.json["item"] as? String == id && r.json["height"] as? Int == 5, "\(r.body)")
        #expect(await Self.verifyInclusion(r.json), "the proof checks out independently: \(r.body)")
        r = try await Self.call(u + "/api/v1/ledger/proof/\(entryID)")
        #expect(r.json["height"] as? Int == 1)
        #expect(await Self.verifyInclusion(r.json))
        #expect(try await Self.call(u + "/api/v1/ledger/proof/0123456789abcdef").code == 404)
        r = try await Self.call(u + "/api/v1/ledger/verify", method: "POST")
        #expect(r.json["valid"] as? Bool == true && r.json["height"] as? Int == height, "\(r.body)")

        // Device.
        r = try await Self.call(u + "/api/v1/device")
        let health = try await Self.call(u + "/health")
        #expect(
            r.json["deviceId"] as? String == health.json["deviceId"] as? String && (r.json["publicKey"] as? String)?.count == 64
                && r.json["authority"] as? Bool == true && r.json["peers"] as? [Any] != nil, "\(r.body)")

        // Guards: a foreign Host (DNS rebinding) and a non-JSON body (cross-site form) are refused.
        var raw = try await runProcess("/usr/bin/curl", ["-s", "-w", "\n%{http_code}", "-H", "Host: attacker.example", u + "/api/v1/knowledge"])
        #expect(String(decoding: raw.out, as: UTF8.self).hasSuffix("421"))
        for host in ["127.0.0.1.attacker.example", "localhost.attacker.example", ""] {  // "": no Host header at all
            raw = try await runProcess("/usr/bin/curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Host: \(host)", u + "/api/v1/knowledge"])
            #expect(String(decoding: raw.out, as: UTF8.self) == "421", "Host \(host)")
        }
        raw = try await runProcess("/usr/bin/curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Host: localhost:\(port)", u + "/api/v1/knowledge"])
        #expect(String(decoding: raw.out, as: UTF8.self) == "200")
        // A height beyond Int64 is a 404, not a crash; the node keeps serving.
        #expect(try await Self.call(u + "/api/v1/ledger/blocks/18446744073709551615").code == 404)
        #expect(try await Self.call(u + "/api/v1/ledger/blocks?before=99999999999").code == 400)
        #expect(try await Self.call(u + "/health").code == 200)
        raw = try await runProcess(
            "/usr/bin/curl", ["-s", "-w", "\n%{http_code}", "-H", "Content-Type: text/plain", "--data", #"{"text":"csrf"}"#, u + "/api/v1/knowledge"])
        #expect(String(decoding: raw.out, as: UTF8.self).hasSuffix("415"))
        #expect(try await Self.call(u + "/api/v1/knowledge").json["total"] as? Int == 4, "the csrf text was stored")
    }

    /// Checks both inclusion proofs (entry in block, block in history) by RFC 9162 §2.1.3.2 with
    /// Python's hashlib: an implementation independent of KianaCore's Merkle code.
    static func verifyInclusion(_ p: [String: Any]) async -> Bool {
        guard let entry = p["entry"] as? [String: Any],
            let data = try? JSONSerialization.data(withJSONObject: [
                "levels": [
                    [p["position"] ?? 0, p["blockEntryCount"] ?? 0, entry["id"] ?? "", p["entryPath"] ?? [], p["entryRoot"] ?? ""],
                    [p["height"] ?? 0, p["treeSize"] ?? 0, p["blockHash"] ?? "", p["historyPath"] ?? [], p["historyRoot"] ?? ""],
                ]
            ])
        else { return false }
        let script = """
            import hashlib, json, sys
            def ok(index, size, leaf, path, root):
                if index >= size: return False
                fn, sn = index, size - 1
                r = hashlib.sha256(b"\\x00" + bytes.fromhex(leaf)).digest()
                for h in path:
                    p = bytes.fromhex(h)
                    if sn == 0: return False
                    if fn & 1 or fn == sn:
                        r = hashlib.sha256(b"\\x01" + p + r).digest()
                        while not fn & 1 and fn != 0: fn >>= 1; sn >>= 1
                    else:
                        r = hashlib.sha256(b"\\x01" + r + p).digest()
                    fn >>= 1; sn >>= 1
                return sn == 0 and r.hex() == root
            print(all(ok(*l) for l in json.load(sys.stdin)["levels"]))
            """
        guard let r = try? await runProcess("/usr/bin/env", ["python3", "-c", script], input: data) else { return false }
        return String(decoding: r.out, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines) == "True"
    }

    @Test("A flood of questions: the model answers one at a time, 16 wait, the rest get 503 busy at once; the node keeps serving", .needsModels)
    func floodOfQuestionsIsQueuedOrRefused() async throws {
        guard Models.hasSmolLM && Models.hasMiniLM else {
            if Shared.isCI { Issue.record("the models are missing from \(Models.directory)") }
            return
        }
        let served = try await ServeTests.Served.start(teach: ["The bike lock code is 4711."])
        defer { served.close() }
        let u = served.url
        // Load the models first so every request below competes for the model, not for loading.
        #expect(try await Self.call(u + "/api/v1/ask", method: "POST", body: #"{"question":"What is the bike lock code?","max_tokens":1,"stream":false}"#, seconds: 240).code == 200)
        let script = """
            import concurrent.futures, json, sys, urllib.request, urllib.error
            def ask(i):
                req = urllib.request.Request(sys.argv[1] + "/api/v1/ask", method="POST", headers={"Content-Type": "application/json"},
                                             data=json.dumps({"question": "What is the bike lock code?", "max_tokens": 32, "stream": False}).encode())
                try:
                    with urllib.request.urlopen(req, timeout=300) as r: return [r.status, ""]
                except urllib.error.HTTPError as e: return [e.code, json.load(e).get("error", {}).get("code", "")]
            with concurrent.futures.ThreadPoolExecutor(40) as pool: print(json.dumps(list(pool.map(ask, range(40)))))
            """
        let r = try await runProcess(python3(), ["-c", script, u])
        let err = String(decoding: r.err, as: UTF8.self)
        let results = try #require(try? JSONSerialization.jsonObject(with: r.out) as? [[Any]], "\(err)")
        let ok = results.filter { $0.first as? Int == 200 }.count
        let busy = results.filter { $0.first as? Int == 503 && $0.last as? String == "busy" }.count
        #expect(ok + busy == 40, "\(results)")
        #expect(ok >= 17 && busy >= 1, "one running and 16 waiting are answered, the rest refused: \(ok) answered, \(busy) busy")
        #expect(try await Self.call(u + "/health").code == 200)
        #expect(try await Self.call(u + "/api/v1/ask", method: "POST", body: #"{"question":"What is the bike lock code?","max_tokens":1,"stream":false}"#, seconds: 240).code == 200)
    }

    @Test("An open event stream does not hold up graceful shutdown")
    func eventStreamEndsOnShutdown() async throws {
        let served = try await ServeTests.Served.start()
        defer { served.close() }
        let (node, port) = (served.node, served.port)
        let stream = try ChildProcess("/usr/bin/curl", ["-s", "-N", "-m", "60", "http://127.0.0.1:\(port)/api/v1/events"])
        defer { stream.signal(SIGTERM) }
        #expect(await stream.waitFor("event: hello", timeout: 30) != nil, "\(stream.output)")
        let start = Date()
        node.process.interrupt()
        let exited = await offPool { node.waitForExit(timeout: 30) }
        #expect(exited && Date().timeIntervalSince(start) < 15, "node still running after \(Date().timeIntervalSince(start)) s: \(node.text)")
        // The stream ended with the node (curl's own limit is 60 s; 18 is curl's "transfer closed
        // with data outstanding", a chunked stream cut at exit).
        let curlStatus = await stream.wait(timeout: 10)
        #expect([0, 18].contains(curlStatus), "curl \(curlStatus): \(stream.output)")
        #expect(node.process.terminationStatus == 0, "\(node.text)")
    }

    @Test("The web UI's files are served from a fixed table; no path reaches the file system")
    func webUIAndNoPathTraversal() async throws {
        let served = try await ServeTests.Served.start()
        defer { served.close() }
        let u = served.url
        let page = try await Self.call(u + "/")
        #expect(page.code == 200 && page.body.contains("<script src=\"/ui/app.js\">") && !page.body.contains("https://"))
        let headers = try await runProcess("/usr/bin/curl", ["-s", "-D", "-", "-o", "/dev/null", u + "/"])
        let head = String(decoding: headers.out, as: UTF8.self).lowercased()
        #expect(head.contains("x-frame-options: deny") && head.contains("frame-ancestors 'none'"), "\(head)")
        let js = try await Self.call(u + "/ui/app.js")
        #expect(js.code == 200 && js.body.contains("/api/v1/ask"))
        #expect(try await Self.call(u + "/ui/style.css").code == 200)
        let recorder = try await Self.call(u + "/ui/recorder.js")
        #expect(recorder.code == 200 && recorder.body.contains("registerProcessor(\"kiana-recorder\""))
        // The OpenAPI document is served, and every route it lists exists (no 404/405).
        let spec = try await Self.call(u + "/openapi.json")
        // The document's version is the binary's.
        let version = try await kiana(["--version"])
        #expect(version.status == 0 && version.out == "\((spec.json["info"] as? [String: Any])?["version"] as? String ?? "?")\n", "\(version)")
        let paths = try #require(spec.json["paths"] as? [String: [String: Any]], "\(spec.body.prefix(200))")
        #expect(paths.count >= 26)
        for (path, ops) in paths where !path.contains("{") {
            for method in ops.keys {
                let r = try await Self.call(
                    u + path, method: method.uppercased(), body: method == "post" ? "{}" : nil,
                    seconds: path.hasSuffix("/events") ? 2 : 60)  // a stream that never ends
                #expect(r.code != 404 && r.code != 405 && r.code != 0, "\(method) \(path) → \(r.code)")
            }
        }
        for path in [
            "/ui/../../../../etc/passwd", "/ui/%2e%2e/%2e%2e/etc/passwd", "/ui/..%2fPackage.swift", "/ui/index.html/../../Package.swift",
            "/Package.swift", "/ui/", "/ui/app.js%00.png",
        ] {
            let r = try await runProcess("/usr/bin/curl", ["-s", "--path-as-is", "-o", "/dev/null", "-w", "%{http_code}", u + path])
            let code = String(decoding: r.out, as: UTF8.self)
            #expect(code == "404" || code == "400", "\(path) → \(code)")
        }
    }
}
