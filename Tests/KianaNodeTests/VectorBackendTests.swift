import Foundation
import KianaTestSupport
import Testing

/// `vector.backend=chroma` (decision 100) against a real `chroma run` (PyPI chromadb) on
/// loopback: vector search over the retrieval evaluation set returns the same top-10 as the
/// in-process exact scan; a server that is down is one clear error and the node's data is
/// untouched; a new, empty server is filled from the store again (the index is derived state).
@Suite(.serialized) struct VectorBackendTests {
    static var chroma: String? {
        for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":") {
            let p = "\(dir)/chroma"
            if FileManager.default.isExecutableFile(atPath: p) { return p }
        }
        return nil
    }

    static func startChroma(_ chroma: String, path: String, port: Int) async throws -> ChildProcess {
        let p = try ChildProcess(chroma, ["run", "--path", path, "--host", "127.0.0.1", "--port", "\(port)"])
        for _ in 0..<150 {
            let r = try await runProcess("/usr/bin/curl", ["-s", "-m", "1", "http://127.0.0.1:\(port)/api/v2/heartbeat"])
            if String(decoding: r.out, as: UTF8.self).contains("heartbeat") { return p }
            try await Task.sleep(for: .milliseconds(200))
        }
        Issue.record("chroma did not start: \(p.output.suffix(500))")
        return p
    }

    static func ids(_ out: String) -> [String] {
        guard let object = try? JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any], let rows = object["results"] as? [[String: Any]] else {
            return []
        }
        return rows.compactMap { $0["id"] as? String }
    }

    @Test(.needsMiniLM) func chromaGivesTheSameTopTenAsTheExactScan() async throws {
        guard let chroma = Self.chroma else {
            if Shared.isCI { Issue.record("chroma (pip chromadb) is not installed; `make setup` installs it") }
            return
        }
        let tmp = try TempDir("kiana-chroma")
        defer { tmp.cleanup() }
        let data = tmp.path + "/node"
        #expect(try await kiana(["init", "--data-dir", data]).status == 0)
        // The evaluation set's passages as files, ingested (one chunk each).
        let set = try JSONSerialization.jsonObject(
            with: Data(contentsOf: Shared.packageRoot.appendingPathComponent("Sources/KianaBench/Resources/retrieval-set.json"))) as! [String: Any]
        let passages = set["passages"] as! [[String: Any]]
        let docs = tmp.path + "/docs"
        try FileManager.default.createDirectory(atPath: docs, withIntermediateDirectories: true)
        for p in passages {
            try "\(p["text"] as! String)\n".write(toFile: "\(docs)/\(p["id"] as! String).txt", atomically: true, encoding: .utf8)
        }
        let ingest = try await kiana(["ingest", docs, "--data-dir", data])
        #expect(ingest.status == 0, "\(ingest.err)")
        let queries = (set["queries"] as! [[String: Any]]).prefix(25).map { $0["query"] as! String }

        let port = LLMCLITests.freePort()  // one the kernel just handed out, not a random guess
        var server = try await Self.startChroma(chroma, path: tmp.path + "/chroma", port: port)
        let env = ["KIANA_VECTOR_BACKEND": "chroma", "KIANA_VECTOR_URL": "http://127.0.0.1:\(port)"]
        var same = 0
        for q in queries {
            let exact = try await kiana(["search", q, "--mode", "vector", "--k", "10", "--json", "--data-dir", data])
            let remote = try await kiana(["search", q, "--mode", "vector", "--k", "10", "--json", "--data-dir", data], environment: env)
            #expect(exact.status == 0 && remote.status == 0, "\(exact.err)\(remote.err)")
            if Self.ids(exact.out) == Self.ids(remote.out) && Self.ids(exact.out).count == 10 { same += 1 }
        }
        #expect(same == queries.count, "same top-10 for \(same) of \(queries.count) queries")
        print("vector backend: chroma gave the exact scan's top-10 for \(same) of \(queries.count) evaluation queries (\(passages.count) passages)")

        // Down: one clear error, the node's own data untouched.
        server.signal(SIGTERM)
        _ = await server.wait()
        let down = try await kiana(["search", queries[0], "--mode", "vector", "--data-dir", data], environment: env)
        #expect(down.status == 1 && down.err.contains("127.0.0.1:\(port)") && down.err.contains("vector.backend"), "\(down.err)")
        #expect(try await kiana(["search", queries[0], "--mode", "vector", "--data-dir", data]).status == 0)

        // A new, empty server: filled from the store again.
        server = try await Self.startChroma(chroma, path: tmp.path + "/chroma-new", port: port)
        let refilled = try await kiana(["search", queries[1], "--mode", "vector", "--k", "10", "--json", "--data-dir", data], environment: env)
        let exact = try await kiana(["search", queries[1], "--mode", "vector", "--k", "10", "--json", "--data-dir", data])
        #expect(refilled.status == 0 && Self.ids(refilled.out) == Self.ids(exact.out), "\(refilled.err)")

        // An edit (re-ingested file, whose new vector may reuse the old row): Chroma follows it.
        let last = passages.map { $0["id"] as! String }.sorted().last!
        try "Hummingbirds can hover in place and even fly backwards.\n".write(toFile: "\(docs)/\(last).txt", atomically: true, encoding: .utf8)
        #expect(try await kiana(["ingest", docs, "--data-dir", data]).status == 0)
        let editedExact = try await kiana(["search", "hummingbird flight", "--mode", "vector", "--k", "10", "--json", "--data-dir", data])
        let editedRemote = try await kiana(["search", "hummingbird flight", "--mode", "vector", "--k", "10", "--json", "--data-dir", data], environment: env)
        #expect(Self.ids(editedRemote.out) == Self.ids(editedExact.out), "Chroma kept the old vector of an edited item")

        // Another node on the same server keeps to its own collection: neither removes the other's.
        let other = tmp.path + "/other"
        #expect(try await kiana(["init", "--data-dir", other]).status == 0)
        #expect(try await kiana(["remember", "The lighthouse keeper feeds the gulls at dawn.", "--data-dir", other]).status == 0)
        let mine = try await kiana(["search", "gulls", "--mode", "vector", "--k", "10", "--json", "--data-dir", other], environment: env)
        #expect(mine.status == 0 && Self.ids(mine.out).count == 1, "\(mine.out)\(mine.err)")
        let again = try await kiana(["search", queries[1], "--mode", "vector", "--k", "10", "--json", "--data-dir", data], environment: env)
        #expect(Self.ids(again.out) == Self.ids(exact.out), "the first node's vectors were disturbed: \(again.out)")
        server.signal(SIGTERM)
        _ = await server.wait()
    }
}
