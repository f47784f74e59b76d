import ArgumentParser
import Foundation
import KianaNode

/// Which language model and how to run it.
struct LLMOptions: ParsableArguments {
    @Option(help: "Model name (see `kiana models list`) or path to a GGUF file (default: smollm2-135m-instruct).")
    var model: String?
    @Option(help: "Worker threads (default: all cores).") var threads: Int?
    @Option(help: "Context window in tokens (at most the model's).") var context: Int = 2048

    func validate() throws {
        if let threads, !(1...256).contains(threads) { throw ValidationError("--threads must be 1…256") }
        guard (16...1 << 20).contains(context) else { throw ValidationError("--context must be 16…1048576") }
    }

    var threadCount: Int { threads ?? ProcessInfo.processInfo.activeProcessorCount }
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

    var overrides: SamplingOverrides {
        SamplingOverrides(greedy: greedy, temperature: temperature, topK: topK, topP: topP, minP: minP, repeatPenalty: repeatPenalty, seed: seed)
    }
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
            let ids = try LocalModels.tokenize(text, model: model, directory: models.directory(data), special: !noSpecial)
            say("[" + ids.map(String.init).joined(separator: ", ") + "]")
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
            let r = try LocalModels.generate(
                prompt, model: llm.model, directory: models.directory(data), context: llm.context,
                threads: llm.threadCount, maxTokens: maxTokens, sampling: sampling.overrides, stop: stop
            ) {
                Output.stream($0)
                return true
            }
            Output.write(1, "\n")
            if verbose {
                Output.write(
                    2,
                    String(
                        format: "prompt: %d tokens, %.1f tok/s; generated: %d tokens, %.1f tok/s; stop: %@\n",
                        r.promptTokens, r.promptTokensPerSecond, r.tokens, r.tokensPerSecond, r.stopReason))
            }
        }
    }
}

struct Models: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Language models: list, add (register a GGUF file), remove.",
        subcommands: [ModelsList.self, ModelsAdd.self, ModelsRemove.self], defaultSubcommand: ModelsList.self)
}

struct ModelsList: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "Installed and registered models with size, quantisation and parameters.")
    @OptionGroup var data: DataOptions
    @OptionGroup var models: ModelOptions
    @OptionGroup var output: OutputOptions

    func run() throws {
        try perform {
            let directory = try models.directory(data)
            try output.emit(LocalModels.list(directory: directory)) { rows in
                if rows.isEmpty {
                    say("No models in \(directory); run `make setup` or `kiana models add PATH`.")
                    return
                }
                say("NAME                      SIZE      QUANT  PARAMS   CONTEXT  PATH")
                for r in rows {
                    let name = r.name.padding(toLength: 25, withPad: " ", startingAt: 0)
                    if let err = r.error {
                        say("\(name) unusable: \(err)")
                        continue
                    }
                    let size = String(format: "%.1f MB", Double(r.bytes ?? 0) / 1e6).padding(toLength: 9, withPad: " ", startingAt: 0)
                    let q = (r.quantisation ?? "").padding(toLength: 6, withPad: " ", startingAt: 0)
                    let p = String(format: "%.0fM", Double(r.parameters ?? 0) / 1e6).padding(toLength: 8, withPad: " ", startingAt: 0)
                    let c = "\(r.context ?? 0)".padding(toLength: 8, withPad: " ", startingAt: 0)
                    say("\(name) \(size) \(q) \(p) \(c) \(r.path)")
                }
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
            let directory = try models.directory(data)
            let e = try LocalModels.add(path: path, name: name, directory: directory)
            // The model directory may be shared (~/.kiana/models): say where the name is kept.
            say("Registered \(e.name) → \(e.path) (in \(directory)/registered.json)")
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
            try LocalModels.remove(name, directory: models.directory(data))
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
    @Option(help: "Bearer token for an OpenAI-compatible server (prefer KIANA_LLM_API_KEY: flags show in `ps`).") var apiKey: String?

    /// The flags given, keyed by setting.
    var given: [String: String] {
        var g: [String: String] = [:]
        g["llm.backend"] = backend
        g["llm.url"] = backendUrl
        g["llm.model"] = model
        g["llm.context"] = context.map(String.init)
        g["llm.threads"] = threads.map(String.init)
        g["llm.apiKey"] = apiKey
        return g
    }

    func config(_ data: DataOptions) throws -> BackendConfig {
        try BackendConfig.load(directory: data.directory, flags: given)
    }
}

/// Loads what answering needs: the node, the backend and a retriever (keyword-only, with a
/// warning, when the embedding model is missing).
func assistant(
    _ data: DataOptions, _ models: ModelOptions, _ flags: BackendFlags, check: ((Node) throws -> Void)? = nil
) throws -> LocalAssistant {
    let node = try Node.open(directory: data.directory)
    try check?(node)
    if node.directory.damage != nil {
        Output.note("kiana: the ledger here is marked damaged (`kiana status` says why): answers come from what is stored, and nothing is kept")
    }
    // Chunks waiting for their vectors are embedded first (after an interrupted ingest this
    // takes a while): shown as progress, not a silent wait.
    let a = try LocalAssistant(node: node, config: flags.config(data), modelDirectory: models.directory(data), progress: ProgressBar().handler)
    if let reason = a.keywordOnly { Output.note("kiana: \(reason); searching by keyword only") }
    return a
}

func printSources(_ r: AskResult) {
    if r.abstained || r.aboutRequest { return }  // the answer says that nothing taught answers it, or is about the request
    guard !r.citations.isEmpty else {
        if r.sources.isEmpty { say("\n(no knowledge matched this question)") } else { say("\n(no source cited)") }
        return
    }
    if !r.support.isEmpty {
        say("\nSupported by:")
        for s in r.support { say("[\(s.number)] “\(s.text)”") }
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
    @Option(help: "Take the question from a WAV recording (English, recognised offline).") var voice: String?
    @Flag(help: "Speak the answer, sentence by sentence as it is generated (to the speakers, or --audio-out).") var speak = false
    @Option(help: "With --speak: write the spoken answer to this WAV file.") var audioOut: String?
    @OptionGroup var voiceFlags: VoiceFlags
    @Argument(help: "The question (or --voice FILE.wav).") var question: String?

    func validate() throws {
        guard (1...20).contains(sources) else { throw ValidationError("--sources must be 1…20") }
        guard (1...32768).contains(maxTokens) else { throw ValidationError("-n must be 1…32768") }
        guard (question == nil) != (voice == nil) else { throw ValidationError("give a question or --voice FILE.wav (one of them)") }
        guard audioOut == nil || speak else { throw ValidationError("--audio-out needs --speak") }
    }

    func run() async throws {
        try await performAsync {
            // Voice first: a recording that cannot be heard, or a missing engine, stops here
            // before any model is loaded.
            var question = self.question ?? ""
            var speaking: AnswerSpeaker?
            if voice != nil || speak {
                let v = try LocalVoice.open(directory: try? data.directory, flags: voiceFlags.given)
                if let voice {
                    let heard = try v.transcribe(try LocalVoice.read(voice, limits: v.settings.limits))
                    guard !heard.text.isEmpty else { throw KianaNodeError(.invalidInput, "no words were recognised in \(voice)") }
                    question = heard.text
                    Output.note("kiana: heard “\(heard.text)”")
                }
                if speak {
                    let language = LocalVoice.language(of: question)
                    _ = try v.speechFormat(language == "de" ? "Hallo." : "Hello.", language: language)
                    let s = AnswerSpeaker(v: v, sink: try SpeechSink(path: audioOut, stdoutAllowed: false, fileOption: "--audio-out FILE.wav"))
                    s.language = language
                    speaking = s
                }
            }
            let speaker = speaking
            let asked = question
            let assistant = try assistant(data, models, backend) { node in try node.checkAsk(asked, conversation: conversation) }
            var o = AskOptions()
            o.sources = sources
            o.maxTokens = maxTokens
            o.sampling = try sampling.overrides.applied(to: o.sampling)
            o.conversation = conversation
            let streaming = !json
            let r = try await assistant.ask(question, options: o) { piece in
                if streaming { Output.stream(piece) }
                speaker?.add(piece)
                return true
            }
            if let speaker {
                // An answer that arrives whole (checked before it is shown) is spoken here.
                if !speaker.received { speaker.add(r.answer) }
                try speaker.finish()
            }
            if json {
                try Output.json(AskView(r), pretty: false)
            } else {
                Output.write(1, "\n")
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
            let assistant = try assistant(data, models, backend)
            var o = AskOptions()
            o.sampling = try sampling.overrides.applied(to: o.sampling)
            o.conversation = conversation
            let tty = isatty(0) == 1
            if tty { say("KI_ana (\(assistant.label)). Ask anything; \"remember that …\" teaches; /new, /quit.") }
            while true {
                if tty { Output.write(1, "\n> ") }
                guard let line = readLine() else { break }
                let q = line.trimmingCharacters(in: .whitespaces)
                if q.isEmpty { continue }
                if q == "/quit" || q == "/exit" { break }
                if q == "/new" {
                    o.conversation = nil
                    say("(new conversation)")
                    continue
                }
                // A mistyped command is not sent as a question ("/qiut" would be asked).
                if q.hasPrefix("/"), q.count > 1, q.dropFirst().allSatisfy(\.isLetter) {
                    Output.note("kiana: unknown command \(Terminal.escape(q)); the commands are /new, /quit and /exit")
                    continue
                }
                do {
                    let r = try await assistant.ask(q, options: o) {
                        Output.stream($0)
                        return true
                    }
                    Output.write(1, "\n")
                    printSources(r)
                    // None when nothing is kept (a data directory open for reading only).
                    o.conversation = r.conversationId.isEmpty ? nil : r.conversationId
                } catch {
                    Output.note("kiana: \(errorLine(for: error))")
                }
            }
            if let c = o.conversation { Output.note("conversation \(c)") }
        }
    }
}

struct Conversations: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List conversations, show one, or delete one.")
    @OptionGroup var data: DataOptions
    @OptionGroup var output: OutputOptions
    @Argument(help: "A conversation to show in full (its ID or a unique prefix of 4 or more characters).") var id: String?
    @Flag(help: "Delete the conversation: what was asked and answered in it (the knowledge it cites stays).") var delete = false

    func run() throws {
        try perform {
            if delete {
                guard let id else { throw KianaNodeError(.invalidInput, "--delete needs the conversation's ID") }
                let node = try Node.open(directory: data.directory)
                say("Deleted conversation \(try node.deleteConversation(id))")
                return
            }
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
                if list.isEmpty {
                    say("No conversations yet.")
                    return
                }
                for c in list {
                    say(Terminal.escape("\(c.id)  \(date(UInt64(max(0, c.updated))))  \(c.title)"))
                }
            }
        }
    }
}
