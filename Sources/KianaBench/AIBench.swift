import Foundation
import KianaAI
import KianaCore
import KianaStore

/// Shared helpers of the AI benchmarks: locating the reference scripts, running Python.
enum BenchSupport {
    /// `scripts/NAME` of the checkout the binary was built in (or the current directory's).
    static func script(_ name: String) -> String? {
        var dir = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
        var candidates = [FileManager.default.currentDirectoryPath + "/scripts/" + name]
        for _ in 0..<5 {
            candidates.append(dir.appendingPathComponent("scripts/" + name).path)
            dir.deleteLastPathComponent()
        }
        return candidates.first { FileManager.default.fileExists(atPath: $0) }
    }

    /// Runs python3 with arguments; returns the last stdout line parsed as a JSON object.
    static func python(_ args: [String]) throws -> [String: Any] {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3"] + args
        let out = Pipe()
        let err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        let errData = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        let line = String(decoding: data, as: UTF8.self).split(separator: "\n").last.map(String.init) ?? ""
        guard let obj = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
            throw KianaAIError(.invalidInput, "reference run failed (exit \(p.terminationStatus)): \(String(decoding: errData, as: UTF8.self).prefix(300))")
        }
        return obj
    }

    static func writeFloats(_ rows: [[Float]], to path: String) throws {
        var d = Data(capacity: rows.count * (rows.first?.count ?? 0) * 4)
        for r in rows { r.withUnsafeBytes { d.append(contentsOf: $0) } }
        try d.write(to: URL(fileURLWithPath: path))
    }

    static func readFloats(_ path: String, dimension: Int) throws -> [[Float]] {
        let d = try Data(contentsOf: URL(fileURLWithPath: path))
        let all: [Float] = d.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
        return stride(from: 0, to: all.count, by: dimension).map { Array(all[$0..<min($0 + dimension, all.count)]) }
    }

    static func time(_ body: () throws -> Void) rethrows -> Double {
        let t = DispatchTime.now().uptimeNanoseconds
        try body()
        return Double(DispatchTime.now().uptimeNanoseconds - t) / 1e9
    }
}

/// `kiana bench embed`: sentences per second of the Swift embedder beside the same token IDs
/// through an independent numpy implementation (scripts/minilm_numpy.py), same batches.
public struct EmbedBench: Sendable {
    public var modelDirectory: String
    public var sentences: Int
    public var batch: Int
    public var repeats: Int
    public var threads: Int?

    public init(modelDirectory: String, sentences: Int = 512, batch: Int = 32, repeats: Int = 3, threads: Int? = nil) {
        self.modelDirectory = modelDirectory
        self.sentences = sentences
        self.batch = batch
        self.repeats = repeats
        self.threads = threads
    }

    /// Benchmark texts: the retrieval set's passages (real notes of 40–150 words), repeated.
    static func texts(_ n: Int) throws -> [String] {
        let set = try RetrievalSet.load()
        let passages = set.passages.map { $0.title + "\n" + $0.text }
        return (0..<n).map { passages[$0 % passages.count] }
    }

    public func run(progress: (String) -> Void) throws -> String {
        let embedder = try Embedder.load(modelDirectory: modelDirectory, threads: threads)
        let texts = try Self.texts(sentences)
        var ids: [[Int32]] = []
        let tTok = BenchSupport.time { ids = texts.map(embedder.tokenize) }
        let tokens = ids.reduce(0) { $0 + $1.count }
        progress("swift: \(sentences) sentences, \(tokens) tokens, batches of \(batch), \(embedder.threads) threads")
        _ = embedder.embed(ids: Array(ids.prefix(batch)))
        var best = Double.infinity
        var ours: [[Float]] = []
        for _ in 0..<repeats {
            var out: [[Float]] = []
            let t = BenchSupport.time {
                for start in stride(from: 0, to: ids.count, by: batch) { out += embedder.embed(ids: Array(ids[start..<min(start + batch, ids.count)])) }
            }
            best = min(best, t)
            ours = out
        }
        var lines = [
            "kiana bench embed: all-MiniLM-L6-v2, \(sentences) sentences (\(tokens) tokens, mean \(tokens / max(sentences, 1))), batches of \(batch), best of \(repeats)"
        ]
        lines.append(String(format: "  tokenizer (Swift WordPiece)   %8.0f sentences/s", Double(sentences) / tTok))
        let swiftRate = Double(sentences) / best
        lines.append(String(format: "  Swift embedder                %8.1f sentences/s  (%d threads)", swiftRate, embedder.threads))
        guard let script = BenchSupport.script("minilm_numpy.py") else {
            lines.append("  numpy reference: scripts/minilm_numpy.py not found (run from the checkout)")
            return lines.joined(separator: "\n")
        }
        let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("kiana-bench-embed-\(getpid())")
        try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: tmp) }
        let idsPath = tmp.appendingPathComponent("ids.json").path
        let outPath = tmp.appendingPathComponent("out.f32").path
        try JSONSerialization.data(withJSONObject: ids.map { $0.map(Int.init) }).write(to: URL(fileURLWithPath: idsPath))
        progress("numpy: same token IDs and batches")
        let r = try BenchSupport.python([
            script, "--model", modelDirectory + "/" + MiniLMFiles.folder, "--ids", idsPath,
            "--batch", String(batch), "--repeat", String(repeats), "--out", outPath,
        ])
        guard let numpyRate = (r["sentences_per_second"] as? NSNumber)?.doubleValue else {
            lines.append("  numpy reference failed: \(r)")
            return lines.joined(separator: "\n")
        }
        let theirs = try BenchSupport.readFloats(outPath, dimension: MiniLM.dimension)
        let minCos = zip(ours, theirs).map { a, b in zip(a, b).reduce(Float(0)) { $0 + $1.0 * $1.1 } }.min() ?? 0
        let threadsNote = (r["threads"] as? NSNumber).map { "\($0) BLAS threads" } ?? "BLAS threads: default"
        lines.append(String(format: "  numpy %@ (OpenBLAS)        %8.1f sentences/s  (%@)", (r["numpy"] as? String) ?? "?", numpyRate, threadsNote))
        lines.append(String(format: "  ratio Swift / numpy           %8.2f   (min cosine between the two: %.6f)", swiftRate / numpyRate, minCos))
        return lines.joined(separator: "\n")
    }
}

/// `kiana bench vector`: exact scan and HNSW on clustered vectors, recall@10 against the exact
/// top 10 and single-thread queries per second, beside faiss on the same vectors when installed.
public struct VectorBench: Sendable {
    public var count: Int
    public var queries: Int
    public var dimension = 384
    public var clusters: Int
    public var m: Int
    public var efConstruction: Int
    public var efs: [Int]
    public var k = 10

    public init(count: Int = 100_000, queries: Int = 1000, clusters: Int = 1000, m: Int = 16, efConstruction: Int = 100, efs: [Int] = [16, 32, 64, 128, 256]) {
        self.count = count
        self.queries = queries
        self.clusters = clusters
        self.m = m
        self.efConstruction = efConstruction
        self.efs = efs
    }

    /// Points around random unit centres with per-cluster spread, normalised: neighbourhoods
    /// like real embeddings have, unlike i.i.d. random vectors.
    func clustered(_ n: Int, seed: UInt64) -> [[Float]] {
        var rng = SplitMix64(seed: 7)
        let centres: [[Float]] = (0..<clusters).map { _ in normalise((0..<dimension).map { _ in rng.gaussian() }) }
        let spread: [Float] = (0..<clusters).map { _ in 0.025 + 0.035 * rng.uniform() }
        var r2 = SplitMix64(seed: seed)
        return (0..<n).map { _ in
            let c = Int(r2.next() % UInt64(clusters))
            return normalise(centres[c].map { $0 + spread[c] * r2.gaussian() })
        }
    }

    func normalise(_ v: [Float]) -> [Float] {
        let n = v.reduce(0) { $0 + $1 * $1 }.squareRoot()
        return v.map { $0 / n }
    }

    public func run(progress: (String) -> Void) throws -> String {
        progress("generating \(count) + \(queries) clustered \(dimension)-d vectors (\(clusters) clusters)")
        let base = clustered(count, seed: 1)
        let qs = clustered(queries, seed: 2)
        var flat = VectorMatrix(dimension: dimension)
        flat.reserve(count)
        for v in base { flat.append(v) }
        progress("exact scan: ground truth")
        var truth: [[Int]] = []
        let tExact = BenchSupport.time { truth = qs.map { flat.exactSearch($0, k: k).map(\.label) } }
        var lines = ["kiana bench vector: \(count) vectors, \(dimension)-d, \(clusters) clusters, \(queries) queries, recall@\(k), 1 thread for queries"]
        lines.append("  " + "index".padding(toLength: 28, withPad: " ", startingAt: 0) + "   recall  queries/s")
        let exactQPS = Double(queries) / tExact
        lines.append("  " + ("kiana exact SIMD scan").padding(toLength: 28, withPad: " ", startingAt: 0) + String(format: " %8.4f %10.0f", 1.0, exactQPS))
        progress("HNSW: building (M=\(m), efConstruction=\(efConstruction), 1 thread)")
        var g = HNSW(dimension: dimension, m: m, efConstruction: efConstruction)
        let tBuild = BenchSupport.time {
            for (i, v) in base.enumerated() {
                g.insert(v)
                if i % 20000 == 19999 { progress("  \(i + 1) inserted") }
            }
        }
        var ours: [(ef: Int, recall: Double, qps: Double)] = []
        for ef in efs {
            var found: [[Int]] = []
            var visited = VisitedSet()
            let t = BenchSupport.time { found = qs.map { g.search($0, k: k, ef: ef, visited: &visited).map(\.label) } }
            let recall = zip(found, truth).map { Double(Set($0).intersection($1).count) / Double(k) }.reduce(0, +) / Double(queries)
            ours.append((ef, recall, Double(queries) / t))
            lines.append(
                "  " + ("kiana HNSW ef=\(ef)").padding(toLength: 28, withPad: " ", startingAt: 0) + String(format: " %8.4f %10.0f", recall, Double(queries) / t)
            )
        }
        lines.append(String(format: "  kiana HNSW build: %.1f s (1 thread)", tBuild))
        // faiss on the same vectors
        guard let script = BenchSupport.script("faiss_bench.py") else {
            lines.append("  faiss: scripts/faiss_bench.py not found (run from the checkout)")
            return lines.joined(separator: "\n")
        }
        let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("kiana-bench-vector-\(getpid())")
        try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: tmp) }
        let bp = tmp.appendingPathComponent("base.f32").path
        let qp = tmp.appendingPathComponent("q.f32").path
        let tp = tmp.appendingPathComponent("truth.i32").path
        try BenchSupport.writeFloats(base, to: bp)
        try BenchSupport.writeFloats(qs, to: qp)
        var td = Data()
        for row in truth { for x in row { withUnsafeBytes(of: Int32(x).littleEndian) { td.append(contentsOf: $0) } } }
        try td.write(to: URL(fileURLWithPath: tp))
        progress("faiss: same vectors, same truth")
        let r = try BenchSupport.python([
            script, "--base", bp, "--queries", qp, "--dim", String(dimension), "--k", String(k), "--truth", tp,
            "--m", String(m), "--ef-construction", String(efConstruction), "--ef", efs.map(String.init).joined(separator: ","),
        ])
        if let e = r["error"] {
            lines.append("  faiss: \(e) (pip install faiss-cpu)")
            return lines.joined(separator: "\n")
        }
        let version = r["faiss"] as? String ?? "?"
        if let flatR = r["flat"] as? [String: Any], let q = (flatR["qps"] as? NSNumber)?.doubleValue {
            lines.append(
                String(
                    format: "  %-28@ %8.4f %10.0f   kiana/faiss qps %.2f", "faiss \(version) IndexFlatIP" as NSString,
                    (flatR["recall"] as? NSNumber)?.doubleValue ?? 0, q, exactQPS / q))
        }
        for h in (r["hnsw"] as? [[String: Any]]) ?? [] {
            guard let ef = (h["ef"] as? NSNumber)?.intValue, let q = (h["qps"] as? NSNumber)?.doubleValue else { continue }
            let mine = ours.first { $0.ef == ef }
            lines.append(
                String(
                    format: "  %-28@ %8.4f %10.0f   kiana/faiss qps %.2f", "faiss HNSWFlat ef=\(ef)" as NSString,
                    (h["recall"] as? NSNumber)?.doubleValue ?? 0, q, (mine?.qps ?? 0) / q))
        }
        if let b = (r["build_seconds"] as? NSNumber)?.doubleValue {
            lines.append(String(format: "  faiss HNSW build: %.1f s (%@ threads)", b, "\(r["build_threads"] ?? "?")"))
        }
        return lines.joined(separator: "\n")
    }
}

extension SplitMix64 {
    mutating func uniform() -> Float { Float(next() >> 40) / Float(1 << 24) }
    mutating func gaussian() -> Float {
        let u1 = max(uniform(), 1e-7)
        let u2 = uniform()
        return (-2 * log(u1)).squareRoot() * cos(2 * .pi * u2)
    }
}
