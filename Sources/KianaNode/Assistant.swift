import Foundation
import KianaAI
import KianaCore
import KianaServer
import KianaStore

/// Which language model answers: the embedded engine (default), Ollama, or an
/// OpenAI-compatible server: the `llm.*` settings (flag > KIANA_LLM_* > `<data dir>/config.json`'s
/// `"llm": {…}` > default; docs/configuration.md).
public struct BackendConfig: Codable, Sendable, Equatable {
    public enum Kind: String, Codable, Sendable, CaseIterable { case embedded, ollama, openai }
    public var backend: Kind = .embedded
    /// Embedded: a model name or GGUF path (default smollm2-135m-instruct). Remote: the model name.
    public var model: String?
    /// Remote base URL: Ollama's (default http://127.0.0.1:11434) or an OpenAI-compatible …/v1.
    public var url: String?
    /// Bearer token for OpenAI-compatible servers (prefer the environment over the file).
    public var apiKey: String?
    /// Context window in tokens (default 2048 embedded, 8192 remote).
    public var context: Int?
    public var threads: Int?

    public init() {}

    enum CodingKeys: String, CodingKey { case backend, model, url, apiKey, context, threads }

    /// The configuration from flags (keyed by setting, e.g. "llm.model"), the environment and the
    /// data directory's config.json, in that order (`KianaConfig`).
    public static func load(
        directory: DataDirectory, flags: [String: String] = [:], environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws -> BackendConfig {
        try BackendConfig(try KianaConfig.resolve(flags: flags, environment: environment, directory: directory))
    }

    /// The `llm.*` settings of a resolved configuration.
    public init(_ config: KianaConfig) throws {
        if let b = config.text("llm.backend") {
            guard let k = Kind(rawValue: b) else { throw KianaNodeError(.invalidInput, "llm.backend must be embedded, ollama or openai") }
            backend = k
        }
        model = config.text("llm.model")
        url = config.text("llm.url")
        apiKey = config.text("llm.apiKey")
        context = config.number("llm.context")
        threads = config.number("llm.threads")
    }

    /// Checks what `make` needs without loading anything: a remote backend's model name and URL.
    public func validated() throws -> BackendConfig {
        if let context, !(16...1 << 20).contains(context) { throw KianaNodeError(.invalidInput, "the context must be 16…1048576 tokens") }
        switch backend {
        case .embedded: break
        case .ollama:
            guard let model, !model.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else { throw KianaNodeError(.invalidInput, "the ollama backend needs a model name (--model or KIANA_LLM_MODEL)") }
            _ = try Self.url(url ?? "http://127.0.0.1:11434")
        case .openai:
            guard let model, !model.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else { throw KianaNodeError(.invalidInput, "the openai backend needs a model name (--model or KIANA_LLM_MODEL)") }
            guard let url else { throw KianaNodeError(.invalidInput, "the openai backend needs a base URL ending in /v1 (--backend-url or KIANA_LLM_URL)") }
            _ = try Self.url(url)
        }
        return self
    }

    /// Builds the backend. The embedded model is loaded here (a second or so).
    public func make(modelDirectory: String) throws -> any ChatBackend {
        _ = try validated()
        switch backend {
        case .embedded:
            let catalog = ModelCatalog(directory: modelDirectory)
            let path = try catalog.resolve(model)
            let m = try LlamaModel(path: path)
            let name = model ?? ModelCatalog.defaultModel
            return try EmbeddedBackend(
                model: m, name: name, contextSize: context ?? 2048,
                threads: threads ?? ProcessInfo.processInfo.activeProcessorCount)
        case .ollama:
            guard let model, !model.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else { throw KianaNodeError(.invalidInput, "the ollama backend needs a model name (--model or KIANA_LLM_MODEL)") }
            return OllamaBackend(baseURL: try Self.url(url ?? "http://127.0.0.1:11434"), model: model, contextSize: context ?? 8192)
        case .openai:
            guard let model, !model.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else { throw KianaNodeError(.invalidInput, "the openai backend needs a model name (--model or KIANA_LLM_MODEL)") }
            guard let url else { throw KianaNodeError(.invalidInput, "the openai backend needs a base URL ending in /v1 (--backend-url or KIANA_LLM_URL)") }
            return OpenAIBackend(baseURL: try Self.url(url), model: model, apiKey: apiKey, contextSize: context ?? 8192)
        }
    }

    static func url(_ s: String) throws -> URL {
        guard let u = URL(string: s), let scheme = u.scheme, ["http", "https"].contains(scheme), u.host != nil else {
            throw KianaNodeError(.invalidInput, "\(s) is not an http(s) URL")
        }
        return u
    }
}

/// A cited source of an answer.
public struct Citation: Sendable, Codable, Equatable {
    /// The number the prompt gave the source.
    public var number: Int
    public var id: String
    public var title: String?
    public var source: String?
    public var snippet: String
}

/// The outcome of `ask`.
public struct AskResult: Sendable {
    public var answer: String
    public var citations: [Citation]
    /// Every source that was in the prompt, numbered from 1.
    public var sources: [GroundingSource]
    public var conversationId: String
    /// Set when the question was "remember that …": the new knowledge item.
    public var remembered: ItemID?
    public var reply: ChatReply?
    /// The source sentences that support the answer (trusted answers only), so the owner can
    /// check it at a glance.
    public var support: [SupportingSentence] = []
    /// True when nothing taught answers the question and the answer says so (no model call).
    public var abstained = false
    /// True when the answer is about the request itself ("remember what?"), not from knowledge.
    public var aboutRequest = false
    /// True when the draft did not hold up and the answer quotes the best source sentence.
    public var quoted = false
    /// Said before the answer when the note behind it is about a neighbour of what was asked
    /// (`Trust.neighbourNote`); nil otherwise.
    public var note: String?
    /// The model's draft before checking (trusted answers; nil when no model was asked).
    public var draft: String?
}

/// A sentence of a cited source that supports an answer (the API's shape).
public typealias SupportingSentence = SupportDTO

/// Options of one question.
public struct AskOptions: Sendable {
    /// Sources retrieved into the prompt.
    public var sources = 4
    public var maxTokens = 384
    public var sampling: SamplingOptions = {
        var s = SamplingOptions()
        s.temperature = 0.2
        return s
    }()
    /// Continue this conversation (nil: start one).
    public var conversation: String?
    /// Keep the conversation (false: a one-off question, nothing stored).
    public var persist = true
    /// Earlier turns supplied by the caller (the OpenAI/Ollama-compatible APIs send the whole
    /// conversation each time); used instead of a stored conversation, and nothing is stored.
    public var history: [ChatMessage]?
    /// Answer through the trust pipeline (abstain before generating, check the draft after it,
    /// answer in the question's language). False gives the plain grounded answer of earlier
    /// versions, kept as the benchmark's baseline.
    public var trusted = true
    public var trust = TrustSettings()
    public init() {}
}

extension Node {
    public var conversations: ConversationStore { ConversationStore(database: store.database) }

    /// Answers a question from the knowledge base: retrieves the best items (hybrid search when
    /// the embedder is available, keyword search otherwise), puts them into the prompt as numbered
    /// sources, streams the backend's answer to `onText`, maps its citations back to item IDs and
    /// stores the turn in the conversation. "remember that …" / "merk dir …" adds knowledge instead.
    /// The question trimmed, or the reason it cannot be asked (empty, over 64 KiB, a NUL).
    public static func checkedQuestion(_ question: String, conversation: String?) throws -> String {
        try Grounding.checkedQuestion(question, conversation: conversation)
    }

    /// Refuses a question before any model loads or any pending chunk is embedded: a bad
    /// question, or a conversation that does not exist.
    public func checkAsk(_ question: String, conversation: String?) throws {
        _ = try Self.checkedQuestion(question, conversation: conversation)
        if let conversation, try conversations.conversation(conversation) == nil {
            throw KianaNodeError(.notFound, "no conversation \(conversation)")
        }
    }

    public func ask(
        _ question: String, backend: any ChatBackend, retriever: Retriever?, options: AskOptions = AskOptions(),
        onText: @escaping @Sendable (String) -> Bool
    ) async throws -> AskResult {
        let q = try Self.checkedQuestion(question, conversation: options.conversation)
        let now = Int64(currentMillis())
        let node = self
        // Store calls and retrieval (which embeds the question) run off the cooperative pool.
        let (conversation, stored) = try await blocking { () throws -> (Conversation?, [ConversationMessage]) in
            guard let id = options.conversation else { return (nil, []) }
            guard let c = try node.conversations.conversation(id) else { throw KianaNodeError(.notFound, "no conversation \(id)") }
            return (c, try node.conversations.messages(c.id))
        }
        // A data directory open for reading only (read-only files, a damaged ledger) answers
        // but keeps no conversation.
        let persist = options.persist && options.history == nil && !node.readOnly

        // Stores the turn (unless it is a one-off) and names its conversation.
        @Sendable func finish(_ result: AskResult) async throws -> AskResult {
            let (answer, cited) = (result.answer, result.citations.map(\.id))
            let detail = AnswerDetail(
                cited: result.citations.map { .init(number: $0.number, id: $0.id, title: $0.title, source: $0.source) },
                support: result.support, abstained: result.abstained)
            var result = result
            result.conversationId = try await blocking {
                var id = conversation?.id ?? ""
                if persist {
                    if conversation == nil { id = try node.conversations.create(title: q, now: now).id }
                    try node.conversations.append(
                        [
                            ConversationMessage(conversationId: id, role: "user", content: q, created: now),
                            ConversationMessage(
                                conversationId: id, role: "assistant", content: answer, citations: cited,
                                created: Int64(currentMillis()), detail: detail),
                        ], to: id, now: Int64(currentMillis()))
                }
                return id
            }
            return result
        }

        if Grounding.isBareRememberCommand(q) {
            let answer =
                q.lowercased().hasPrefix("merk")
                ? "Was soll ich mir merken? Sag „merk dir, dass …“ und dann, was ich wissen soll."
                : "Remember what? Say “remember that” and then the fact, for example: remember that the bakery opens at seven."
            _ = onText(answer)
            var result = AskResult(answer: answer, citations: [], sources: [], conversationId: "", remembered: nil, reply: nil)
            result.aboutRequest = true
            return try await finish(result)
        }
        if let fact = Grounding.rememberCommand(q) {
            // The same fact taught again (a client's retry, a UI's "regenerate") is not a second item.
            let (item, known) = try await blocking { () throws -> (ItemID, Bool) in
                if let old = try node.store.liveItem(text: fact, source: "chat") { return (old.id, true) }
                return (try node.remember(text: fact, tags: ["chat"], source: "chat").0, false)
            }
            // Said in the language it was asked in ("merk dir …" is answered in German).
            let german = ["merk", "kannst du", "könntest du", "bitte merk"].contains { q.lowercased().hasPrefix($0) }
            let answer =
                german
                ? (known ? "Das weiß ich schon: \(fact)" : "Ich merke mir: \(fact)")
                : (known ? "I know that already: \(fact)" : "I'll remember that: \(fact)")
            _ = onText(answer)
            let cite = Citation(number: 1, id: item.description, title: nil, source: "chat", snippet: fact)
            return try await finish(
                AskResult(
                    answer: answer, citations: [cite], sources: [GroundingSource(id: item.description, title: nil, text: fact, source: "chat")],
                    conversationId: "", remembered: item, reply: nil))
        }

        let past = options.history ?? stored.map { ChatMessage($0.role == "assistant" ? .assistant : .user, $0.content) }
        if options.trusted, let reply = Grounding.smallTalkReply(q) {
            _ = onText(reply)
            var result = AskResult(answer: reply, citations: [], sources: [], conversationId: "", remembered: nil, reply: nil)
            result.aboutRequest = true
            return try await finish(result)
        }
        if options.trusted {
            // A follow-up that names little of its own ("and his number?") is looked up together
            // with the previous question of the conversation (small talk in between is no question).
            let previous =
                Trust.subjectWords(q).count <= 1 ? past.last { $0.role == .user && Grounding.smallTalkReply($0.content) == nil }?.content : nil
            return try await finish(trustedAnswer(q, context: previous, backend: backend, retriever: retriever, options: options, onText: onText))
        }

        // Retrieve.
        let sources = try await retrieveSources(q, retriever: retriever, count: options.sources)
        let answerTokens = min(options.maxTokens, backend.contextSize / 2)
        let prompt = try Grounding.build(
            question: q, sources: sources, history: past, contextSize: backend.contextSize,
            answerTokens: answerTokens, countTokens: backend.countTokens)
        var request = ChatRequest(messages: prompt.messages)
        request.maxTokens = answerTokens
        request.sampling = options.sampling
        // Small models like to recite the source list after answering; that is not the answer.
        request.stop = ["\n[1] ", "\nSources:", "\n\nSources"]
        let reply = try await backend.chat(request, onText: onText)
        let numbers = Grounding.citations(answer: reply.text, sources: prompt.sources)
        let citations = numbers.map { n in
            let s = prompt.sources[n - 1]
            return Citation(number: n, id: s.id, title: s.title, source: s.source, snippet: String(s.text.prefix(160)))
        }
        return try await finish(AskResult(answer: reply.text, citations: citations, sources: prompt.sources, conversationId: "", reply: reply))
    }

    /// The knowledge items that best match the question (hybrid search when the embedder is
    /// available, keyword search otherwise), as numbered-source candidates, best first.
    func retrieveSources(_ q: String, retriever: Retriever?, count: Int) async throws -> [GroundingSource] {
        let node = self
        return try await blocking {
            let hits: [ItemID]
            if let retriever {
                hits = try retriever.search(q, k: count, mode: .hybrid).map(\.id)
            } else {
                hits = try node.searchStore.keywordSearch(q, limit: count).map(\.0)
            }
            let items = try node.searchStore.items(hits)
            return hits.compactMap { id -> GroundingSource? in
                guard let it = items[id], let text = it.text, !text.isEmpty else { return nil }
                return GroundingSource(id: id.description, title: it.title, text: text, source: it.source)
            }
        }
    }
}
