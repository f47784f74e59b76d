import Foundation
import KianaAI
import KianaCore
import KianaTestSupport
import Testing

/// The Chroma client against a real `chroma run` (PyPI chromadb) on loopback: the same top-k as
/// an exact scan, data kept across a server restart, a clear error while it is down.
/// Work in progress (issue 19 part 8, branch chroma-client): the client is not wired into retrieval yet.
@Suite(.serialized) struct ChromaClientTests {
    static var chroma: String? {
        for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":") {
            let p = "\(dir)/chroma"
            if FileManager.default.isExecutableFile(atPath: p) { return p }
        }
        return nil
    }

    static func start(_ chroma: String, path: String, port: Int) async throws -> ChildProcess {
        let p = try ChildProcess(chroma, ["run", "--path", path, "--host", "127.0.0.1", "--port", "\(port)"])
        let client = ChromaClient(url: URL(string: "http://127.0.0.1:\(port)")!, collection: "probe", timeout: 2)
        for _ in 0..<100 {
            if (try? await client.heartbeat()) != nil { return p }
            try await Task.sleep(for: .milliseconds(200))
        }
        throw KianaAIError(.backend, "chroma did not start: \(p.output.suffix(500))")
    }

    static func unit(_ n: Int, _ rng: inout some RandomNumberGenerator) -> [Float] {
        var v = (0..<n).map { _ in Float.random(in: -1...1, using: &rng) }
        let norm = v.reduce(0) { $0 + $1 * $1 }.squareRoot()
        for i in v.indices { v[i] /= norm }
        return v
    }

    @Test func sameTopKAsAnExactScanAndSurvivesARestart() async throws {
        guard let chroma = Self.chroma else {
            if Shared.isCI { Issue.record("chroma (pip chromadb) is not installed") }
            return
        }
        let dir = try TempDir()
        defer { dir.cleanup() }
        let port = Int.random(in: 20_000...60_000)
        var server = try await Self.start(chroma, path: dir.path, port: port)
        let client = ChromaClient(url: URL(string: "http://127.0.0.1:\(port)")!, collection: "items")
        let id = try await client.collectionID()
        var rng = SystemRandomNumberGenerator()
        let items = (0..<300).map { _ in (ItemID.random(), Self.unit(384, &rng)) }
        for batch in stride(from: 0, to: items.count, by: 100) { try await client.upsert(Array(items[batch..<min(batch + 100, items.count)]), in: id) }
        #expect(try await client.count(in: id) == 300)
        var same = 0
        let queries = (0..<20).map { _ in Self.unit(384, &rng) }
        for q in queries {
            let exact = items.map { ($0.0, zip($0.1, q).reduce(Float(0)) { $0 + $1.0 * $1.1 }) }.sorted { $0.1 > $1.1 }.prefix(10)
            let got = try await client.query(q, k: 10, in: id)
            if got.map(\.0) == exact.map(\.0) { same += 1 }
            #expect(abs((got.first?.1 ?? 0) - (exact.first?.1 ?? 1)) < 1e-4)
        }
        #expect(same == queries.count, "top-10 equal to the exact scan for \(same) of \(queries.count) queries")
        // Down: a clear error naming the server.
        server.signal(SIGTERM)
        _ = await server.wait()
        do {
            _ = try await client.query(queries[0], k: 10, in: id)
            Issue.record("a query to a stopped server succeeded")
        } catch { #expect(error.code == .backend && error.message.contains("127.0.0.1:\(port)"), "\(error)") }
        // Back: the vectors are still there.
        server = try await Self.start(chroma, path: dir.path, port: port)
        #expect(try await client.count(in: try await client.collectionID()) == 300)
        server.signal(SIGTERM)
        _ = await server.wait()
    }
}
