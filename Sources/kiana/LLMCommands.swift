import ArgumentParser
import Foundation
import KianaAI
import KianaBench
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
            let catalog = try ModelCatalog(directory: models.directory(data))
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

/// Backend choice on the command line (over config.json and the environment).
struct BackendFlags: ParsableArguments {
    @Option(help: "Language model backend: embedded, ollama or openai (default: config, else embedded).") var backend: String?
    @Option(help: "Base URL of the Ollama or OpenAI-compatible server.") var backendUrl: String?
    @Option(help: "Model name or GGUF path (embedded) or the server's model name.") var model: String?
    @Option(help: "Context window in tokens.") var context: Int?
    @Option(help: "Worker threads for the embedded engine.") var threads: Int?

    func config(_ data: DataOptions) throws -> BackendConfig {
        var c = try BackendConfig.load(directory: data.directory)
        if let backend {
            guard let k = BackendConfig.Kind(rawValue: backend) else { throw ValidationError("--backend must be embedded, ollama or openai") }
            c.backend = k
        }
        if let backendUrl { c.url = backendUrl }
        if let model { c.model = model }
        if let context { c.context = context }
        if let threads {
            guard (1...256).contains(threads) else { throw ValidationError("--threads must be 1…256") }
            c.threads = threads
        }
        return c
    }
}

/// Loads what answering needs: node, backend, and a retriever (keyword-only when the
/// embedding model is missing, with a warning).
func assistantParts(_ data: DataOptions, _ models: ModelOptions, _ flags: BackendFlags) throws -> (Node, any ChatBackend, Retriever?) {
    let node = try Node.open(directory: data.directory)
    let backend = try flags.config(data).make(modelDirectory: models.directory(data))
    var retriever: Retriever?
    do {
        let embedder = try Node.loadEmbedder(modelDirectory: models.directory(data))
        retriever = try node.retriever(embedder)
    } catch let e as KianaAIError where e.code == .modelMissing || e.code == .modelCorrupt {
        writeErr("kiana: \(e.message); searching by keyword only\n")
    }
    return (node, backend, retriever)
}

func printSources(_ r: AskResult) {
    guard !r.citations.isEmpty else {
        if r.sources.isEmpty { say("\n(no knowledge matched this question)") } else { say("\n(no source cited)") }
        return
    }
    say("\nSources:")
    for c in r.citations {
        let where_ = c.source.map { " — \($0)" } ?? ""
        say("[\(c.number)] \(c.title ?? String(c.snippet.prefix(70)))\(where_) (\(c.id))")
    }
}

struct Ask: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Answer a question from what KI_ana was taught, with sources (\"remember that …\" teaches).")
    @OptionGroup var data: DataOptions
    @OptionGroup var models: ModelOptions
    @OptionGroup var backend: BackendFlags
    @OptionGroup var sampling: SamplingFlags
    @Option(help: "Continue this conversation.") var conversation: String?
    @Option(help: "Knowledge items retrieved into the prompt.") var sources: Int = 4
    @Option(name: [.customShort("n"), .long], help: "Answer length limit in tokens.") var maxTokens: Int = 384
    @Flag(help: "Print one JSON object (answer, citations, conversation) instead of streaming.") var json = false
    @Argument(help: "The question.") var question: String

    func validate() throws {
        guard (1...20).contains(sources) else { throw ValidationError("--sources must be 1…20") }
        guard (1...32768).contains(maxTokens) else { throw ValidationError("-n must be 1…32768") }
    }

    func run() async throws {
        try await performAsync {
            let (node, llm, retriever) = try assistantParts(data, models, backend)
            var o = AskOptions()
            o.sources = sources
            o.maxTokens = maxTokens
            o.sampling = try sampling.options(o.sampling)
            o.conversation = conversation
            let streaming = !json
            let r = try await node.ask(question, backend: llm, retriever: retriever, options: o) { piece in
                if streaming { writeOut(piece) }
                return true
            }
            if json {
                let obj: [String: Any] = [
                    "answer": r.answer, "conversation": r.conversationId,
                    "citations": r.citations.map { ["number": $0.number, "id": $0.id, "title": $0.title as Any, "source": $0.source as Any] },
                    "sources": r.sources.map(\.id), "remembered": r.remembered?.description as Any,
                ]
                say(String(decoding: try JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys]), as: UTF8.self))
            } else {
                writeOut("\n")
                printSources(r)
            }
        }
    }
}

struct Chat: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Talk with KI_ana interactively (history kept; /new starts over, /quit ends).")
    @OptionGroup var data: DataOptions
    @OptionGroup var models: ModelOptions
    @OptionGroup var backend: BackendFlags
    @OptionGroup var sampling: SamplingFlags
    @Option(help: "Continue this conversation.") var conversation: String?

    func run() async throws {
        try await performAsync {
            let (node, llm, retriever) = try assistantParts(data, models, backend)
            var o = AskOptions()
            o.sampling = try sampling.options(o.sampling)
            o.conversation = conversation
            let tty = isatty(0) == 1
            if tty { say("KI_ana (\(llm.label)). Ask anything; \"remember that …\" teaches; /new, /quit.") }
            while true {
                if tty { writeOut("\n> ") }
                guard let line = readLine() else { break }
                let q = line.trimmingCharacters(in: .whitespaces)
                if q.isEmpty { continue }
                if q == "/quit" || q == "/exit" { break }
                if q == "/new" { o.conversation = nil; say("(new conversation)"); continue }
                do {
                    let r = try await node.ask(q, backend: llm, retriever: retriever, options: o) { writeOut($0); return true }
                    writeOut("\n")
                    printSources(r)
                    o.conversation = r.conversationId
                } catch {
                    writeErr("kiana: \(errorLine(for: error))\n")
                }
            }
            if let c = o.conversation { writeErr("conversation \(c)\n") }
        }
    }
}

struct Conversations: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List conversations, or show one.")
    @OptionGroup var data: DataOptions
    @OptionGroup var output: OutputOptions
    @Argument(help: "A conversation to show in full.") var id: String?

    func run() throws {
        try perform {
            let node = try Node.open(directory: data.directory, forReading: true)
            if let id {
                try output.emit(try node.conversationMessages(id)) { messages in
                    for m in messages {
                        say("\(m.role): \(m.content)" + (m.citations.isEmpty ? "" : "  [cites \(m.citations.joined(separator: ", "))]"))
                    }
                }
                return
            }
            try output.emit(try node.conversationList()) { list in
                if list.isEmpty { say("No conversations yet."); return }
                for c in list {
                    say(Terminal.escape("\(c.id)  \(date(UInt64(max(0, c.updated))))  \(c.title)"))
                }
            }
        }
    }
}
