import ArgumentParser
import Foundation
#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif
import KianaBench
import KianaCore
import KianaNode

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Benchmarks, each beside its reference primitive.",
        subcommands: [BenchLedger.self, BenchNet.self, BenchSync.self, BenchEmbed.self, BenchVector.self, BenchRetrieval.self, BenchAnswers.self, BenchLLM.self, BenchHTTP.self, BenchVoice.self])
}

struct BenchVoice: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "voice", abstract: "Text to speech to text: word error rate per engine pair and real-time factors, beside the engines called directly.")
    @Option(help: "Syntheses per sentence (the fastest is timed).") var repeats: Int = 1

    func run() throws {
        try perform {
            guard (1...20).contains(repeats) else { throw KianaNodeError(.invalidInput, "--repeats must be 1…20") }
            say("kiana bench voice: \(BenchMachine.cpu), \(ProcessInfo.processInfo.activeProcessorCount) cores, \(BenchMachine.date)")
            say(try VoiceBench(repeats: repeats).run { Output.progress($0) })
        }
    }
}

/// What the figures were measured on.
enum BenchMachine {
    static var cpu: String {
        let info = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        let line = info.split(separator: "\n").first { $0.hasPrefix("model name") }
        return line.flatMap { $0.split(separator: ":", maxSplits: 1).last }.map { $0.trimmingCharacters(in: .whitespaces) } ?? "unknown CPU"
    }
    static var date: String { ISO8601DateFormatter().string(from: Date()) }
}

struct BenchNet: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "net", abstract: "Link handshakes per second and encrypted throughput over loopback.")
    @Option(help: "Handshakes per measurement.") var handshakes: Int = 300
    @Option(help: "Megabytes streamed through one link per measurement.") var megabytes: Int = 256
    @Option(help: "Bytes per link message (at most 4 MiB).") var messageSize: Int = 65536
    @Option(help: "Repeats (the best is reported).") var repeats: Int = 3

    func run() async throws {
        try await performAsync {
            guard handshakes > 0, megabytes > 0, repeats > 0, (1...(4 << 20) - 64).contains(messageSize) else {
                throw KianaNodeError(.invalidInput, "handshakes, megabytes and repeats must be positive; message size 1…\((4 << 20) - 64)")
            }
            say("kiana bench net: loopback TCP, \(ProcessInfo.processInfo.activeProcessorCount) cores, best of \(repeats)")
            let bench = NetBench(handshakes: handshakes, megabytes: megabytes, messageSize: messageSize, repeats: repeats)
            let rows = try await bench.run { Output.progress($0) }
            say(NetBench.render(rows))
        }
    }
}

struct BenchSync: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sync", abstract: "Ledger sync on loopback: propagation latency, initial sync beside Ed25519 verification, bytes per change.")
    @Option(help: "Single writes timed from A to B.") var writes: Int = 200
    @Option(help: "Entries in the ledger a fresh device syncs.") var entries: Int = 100_000
    @Option(help: "Entries per block of that ledger (1: single writes; up to 1000, the most a node seals in one block: an ingestion).") var perBlock: Int = 1
    @Option(help: "Milliseconds between timed writes.") var pause: Int = 20

    func run() async throws {
        try await performAsync {
            guard writes > 0, entries > 0, pause >= 0 else { throw KianaNodeError(.invalidInput, "writes and entries must be positive, pause ≥ 0") }
            guard (1...1000).contains(perBlock) else {
                throw KianaNodeError(.invalidInput, "--per-block must be between 1 and 1000 (the most a node seals in one block)")
            }
            say("kiana bench sync: 3 devices in this process, real SQLite files, Noise links on loopback, \(ProcessInfo.processInfo.activeProcessorCount) cores")
            let bench = SyncBench(writes: writes, entries: entries, perBlock: perBlock, pause: .milliseconds(pause))
            let r = try await bench.run { Output.progress($0) }
            say(SyncBench.render(r, writes: writes))
        }
    }
}

struct BenchLedger: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ledger", abstract: "Merkle roots, block creation and full-chain validation.")
    @Option(help: "Entries in the validated chain.") var entries: Int = 100_000
    @Option(help: "Entries per block.") var perBlock: Int = 100
    @Option(help: "Leaves for the Merkle root measurement.") var leaves: Int = 100_000
    @Option(help: "Repeats (best time is reported).") var repeats: Int = 3
    @Flag(help: "Skip the SQLite verification measurement.") var noStore = false

    func run() throws {
        try perform {
            guard entries > 0, perBlock > 0, perBlock <= LedgerLimits.maxEntriesPerBlock, leaves > 1, repeats > 0 else {
                throw KianaNodeError(.invalidInput, "entries, leaves and repeats must be positive; per-block 1…\(LedgerLimits.maxEntriesPerBlock)")
            }
            let bench = LedgerBench(entries: entries, entriesPerBlock: perBlock, leaves: leaves, repeats: repeats, withStore: !noStore)
            say("kiana bench ledger: \(entries) entries in blocks of \(perBlock), \(ProcessInfo.processInfo.activeProcessorCount) cores, best of \(repeats)")
            let rows = try bench.run { Output.progress($0) }
            say(LedgerBench.render(rows))
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
            let b = try EmbedBench(modelDirectory: model.directory(data), sentences: sentences, batch: batch, repeats: repeats, threads: threads)
            say(try b.run { Output.progress($0) })
        }
    }
}

struct BenchVector: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vector", abstract: "Exact scan and HNSW recall@10 and queries/s on clustered vectors, beside faiss.")
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
            say(try b.run { Output.progress($0) })
        }
    }
}

struct BenchAnswers: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "answers",
        abstract: "Answer accuracy, exact copies, citations, abstention and unsupported sentences on the question-answering set.",
        discussion: """
            Runs the answer pipeline as shipped and, in the same run, the plain grounded pipeline it \
            replaced (the baseline) over one split of the bundled question-answering set, on a fresh \
            node holding the retrieval set's passages. --compare-url adds an OpenAI-compatible server \
            (llama.cpp's llama-server) answering the same questions. --calibrate prints the evidence \
            and abstention calibration instead (use it on the dev split only).
            """)
    @OptionGroup var data: DataOptions
    @OptionGroup var model: ModelOptions
    @OptionGroup var backend: BackendFlags
    @Option(help: "Split: test (reported), dev (for tuning) or all.") var split = "test"
    @Option(help: "Answer only the first N questions of the split.") var limit: Int?
    @Option(help: "Pipelines to run: shipped, baseline or both.") var pipeline = "both"
    @Option(help: "Answer length limit in tokens.") var maxTokens = 128
    @Option(help: "Also run against this OpenAI-compatible base URL (…/v1).") var compareUrl: String?
    @Option(help: "The model name the --compare-url server is asked for.") var compareModel = "default"
    @Option(help: "Question-answering set JSON (default: the bundled one).") var set: String?
    @Option(help: "Passages JSON (default: the bundled retrieval set).") var passages: String?
    @Flag(help: "Print the evidence and abstention calibration instead of answering.") var calibrate = false
    @Flag(help: "Print JSON (every outcome and the summaries).") var json = false
    @Flag(help: "With --calibrate: one line per answerable question.") var verbose = false

    func run() async throws {
        try await performAsync {
            guard ["test", "dev", "all"].contains(split) else { throw KianaNodeError(.invalidInput, "--split must be test, dev or all") }
            guard ["shipped", "baseline", "both"].contains(pipeline) else { throw KianaNodeError(.invalidInput, "--pipeline must be shipped, baseline or both") }
            if let limit, limit < 1 { throw KianaNodeError(.invalidInput, "--limit must be positive") }
            var b = AnswerBench(modelDirectory: try model.directory(data))
            b.setPath = set
            b.passagesPath = passages
            b.split = split
            b.limit = limit
            guard (1...4096).contains(maxTokens) else { throw KianaNodeError(.invalidInput, "--max-tokens must be 1…4096") }
            b.maxTokens = maxTokens
            b.backend = try backend.config(data)
            if let compareUrl {
                var c = BackendConfig()
                c.backend = .openai
                c.url = compareUrl
                c.model = compareModel
                b.compare = c
            }
            let note: @Sendable (String) -> Void = { Output.progress($0) }
            if calibrate {
                say(try await b.calibrate(verbose: verbose, progress: note))
                return
            }
            let runs = try await b.run(pipelines: pipeline == "both" ? ["shipped", "baseline"] : [pipeline], progress: note)
            if json {
                let e = JSONEncoder()
                e.outputFormatting = [.sortedKeys]
                say(String(decoding: try e.encode(runs), as: UTF8.self))
            } else {
                say(AnswerBench.render(runs, split: split))
            }
        }
    }
}

struct BenchRetrieval: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "retrieval", abstract: "nDCG@10 and recall@10 of keyword, vector and hybrid search on the evaluation set.")
    @OptionGroup var data: DataOptions
    @OptionGroup var model: ModelOptions
    @Option(help: "Evaluation set JSON (default: the bundled one).") var set: String?
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        try perform {
            let b = try RetrievalBench(modelDirectory: model.directory(data), setPath: set)
            let scores = try b.run { Output.progress($0) }
            if json {
                let rows = scores.map {
                    ["mode": $0.mode.rawValue, "kind": $0.kind, "queries": $0.queries, "ndcg10": $0.ndcg, "recall10": $0.recall] as [String: Any]
                }
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
        abstract:
            "Requests per second and p50/p99 latency of /health and search under concurrent load (wrk), beside nginx serving the same bytes as a static file.")
    @OptionGroup var data: DataOptions
    @OptionGroup var model: ModelOptions
    @Option(help: "Seconds per target.") var seconds: Int = 10
    @Option(help: "Concurrent connections.") var connections: Int = 16
    @Option(help: "wrk threads.") var threads: Int = 2
    @Option(help: "Knowledge items (passages of the evaluation set, at most 331).") var items: Int = 331
    @Flag(help: "Skip the nginx reference.") var noReference = false
    @Option(help: "After the figures, hold a slow-loris flood (half-open connections from 127.0.0.2) this many seconds, then measure again.")
    var slowloris: Int?

    func run() async throws {
        try await performAsync {
            guard (1...600).contains(seconds), (1...1000).contains(connections), (1...64).contains(threads), threads <= connections, items > 0 else {
                throw KianaNodeError(.invalidInput, "seconds 1…600, connections 1…1000, threads 1…64 and at most one per connection, items > 0")
            }
            if let s = slowloris, !(1...3600).contains(s) { throw KianaNodeError(.invalidInput, "--slowloris takes 1…3600 seconds") }
            let bench = HTTPBench(seconds: seconds, connections: connections, threads: threads)
            guard bench.hasWrk else { throw KianaNodeError(.invalidInput, "wrk is not installed: `make setup` (or apt-get install wrk)") }
            let models = try model.directory(data)
            let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("kiana-bench-http-\(UUID().uuidString)").path
            defer { try? FileManager.default.removeItem(atPath: tmp) }
            // A node with the evaluation set's passages as its knowledge.
            let set = try RetrievalSet.load()
            try {
                let (node, _) = try Node.openOrInitialize(directory: DataDirectory(path: tmp))
                try set.seed(node.store, identity: node.identity, count: items)
            }()
            let server = try ServeProcess(arguments: [
                "serve", "--data-dir", tmp, "--port", "0", "--p2p-host", "127.0.0.1", "--p2p-port", "0",
                "--discovery", "off", "--model-dir", models,
            ])
            defer { server.stop() }
            let base = try await server.waitForURL()
            let count = min(items, set.passages.count)
            Output.progress("warming up (loads the embedder, embeds \(count) passages)")
            let warm = try await Self.get(base + "/api/v1/search?q=warm%20up&k=1")
            guard (try? JSONSerialization.jsonObject(with: warm) as? [String: Any])?["hits"] != nil else {
                throw KianaNodeError(.invalidInput, "the node's search does not answer: \(String(decoding: warm, as: UTF8.self).prefix(300))")
            }
            say(
                "kiana bench http: wrk, \(threads) threads, \(connections) connections, \(seconds) s per target, "
                    + "\(ProcessInfo.processInfo.activeProcessorCount) cores shared by wrk and the node; \(count) knowledge items, "
                    + "\(set.queries.count) different queries")
            func search(_ mode: String) -> [String] {
                set.queries.map {
                    base + "/api/v1/search?k=10&mode=\(mode)&q=" + ($0.query.addingPercentEncoding(withAllowedCharacters: Self.unreserved) ?? "x")
                }
            }
            let targets = [
                HTTPBench.Target(name: "GET /health", urls: [base + "/health"]),
                HTTPBench.Target(name: "GET /api/v1/search keyword", urls: search("keyword")),
                HTTPBench.Target(name: "GET /api/v1/search hybrid", urls: search("hybrid")),
            ]
            var rows: [HTTPBench.Result] = []
            for target in targets {
                Output.progress(target.name)
                rows.append(try await bench.measure(target))
            }
            var reference: HTTPBench.Result?
            if noReference {
            } else if bench.hasNginx {
                let body = try await Self.get(base + "/health")
                let nginx = try bench.startNginx(body: String(decoding: body, as: UTF8.self))
                defer { nginx.stop() }
                Output.progress("nginx static file (reference)")
                reference = try await bench.measure(.init(name: "nginx: the same bytes, static", urls: [nginx.url]))
            } else {
                say("(nginx is not installed: no reference; `make bench` installs nginx-light)")
            }
            say(bench.render(rows, reference: reference))
            var errors = rows.reduce(0) { $0 + $1.errors }
            if let hold = slowloris, let port = URLComponents(string: base)?.port {
                errors += try await Self.afterSlowLoris(seconds: hold, port: port, pid: server.process.processIdentifier, bench: bench, targets: targets, before: rows)
            }
            if errors > 0 { throw KianaNodeError(.invalidInput, "\(errors) requests failed") }
        }
    }
}

extension BenchHTTP {
    /// Holds a slow-loris flood on the node, then measures the targets again and prints both
    /// runs side by side with the node's descriptors and resident memory before and after.
    static func afterSlowLoris(
        seconds: Int, port: Int, pid: Int32, bench: HTTPBench, targets: [HTTPBench.Target], before: [HTTPBench.Result]
    ) async throws -> Int {
        func descriptors() -> Int { (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count) ?? -1 }
        // Descriptors and memory once the last wrk run's connections are gone.
        try await Task.sleep(for: .seconds(3))
        let fds0 = descriptors()
        let rss0 = ProcessMemory.of(String(pid)).rss
        Output.progress("slow-loris: \(seconds) s of half-open connections from 127.0.0.2")
        let flood = SlowLoris(port: port, connections: 20_000, rate: 2000, seconds: Double(seconds))
        let report = try await flood.run()
        try await Task.sleep(for: .seconds(2))
        var after: [HTTPBench.Result] = []
        for target in targets {
            Output.progress("\(target.name) (after)")
            after.append(try await bench.measure(target))
        }
        try await Task.sleep(for: .seconds(3))
        let fds1 = descriptors()
        let rss1 = ProcessMemory.of(String(pid)).rss
        say(
            "slow-loris: \(report.attempts) connections in \(seconds) s (\(report.endedByServer) closed or reset by the node, "
                + "at most \(report.maxOpen) open at once on the client)")
        say("after the flood".padded(to: 32) + "req/s".padded(to: 22) + "p99 ms".padded(to: 22) + "errors")
        for (b, a) in zip(before, after) {
            say(
                b.name.padded(to: 32) + String(format: "%.0f → %.0f (%.2f×)", b.perSecond, a.perSecond, a.perSecond / max(b.perSecond, 1e-9)).padded(to: 22)
                    + String(format: "%.1f → %.1f (%.2f×)", b.p99, a.p99, a.p99 / max(b.p99, 1e-9)).padded(to: 22) + "\(a.errors)")
        }
        say("descriptors \(fds0) → \(fds1); resident memory \(rss0 >> 20) MiB → \(rss1 >> 20) MiB (\(String(format: "%+.1f", Double(rss1 - rss0) / Double(max(rss0, 1)) * 100)) %)")
        return after.reduce(0) { $0 + $1.errors }
    }

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

/// `kiana serve` as a child process of this binary (for benchmarks). `@unchecked`: Foundation's
/// `Process` is not Sendable; this class only starts it once and signals it, and guards its output with a lock.
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
            if d.isEmpty {
                h.readabilityHandler = nil
                return
            }
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

struct BenchLLM: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "llm", abstract: "Engine prompt and generation tokens/s beside llama.cpp's llama-bench, and memory while generating.")
    @OptionGroup var data: DataOptions
    @OptionGroup var models: ModelOptions
    @Option(help: "Model name or GGUF path.") var model: String?
    @Option(help: "Thread counts, comma-separated.") var threads: String = "1,2"
    @Option(help: "Prompt tokens (pp).") var prompt: Int = 128
    @Option(help: "Generated tokens (tg).") var generate: Int = 64
    @Option(help: "Repeats.") var repeats: Int = 3
    @Option(help: "llama-bench binary (default: scripts/llama-cpp.sh's build).") var llamaBench: String?

    func run() throws {
        try perform {
            let ts = threads.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
            guard !ts.isEmpty, ts.allSatisfy({ (1...256).contains($0) }), (1...8192).contains(prompt), (1...8192).contains(generate),
                (1...100).contains(repeats)
            else {
                throw KianaNodeError(.invalidInput, "threads 1…256, prompt and generate 1…8192, repeats 1…100")
            }
            let path = try LocalModels.path(model, directory: models.directory(data))
            let b = LLMBench(modelPath: path, threads: ts, promptTokens: prompt, generateTokens: generate, repeats: repeats, llamaBench: llamaBench)
            say(try b.run { Output.progress($0) })
        }
    }
}
