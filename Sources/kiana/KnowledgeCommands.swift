import ArgumentParser
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import KianaAI
import KianaBench
import KianaCore
import KianaNode
import KianaStore
#if canImport(Glibc)
import Glibc
#endif

struct ModelOptions: ParsableArguments {
    @Option(help: "Model directory (default: $KIANA_MODEL_DIR or <data dir>/models).")
    var modelDir: String?

    func directory(_ data: DataOptions) -> String { ModelDirectory.resolve(modelDir, dataDirectory: data.directory.path) }
}

/// A progress bar on stderr: redrawn in place on a terminal, otherwise one line at most every
/// two seconds (and the last one), so logs stay readable.
final class ProgressBar: @unchecked Sendable {
    private let lock = NSLock()
    private let tty = isatty(2) == 1
    private var lastLine = Date.distantPast
    private var lastPhase = ""
    private var open = false

    func update(_ phase: String, _ done: Int, _ total: Int, _ unit: Unit) {
        lock.lock(); defer { lock.unlock() }
        let finished = done >= total
        if phase != lastPhase { if open && tty { FileHandle.standardError.write(Data("\n".utf8)) }; open = false; lastPhase = phase }
        guard tty || finished || Date().timeIntervalSince(lastLine) >= 2 else { return }
        lastLine = Date()
        let fraction = total > 0 ? min(1, Double(done) / Double(total)) : 1
        let width = 30
        let filled = Int(fraction * Double(width))
        let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
        let line = String(format: "%@ [%@] %3d%% %@", phase.padding(toLength: 9, withPad: " ", startingAt: 0), bar, Int(fraction * 100), unit.render(done, total))
        FileHandle.standardError.write(Data((tty ? "\r" + line + (finished ? "\n" : "") : line + "\n").utf8))
        open = tty && !finished
    }

    enum Unit {
        case bytes, items
        func render(_ done: Int, _ total: Int) -> String {
            switch self {
            case .bytes: return String(format: "%.1f/%.1f MB", Double(done) / 1e6, Double(total) / 1e6)
            case .items: return "\(done)/\(total)"
            }
        }
    }

    var handler: ProgressHandler {
        { [self] phase, done, total, _ in update(phase, done, total, phase == "reading" ? .bytes : .items) }
    }
}

struct Ingest: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Add files and folders (.md, .txt, .html, .pdf) to the knowledge base, kept in sync.",
        discussion: """
        Each file is split into chunks (sections and paragraphs, with overlap); each chunk is a
        knowledge item whose source is "<path>#<position>". Running it again changes only what
        changed: edited files have their chunks replaced, deleted files are forgotten. Chunks are
        embedded right away unless --no-embed (then the running node or the next search does it).
        """)
    @OptionGroup var data: DataOptions
    @OptionGroup var model: ModelOptions
    @Argument(help: "Files or folders.") var paths: [String]
    @Option(name: .customLong("tag"), help: "A tag for every new chunk (repeatable).") var tags: [String] = []
    @Flag(help: "Keep watching the paths and sync every change until interrupted.") var watch = false
    @Option(help: "Seconds between checks with --watch.") var interval: Double = 2
    @Flag(help: "Store the chunks without embedding them now.") var noEmbed = false

    func run() throws {
        try perform {
            guard interval >= 0.1, interval <= 3600 else { throw KianaNodeError(.invalidInput, "--interval must be 0.1…3600 seconds") }
            let node = try Node.open(directory: data.directory)
            let embedder = noEmbed ? nil : try Node.loadEmbedder(modelDirectory: model.directory(data))
            let bar = ProgressBar()
            func once() throws -> IngestReport {
                let r = try node.ingest(paths: paths, tags: tags, progress: bar.handler)
                let files = "\(r.filesScanned) files: \(r.filesNew) new, \(r.filesChanged) changed, \(r.filesUnchanged) unchanged, \(r.filesRemoved) removed"
                if r.changed {
                    say("Ingested \(files); chunks +\(r.chunksAdded) ~\(r.chunksUpdated) -\(r.chunksRemoved)")
                } else {
                    say("Nothing changed (\(files))")
                }
                for f in r.filesFailed { FileHandle.standardError.write(Data("kiana: skipped \(f)\n".utf8)) }
                if let embedder {
                    let n = try node.embedPending(embedder, progress: bar.handler)
                    if n > 0 { say("Embedded \(n) chunks") }
                }
                return r
            }
            _ = try once()
            guard watch else { return }
            say("Watching \(paths.joined(separator: ", ")) every \(interval) s (Ctrl-C to stop)")
            var last = snapshot()
            while true {
                Thread.sleep(forTimeInterval: interval)
                let now = snapshot()
                if now != last { _ = try once(); last = snapshot() }
            }
        }
    }

    /// Size and modification time of every supported file under the paths (cheap change check).
    func snapshot() -> [String: [Double]] {
        var out: [String: [Double]] = [:]
        let fm = FileManager.default
        for raw in paths {
            let root = URL(fileURLWithPath: (raw as NSString).expandingTildeInPath).standardizedFileURL.path
            var files: [String] = [root]
            if let e = fm.enumerator(atPath: root) { files = e.compactMap { $0 as? String }.map { root + "/" + $0 } }
            for f in files where TextExtraction.isSupported(f) {
                if let a = try? fm.attributesOfItem(atPath: f) {
                    out[f] = [Double(a[.size] as? Int ?? 0), (a[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0]
                }
            }
        }
        return out
    }
}

struct Search: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Search the knowledge base (BM25 + vectors, fused with reciprocal rank fusion).")
    @OptionGroup var data: DataOptions
    @OptionGroup var model: ModelOptions
    @Argument(help: "What to look for.") var query: String
    @Option(help: "Number of results.") var k: Int = 10
    @Option(help: "hybrid, vector or keyword.") var mode: String = "hybrid"
    @Option(help: "Only items with this tag.") var tag: String?
    @Option(help: "Only items whose source starts with this (a file or folder path).") var source: String?
    @Flag(help: "Print results as JSON.") var json = false

    func run() throws {
        try perform {
            guard let m = SearchMode(rawValue: mode) else { throw KianaNodeError(.invalidInput, "--mode must be hybrid, vector or keyword") }
            guard (1...1000).contains(k) else { throw KianaNodeError(.invalidInput, "--k must be 1…1000") }
            let node = try Node.open(directory: data.directory)
            let bar = ProgressBar()
            let retriever: Retriever
            var hits: [SearchHit]
            let filter = SearchFilter(tag: tag, sourcePrefix: source.map { s in
                s.hasPrefix("/") || s.hasPrefix("~") || s.hasPrefix(".") ? URL(fileURLWithPath: (s as NSString).expandingTildeInPath).standardizedFileURL.path : s
            })
            guard !query.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else { throw KianaNodeError(.invalidInput, "the search query is empty") }
            if m == .keyword {
                hits = try node.searchStore.keywordSearch(query, limit: k, filter: filter).enumerated().map {
                    SearchHit(id: $1.0, score: $1.1, keywordRank: $0 + 1, keywordScore: $1.1)
                }
            } else {
                retriever = try node.retriever(Node.loadEmbedder(modelDirectory: model.directory(data)), progress: bar.handler)
                hits = try retriever.search(query, k: k, mode: m, filter: filter)
            }
            let items = try node.searchStore.items(hits.map(\.id))
            if json {
                let out: [[String: Any]] = hits.map { h in
                    var o: [String: Any] = ["id": h.id.description, "score": h.score]
                    if let r = h.keywordRank { o["keywordRank"] = r; o["bm25"] = h.keywordScore }
                    if let r = h.vectorRank { o["vectorRank"] = r; o["cosine"] = h.vectorScore }
                    if let i = items[h.id] { o["title"] = i.title ?? ""; o["source"] = i.source ?? ""; o["text"] = i.text ?? "" }
                    return o
                }
                let d = try JSONSerialization.data(withJSONObject: ["query": query, "mode": m.rawValue, "results": out], options: [.sortedKeys])
                say(String(decoding: d, as: UTF8.self))
                return
            }
            if hits.isEmpty { say("No results."); return }
            for (n, h) in hits.enumerated() {
                let i = items[h.id]
                var parts: [String] = []
                if let s = h.keywordScore { parts.append(String(format: "bm25 %.2f (#%d)", s, h.keywordRank!)) }
                if let s = h.vectorScore { parts.append(String(format: "cos %.3f (#%d)", s, h.vectorRank!)) }
                let score = m == .hybrid ? String(format: "rrf %.4f", h.score) : String(format: "%.4f", h.score)
                say("\(n + 1). \(score)  \(parts.joined(separator: ", "))  \(h.id)")
                let title = i?.title ?? ""
                if !title.isEmpty { say("   \(title)") }
                let text = (i?.text ?? "").replacingOccurrences(of: "\n", with: " ")
                say("   " + String(text.prefix(160)) + (text.count > 160 ? "…" : ""))
                if let src = i?.source { say("   source: \(src)") }
            }
        }
    }
}

struct Embed: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the embedding of a text (all-MiniLM-L6-v2, 384 floats).")
    @OptionGroup var data: DataOptions
    @OptionGroup var model: ModelOptions
    @Argument(help: "The text.") var text: String
    @Flag(help: "Print a JSON array.") var json = false
    @Flag(help: "Print the WordPiece token IDs instead.") var tokens = false

    func run() throws {
        try perform {
            let embedder = try Node.loadEmbedder(modelDirectory: model.directory(data))
            if tokens {
                say("[" + embedder.tokenize(text).map(String.init).joined(separator: ", ") + "]")
                return
            }
            let v = embedder.embed(text)
            if json {
                say("[" + v.map { "\($0)" }.joined(separator: ", ") + "]")
            } else {
                say("\(v.count) dimensions, \(embedder.tokenize(text).count) tokens")
                for row in stride(from: 0, to: v.count, by: 8) {
                    say(v[row..<min(row + 8, v.count)].map { String(format: "% .6f", $0) }.joined(separator: " "))
                }
            }
        }
    }
}

struct IndexCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "index", abstract: "Full-text and vector index: status, update, rebuild.",
                                                    subcommands: [IndexStatus.self, IndexUpdate.self, IndexRebuild.self], defaultSubcommand: IndexStatus.self)
}

struct IndexOptions: ParsableArguments {
    @Option(help: "Use an HNSW graph from this many vectors on (below it: exact scan).") var hnswThreshold: Int = VectorIndexConfig().hnswThreshold
    @Option(help: "HNSW links per node.") var m: Int = 16
    @Option(help: "HNSW beam width while building.") var efConstruction: Int = 100

    func config() throws -> VectorIndexConfig {
        guard hnswThreshold >= 0, (2...256).contains(m), (2...4096).contains(efConstruction) else {
            throw KianaNodeError(.invalidInput, "--hnsw-threshold ≥ 0, --m 2…256, --ef-construction 2…4096")
        }
        var c = VectorIndexConfig()
        c.hnswThreshold = hnswThreshold; c.m = m; c.efConstruction = efConstruction
        return c
    }
}

struct IndexStatus: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "status", abstract: "How many items are embedded and how search runs.")
    @OptionGroup var data: DataOptions
    func run() throws {
        try perform {
            let node = try Node.open(directory: data.directory)
            let items = try node.store.counts().items
            let vectors = try node.searchStore.vectorCount(model: Embedder.modelName)
            let pending = try node.searchStore.countNeedingVectors(model: Embedder.modelName)
            let file = FileManager.default.fileExists(atPath: node.vectorIndexPath)
            say("Items: \(items), embedded: \(vectors), waiting: \(pending)")
            say("Vector search: \(file ? "HNSW graph (\(node.vectorIndexPath))" : "exact scan")")
        }
    }
}

struct IndexUpdate: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "update", abstract: "Embed items that have no vector yet and refresh the vector index.")
    @OptionGroup var data: DataOptions
    @OptionGroup var model: ModelOptions
    @OptionGroup var options: IndexOptions
    func run() throws {
        try perform {
            let node = try Node.open(directory: data.directory)
            let r = try node.retriever(Node.loadEmbedder(modelDirectory: model.directory(data)), config: options.config(), progress: ProgressBar().handler)
            say("Index up to date: \(r.index.count) vectors, \(r.index.usesHNSW ? "HNSW" : "exact scan")")
        }
    }
}

struct IndexRebuild: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "rebuild", abstract: "Rebuild full-text search, re-embed every item and rebuild the vector index.")
    @OptionGroup var data: DataOptions
    @OptionGroup var model: ModelOptions
    @OptionGroup var options: IndexOptions
    func run() throws {
        try perform {
            let node = try Node.open(directory: data.directory)
            let start = Date()
            let r = try node.rebuildIndexes(Node.loadEmbedder(modelDirectory: model.directory(data)), config: options.config(), progress: ProgressBar().handler)
            say(String(format: "Rebuilt: %d vectors, %@, in %.1f s", r.index.count, r.index.usesHNSW ? "HNSW" : "exact scan", Date().timeIntervalSince(start)))
        }
    }
}

struct BenchEmbed: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "embed", abstract: "Embedder sentences/s beside a numpy implementation on the same token IDs.")
    @OptionGroup var data: DataOptions
    @OptionGroup var model: ModelOptions
    @Option(help: "Sentences (retrieval-set passages, repeated).") var sentences: Int = 512
    @Option(help: "Sentences per batch.") var batch: Int = 32
    @Option(help: "Repeats (best is reported).") var repeats: Int = 3
    @Option(help: "Threads for the Swift embedder (default: all cores).") var threads: Int?

    func run() throws {
        try perform {
            guard sentences > 0, (1...4096).contains(batch), repeats > 0, (threads ?? 1) > 0 else {
                throw KianaNodeError(.invalidInput, "sentences, batch (1…4096), repeats and threads must be positive")
            }
            let b = EmbedBench(modelDirectory: model.directory(data), sentences: sentences, batch: batch, repeats: repeats, threads: threads)
            say(try b.run { FileHandle.standardError.write(Data("  … \($0)\n".utf8)) })
        }
    }
}

struct BenchVector: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "vector", abstract: "Exact scan and HNSW recall@10 and queries/s on clustered vectors, beside faiss.")
    @Option(help: "Vectors in the index.") var count: Int = 100_000
    @Option(help: "Queries.") var queries: Int = 1000
    @Option(help: "Clusters the vectors are drawn around.") var clusters: Int = 1000
    @Option(help: "HNSW links per node.") var m: Int = 16
    @Option(help: "HNSW build beam width.") var efConstruction: Int = 100
    @Option(help: "Query beam widths, comma-separated.") var ef: String = "16,32,64,128,256"

    func run() throws {
        try perform {
            let efs = ef.split(separator: ",").compactMap { Int($0) }
            guard count > 0, queries > 0, clusters > 0, (2...256).contains(m), efConstruction >= m, !efs.isEmpty, efs.allSatisfy({ $0 > 0 }) else {
                throw KianaNodeError(.invalidInput, "count, queries, clusters positive; --m 2…256; --ef-construction ≥ m; --ef a list of positive numbers")
            }
            let b = VectorBench(count: count, queries: queries, clusters: clusters, m: m, efConstruction: efConstruction, efs: efs)
            say(try b.run { FileHandle.standardError.write(Data("  … \($0)\n".utf8)) })
        }
    }
}

struct BenchRetrieval: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "retrieval", abstract: "nDCG@10 and recall@10 of keyword, vector and hybrid search on the evaluation set.")
    @OptionGroup var data: DataOptions
    @OptionGroup var model: ModelOptions
    @Option(help: "Evaluation set JSON (default: the bundled one).") var set: String?
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        try perform {
            let b = RetrievalBench(modelDirectory: model.directory(data), setPath: set)
            let scores = try b.run { FileHandle.standardError.write(Data("  … \($0)\n".utf8)) }
            if json {
                let rows = scores.map { ["mode": $0.mode.rawValue, "kind": $0.kind, "queries": $0.queries, "ndcg10": $0.ndcg, "recall10": $0.recall] as [String: Any] }
                say(String(decoding: try JSONSerialization.data(withJSONObject: rows, options: [.sortedKeys]), as: UTF8.self))
            } else {
                say(RetrievalBench.render(scores, passages: try RetrievalSet.load(path: set).passages.count))
            }
        }
    }
}

struct BenchHTTP: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "http",
        abstract: "Requests per second and p50/p99 latency of /health and search under concurrent load (wrk), beside nginx serving the same bytes as a static file.")
    @OptionGroup var data: DataOptions
    @OptionGroup var model: ModelOptions
    @Option(help: "Seconds per target.") var seconds: Int = 10
    @Option(help: "Concurrent connections.") var connections: Int = 16
    @Option(help: "wrk threads.") var threads: Int = 2
    @Option(help: "Knowledge items (passages of the evaluation set, at most 331).") var items: Int = 331
    @Flag(help: "Skip the nginx reference.") var noReference = false

    func run() async throws {
        try await performAsync {
            guard (1...600).contains(seconds), (1...1000).contains(connections), (1...64).contains(threads), threads <= connections, items > 0 else {
                throw KianaNodeError(.invalidInput, "seconds 1…600, connections 1…1000, threads 1…64 and at most one per connection, items > 0")
            }
            let bench = HTTPBench(seconds: seconds, connections: connections, threads: threads)
            guard bench.hasWrk else { throw KianaNodeError(.invalidInput, "wrk is not installed: `make setup` (or apt-get install wrk)") }
            let models = model.directory(data)
            let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("kiana-bench-http-\(UUID().uuidString)").path
            defer { try? FileManager.default.removeItem(atPath: tmp) }
            // A node with the evaluation set's passages as its knowledge.
            let set = try RetrievalSet.load()
            try {
                let (node, _) = try Node.openOrInitialize(directory: DataDirectory(path: tmp))
                let ops = set.passages.prefix(items).map { KnowledgeOp.put(ItemID.random(), KnowledgeFields(title: $0.title, text: $0.text, tags: $0.tags)) }
                for start in stride(from: 0, to: ops.count, by: 200) {
                    _ = try node.store.write(Array(ops[start..<min(start + 200, ops.count)]), identity: node.identity, now: currentMillis())
                }
            }()
            let server = try ServeProcess(arguments: ["serve", "--data-dir", tmp, "--port", "0", "--p2p-host", "127.0.0.1", "--p2p-port", "0",
                                                      "--discovery", "off", "--model-dir", models])
            defer { server.stop() }
            let base = try await server.waitForURL()
            let count = min(items, set.passages.count)
            FileHandle.standardError.write(Data("  … warming up (loads the embedder, embeds \(count) passages)\n".utf8))
            let warm = try await Self.get(base + "/api/v1/search?q=warm%20up&k=1")
            guard (try? JSONSerialization.jsonObject(with: warm) as? [String: Any])?["hits"] != nil else {
                throw KianaNodeError(.invalidInput, "the node's search does not answer: \(String(decoding: warm, as: UTF8.self).prefix(300))")
            }
            say("kiana bench http: wrk, \(threads) threads, \(connections) connections, \(seconds) s per target, "
                + "\(ProcessInfo.processInfo.activeProcessorCount) cores shared by wrk and the node; \(count) knowledge items, "
                + "\(set.queries.count) different queries")
            func search(_ mode: String) -> [String] {
                set.queries.map { base + "/api/v1/search?k=10&mode=\(mode)&q=" + ($0.query.addingPercentEncoding(withAllowedCharacters: Self.unreserved) ?? "x") }
            }
            var rows: [HTTPBench.Result] = []
            for target in [HTTPBench.Target(name: "GET /health", urls: [base + "/health"]),
                           HTTPBench.Target(name: "GET /api/v1/search keyword", urls: search("keyword")),
                           HTTPBench.Target(name: "GET /api/v1/search hybrid", urls: search("hybrid"))] {
                FileHandle.standardError.write(Data("  … \(target.name)\n".utf8))
                rows.append(try await blocking { try bench.measure(target) })
            }
            var reference: HTTPBench.Result?
            if noReference {
            } else if bench.hasNginx {
                let body = try await Self.get(base + "/health")
                let nginx = try bench.startNginx(body: String(decoding: body, as: UTF8.self))
                defer { nginx.stop() }
                FileHandle.standardError.write(Data("  … nginx static file (reference)\n".utf8))
                reference = try await blocking { try bench.measure(.init(name: "nginx: the same bytes, static", urls: [nginx.url])) }
            } else {
                say("(nginx is not installed: no reference; `make bench` installs nginx-light)")
            }
            say(bench.render(rows, reference: reference))
            let errors = rows.reduce(0) { $0 + $1.errors }
            if errors > 0 { throw KianaNodeError(.invalidInput, "\(errors) requests failed") }
        }
    }
}

extension BenchHTTP {
    /// RFC 3986 unreserved characters, ASCII only (`.alphanumerics` would let "ü" through raw).
    static let unreserved = CharacterSet(charactersIn: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")

    /// GET with a generous timeout (the first search loads the model and embeds everything).
    static func get(_ url: String) async throws -> Data {
        var request = URLRequest(url: URL(string: url)!)
        request.timeoutInterval = 600
        do {
            return try await URLSession.shared.data(for: request).0
        } catch {
            throw KianaNodeError(.network, "GET \(url) failed: \(error.localizedDescription)")
        }
    }
}

/// `kiana serve` as a child process of this binary (for benchmarks).
final class ServeProcess: @unchecked Sendable {
    let process = Process()
    private let lock = NSLock()
    private var output = ""

    init(arguments: [String]) throws {
        process.executableURL = URL(fileURLWithPath: Bundle.main.executablePath ?? CommandLine.arguments[0])
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        pipe.fileHandleForReading.readabilityHandler = { [weak self] h in
            let d = h.availableData
            if d.isEmpty { h.readabilityHandler = nil; return }
            self?.lock.withLock { self?.output += String(decoding: d, as: UTF8.self) }
        }
        try process.run()
    }

    /// The base URL once the node says it serves, or the node's output as the error.
    func waitForURL(timeout: Duration = .seconds(60)) async throws -> String {
        let end = ContinuousClock.now + timeout
        while ContinuousClock.now < end {
            let text = lock.withLock { output }
            if let r = text.range(of: #"serving http://127\.0\.0\.1:\d+"#, options: .regularExpression) {
                return String(text[r].dropFirst("serving ".count))
            }
            guard process.isRunning else { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw KianaNodeError(.invalidInput, "the node did not start: \(lock.withLock { output }.suffix(500))")
    }

    func stop() {
        guard process.isRunning else { return }
        process.interrupt()
        process.waitUntilExit()
    }
}
