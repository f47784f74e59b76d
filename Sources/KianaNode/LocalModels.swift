import Foundation
import KianaAI

// The language and embedding models in a model directory, used directly (`kiana models`,
// `tokenize`, `generate`, `embed`): no node, no ledger.

/// A language model in the model directory (`kiana models list`). When the GGUF file cannot be
/// read, its fields are nil and `error` says why.
public struct ModelView: Codable, Sendable {
    public var name: String
    public var path: String
    /// Registered with `kiana models add` (false: a folder in the model directory).
    public var registered: Bool
    /// File size.
    public var bytes: Int?
    public var quantisation: String?
    public var parameters: Int?
    public var architecture: String?
    /// The model's context length in tokens.
    public var context: Int?
    public var error: String?
}

/// The numbers of a raw completion (`kiana generate --verbose`).
public struct GenerationView: Codable, Sendable {
    public var promptTokens: Int
    public var promptTokensPerSecond: Double
    public var tokens: Int
    public var tokensPerSecond: Double
    /// stop, stop_string, length, context_full or cancelled.
    public var stopReason: String
}

/// A text's embedding (`kiana embed`).
public struct EmbeddingView: Codable, Sendable {
    public var vector: [Float]
    /// WordPiece tokens the text became.
    public var tokens: Int
}

/// Sampling choices from the command line over a base: nil keeps the base's value, `greedy`
/// replaces the base with greedy decoding (the other choices still apply on top).
public struct SamplingOverrides: Sendable {
    public var greedy: Bool
    public var temperature: Float?
    public var topK: Int?
    public var topP: Float?
    public var minP: Float?
    public var repeatPenalty: Float?
    public var seed: UInt64?

    public init(
        greedy: Bool = false, temperature: Float? = nil, topK: Int? = nil, topP: Float? = nil, minP: Float? = nil,
        repeatPenalty: Float? = nil, seed: UInt64? = nil
    ) {
        self.greedy = greedy
        self.temperature = temperature
        self.topK = topK
        self.topP = topP
        self.minP = minP
        self.repeatPenalty = repeatPenalty
        self.seed = seed
    }

    /// `base` with these choices applied, range-checked (the error names the bad option).
    public func applied(to base: SamplingOptions = SamplingOptions()) throws -> SamplingOptions {
        var s = base
        if let temperature { s.temperature = temperature }
        if greedy { s = .greedy }
        if let topK { s.topK = topK }
        if let topP { s.topP = topP }
        if let minP { s.minP = minP }
        if let repeatPenalty { s.repeatPenalty = repeatPenalty }
        if let seed { s.seed = seed }
        try s.validate()
        return s
    }
}

/// The model directory and what is in it.
public enum LocalModels {
    /// The model directory: `flag`, else $KIANA_MODEL_DIR, else config.json's `models.dir`, else
    /// `<data dir>/models` (or ~/.kiana/models when the data directory has none and that one exists).
    public static func directory(
        _ flag: String?, dataDirectory: DataDirectory, environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws -> String {
        let config = try KianaConfig.resolve(flags: flag.map { ["models.dir": $0] } ?? [:], environment: environment, directory: dataDirectory)
        return directory(config, dataDirectory: dataDirectory, environment: environment)
    }

    /// The model directory of settings already resolved (`models.dir`, else the defaults above).
    public static func directory(
        _ config: KianaConfig, dataDirectory: DataDirectory, environment: [String: String] = ProcessInfo.processInfo.environment
    ) -> String {
        ModelDirectory.resolve(config.text("models.dir"), dataDirectory: dataDirectory.path, environment: environment)
    }

    /// Installed and registered language models, sorted by name, with what their GGUF headers say.
    public static func list(directory: String) -> [ModelView] {
        ModelCatalog(directory: directory).entries().map { e in
            var v = ModelView(name: e.name, path: e.path, registered: e.registered)
            do {
                let g = try GGUFFile(path: e.path)
                v.bytes = g.file.count
                v.quantisation = g.quantisation
                v.parameters = g.parameterCount
                v.architecture = g.metadata["general.architecture"]?.string ?? "?"
                v.context = g.metadata["\(g.metadata["general.architecture"]?.string ?? "llama").context_length"]?.int ?? 0
            } catch {
                v.error = "\(error)"
            }
            return v
        }
    }

    /// Registers a GGUF file by path under `name` (default: the file name) after checking that
    /// the engine can run it; the file is not copied.
    @discardableResult
    public static func add(path: String, name: String?, directory: String) throws -> ModelView {
        let e = try ModelCatalog(directory: directory).register(path: path, name: name)
        return ModelView(name: e.name, path: e.path, registered: e.registered)
    }

    /// Forgets a registered model (the file stays).
    public static func remove(_ name: String, directory: String) throws {
        try ModelCatalog(directory: directory).unregister(name)
    }

    /// The GGUF path of a model name or a path to a .gguf file; nil is the default model.
    public static func path(_ model: String?, directory: String) throws -> String {
        try ModelCatalog(directory: directory).resolve(model)
    }

    /// The language model's token IDs for `text`; with `special`, control tokens such as
    /// <|im_start|> are matched whole.
    public static func tokenize(_ text: String, model: String?, directory: String, special: Bool) throws -> [Int32] {
        let tok = try BPETokenizer(gguf: GGUFFile(path: path(model, directory: directory)))
        return tok.encode(text, special: special)
    }

    /// Completes a raw prompt with the embedded engine (no chat template, no retrieval),
    /// streaming text to `onText` (false stops).
    public static func generate(
        _ prompt: String, model: String?, directory: String, context: Int, threads: Int, maxTokens: Int,
        sampling: SamplingOverrides, stop: [String], onText: (String) -> Bool
    ) throws -> GenerationView {
        let m = try LlamaModel(path: try path(model, directory: directory))
        let session = LlamaSession(model: m, contextSize: context, threads: threads)
        var options = GenerationOptions()
        options.maxTokens = maxTokens
        options.sampling = try sampling.applied()
        options.stop = stop
        let ids = m.tokenizer.encode(prompt)
        let r = try session.generate(prompt: ids, options: options, onText: onText)
        return GenerationView(
            promptTokens: r.promptTokens, promptTokensPerSecond: r.promptTokensPerSecond, tokens: r.tokens.count,
            tokensPerSecond: r.tokensPerSecond, stopReason: r.stopReason.rawValue)
    }

    /// The embedding model's WordPiece token IDs for `text`.
    public static func embeddingTokens(_ text: String, modelDirectory: String) throws -> [Int32] {
        try Node.loadEmbedder(modelDirectory: modelDirectory).tokenize(text)
    }

    /// The embedding of `text` (all-MiniLM-L6-v2, 384 floats).
    public static func embedding(_ text: String, modelDirectory: String) throws -> EmbeddingView {
        let embedder = try Node.loadEmbedder(modelDirectory: modelDirectory)
        return EmbeddingView(vector: embedder.embed(text), tokens: embedder.tokenize(text).count)
    }
}
