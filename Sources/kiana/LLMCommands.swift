import ArgumentParser
import Foundation
import KianaAI
import KianaNode

/// Which language model and how to run it.
struct LLMOptions: ParsableArguments {
    @Option(help: "Model name (see `kiana models list`) or path to a GGUF file (default: smollm2-135m-instruct).")
    var model: String?
    @Option(help: "Worker threads (default: all cores).") var threads: Int?
    @Option(help: "Context window in tokens (default: 2048, at most the model's).") var context: Int = 2048

    func validate() throws {
        if let threads, !(1...256).contains(threads) { throw ValidationError("--threads must be 1…256") }
        guard (16...1 << 20).contains(context) else { throw ValidationError("--context must be 16…1048576") }
    }

    var threadCount: Int { threads ?? ProcessInfo.processInfo.activeProcessorCount }

    func path(_ data: DataOptions, _ models: ModelOptions) throws -> String {
        try ModelCatalog(directory: models.directory(data)).resolve(model)
    }
}

/// Sampling flags shared by generate, ask and chat.
struct SamplingFlags: ParsableArguments {
    @Flag(help: "Always take the most likely token (same as --temperature 0).") var greedy = false
    @Option(help: "Sampling temperature (0 = greedy).") var temperature: Float?
    @Option(help: "Keep the k most likely tokens (0 = off).") var topK: Int?
    @Option(help: "Keep the most likely tokens up to this probability mass.") var topP: Float?
    @Option(help: "Drop tokens less likely than this fraction of the best.") var minP: Float?
    @Option(help: "Penalty for repeating recent tokens (1 = off).") var repeatPenalty: Float?
    @Option(help: "Seed for reproducible sampling.") var seed: UInt64?

    func options(_ base: SamplingOptions = SamplingOptions()) throws -> SamplingOptions {
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

func writeOut(_ s: String) {
    FileHandle.standardOutput.write(Data(s.utf8))
}

func writeErr(_ s: String) {
    FileHandle.standardError.write(Data(s.utf8))
}

struct Tokenize: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print a text's token IDs for the language model as a JSON array (control tokens matched whole).")
    @OptionGroup var data: DataOptions
    @OptionGroup var models: ModelOptions
    @Option(help: "Model name or GGUF path.") var model: String?
    @Flag(help: "Treat control tokens such as <|im_start|> as plain text.") var noSpecial = false
    @Argument(help: "The text.") var text: String

    func run() throws {
        try perform {
            let path = try ModelCatalog(directory: models.directory(data)).resolve(model)
            let tok = try BPETokenizer(gguf: GGUFFile(path: path))
            say("[" + tok.encode(text, special: !noSpecial).map(String.init).joined(separator: ", ") + "]")
        }
    }
}

struct Generate: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Complete a raw prompt with the embedded engine (no chat template, no retrieval).")
    @OptionGroup var data: DataOptions
    @OptionGroup var models: ModelOptions
    @OptionGroup var llm: LLMOptions
    @OptionGroup var sampling: SamplingFlags
    @Option(name: [.customShort("n"), .long], help: "Tokens to generate at most.") var maxTokens: Int = 128
    @Option(help: "Stop before this text (repeatable).") var stop: [String] = []
    @Flag(help: "Print timings to stderr.") var verbose = false
    @Argument(help: "The prompt (control tokens such as <|im_start|> are matched whole).") var prompt: String

    func validate() throws {
        guard (1...1_000_000).contains(maxTokens) else { throw ValidationError("-n must be 1…1000000") }
        guard !prompt.isEmpty else { throw ValidationError("the prompt is empty") }
    }

    func run() throws {
        try perform {
            let model = try LlamaModel(path: try llm.path(data, models))
            let session = LlamaSession(model: model, contextSize: llm.context, threads: llm.threadCount)
            var options = GenerationOptions()
            options.maxTokens = maxTokens
            options.sampling = try sampling.options()
            options.stop = stop
            let ids = model.tokenizer.encode(prompt)
            let r = try session.generate(prompt: ids, options: options) { writeOut($0); return true }
            writeOut("\n")
            if verbose {
                writeErr(String(format: "prompt: %d tokens, %.1f tok/s; generated: %d tokens, %.1f tok/s; stop: %@\n",
                                r.promptTokens, r.promptTokensPerSecond, r.tokens.count, r.tokensPerSecond, r.stopReason.rawValue))
            }
        }
    }
}

struct Models: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Language models: list, add (register a GGUF file), remove.",
                                                    subcommands: [ModelsList.self, ModelsAdd.self, ModelsRemove.self], defaultSubcommand: ModelsList.self)
}

struct ModelsList: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "Installed and registered models with size, quantisation and parameters.")
    @OptionGroup var data: DataOptions
    @OptionGroup var models: ModelOptions
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        try perform {
            let catalog = ModelCatalog(directory: models.directory(data))
            var rows: [[String: Any]] = []
            for e in catalog.entries() {
                var row: [String: Any] = ["name": e.name, "path": e.path, "registered": e.registered]
                do {
                    let g = try GGUFFile(path: e.path)
                    row["bytes"] = g.file.count
                    row["quantisation"] = g.quantisation
                    row["parameters"] = g.parameterCount
                    row["architecture"] = g.metadata["general.architecture"]?.string ?? "?"
                    row["context"] = g.metadata["\(g.metadata["general.architecture"]?.string ?? "llama").context_length"]?.int ?? 0
                } catch {
                    row["error"] = "\(error)"
                }
                rows.append(row)
            }
            if json {
                let d = try JSONSerialization.data(withJSONObject: rows, options: [.sortedKeys, .prettyPrinted])
                say(String(decoding: d, as: UTF8.self))
                return
            }
            if rows.isEmpty { say("No models in \(catalog.directory); run `make setup` or `kiana models add PATH`."); return }
            say("NAME                      SIZE      QUANT  PARAMS   CONTEXT  PATH")
            for r in rows {
                let name = (r["name"] as! String).padding(toLength: 25, withPad: " ", startingAt: 0)
                if let err = r["error"] { say("\(name) unusable: \(err)"); continue }
                let size = String(format: "%.1f MB", Double(r["bytes"] as! Int) / 1e6).padding(toLength: 9, withPad: " ", startingAt: 0)
                let q = (r["quantisation"] as! String).padding(toLength: 6, withPad: " ", startingAt: 0)
                let p = String(format: "%.0fM", Double(r["parameters"] as! Int) / 1e6).padding(toLength: 8, withPad: " ", startingAt: 0)
                let c = "\(r["context"] as! Int)".padding(toLength: 8, withPad: " ", startingAt: 0)
                say("\(name) \(size) \(q) \(p) \(c) \(r["path"] as! String)")
            }
        }
    }
}

struct ModelsAdd: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "add", abstract: "Register a GGUF file by path (it is checked, not copied).")
    @OptionGroup var data: DataOptions
    @OptionGroup var models: ModelOptions
    @Option(help: "Name to use with --model (default: the file name).") var name: String?
    @Argument(help: "Path to a .gguf file.") var path: String

    func run() throws {
        try perform {
            let e = try ModelCatalog(directory: models.directory(data)).register(path: path, name: name)
            say("Registered \(e.name) → \(e.path)")
        }
    }
}

struct ModelsRemove: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "remove", abstract: "Forget a registered model (the file stays).")
    @OptionGroup var data: DataOptions
    @OptionGroup var models: ModelOptions
    @Argument(help: "The registered name.") var name: String

    func run() throws {
        try perform {
            try ModelCatalog(directory: models.directory(data)).unregister(name)
            say("Removed \(name)")
        }
    }
}
