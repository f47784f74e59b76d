import Foundation
import KianaAI
import KianaCore
import KianaServer
import KianaStore

/// The node's assistant behind the HTTP surface: the language-model backend and the embedder
/// are loaded on first use (node start stays light), then kept.
public final class NodeAssistant: AssistantAPI, KnowledgeAPI, @unchecked Sendable {
    let node: Node
    let modelDirectory: String
    let config: BackendConfig
    private let lock = NSLock()
    private var backend: (any ChatBackend)?
    private var embedder: Embedder?
    private var generated = 0

    public init(node: Node, modelDirectory: String, config: BackendConfig) {
        self.node = node
        self.modelDirectory = modelDirectory
        self.config = config
    }

    func loadedBackend() async throws -> any ChatBackend {
        if let b = lock.withLock({ backend }) { return b }
        let config = self.config, dir = modelDirectory
        let b = try await blocking { try config.make(modelDirectory: dir) }
        return lock.withLock {
            if let existing = backend { return existing }
            backend = b
            return b
        }
    }

    func loadedEmbedder() async throws -> Embedder {
        if let e = lock.withLock({ embedder }) { return e }
        let dir = modelDirectory
        let e = try await blocking { try Node.loadEmbedder(modelDirectory: dir) }
        return lock.withLock {
            if let existing = embedder { return existing }
            embedder = e
            return e
        }
    }

    public func modelNames() async throws -> [String] {
        if config.backend == .embedded { return [groundedModelName, config.model ?? ModelCatalog.defaultModel] }
        return [groundedModelName] + (try await loadedBackend().models())
    }

    public func chat(_ messages: [ChatMessage], grounded: Bool, maxTokens: Int?, sampling: SamplingOptions,
                     onText: @escaping @Sendable (String) -> Bool) async throws -> AssistantReply {
        let backend = try await loadedBackend()
        let name = grounded ? groundedModelName : (config.model ?? ModelCatalog.defaultModel)
        guard grounded, let question = messages.last, question.role == .user else {
            var request = ChatRequest(messages: messages)
            if let maxTokens { request.maxTokens = maxTokens }
            request.sampling = sampling
            let r = try await backend.chat(request, onText: onText)
            count(r.completionTokens)
            return AssistantReply(text: r.text, citations: [], promptTokens: r.promptTokens, completionTokens: r.completionTokens,
                                  stopReason: r.stopReason, model: name)
        }
        var retriever: Retriever?
        if let embedder = try? await loadedEmbedder() {
            let node = self.node
            retriever = try await blocking { try node.retriever(embedder) }
        }
        var options = AskOptions()
        if let maxTokens { options.maxTokens = maxTokens }
        options.sampling = sampling
        options.history = messages.dropLast().filter { $0.role != .system }
        let r = try await node.ask(question.content, backend: backend, retriever: retriever, options: options, onText: onText)
        count(r.reply?.completionTokens ?? 0)
        return AssistantReply(text: r.answer, citations: r.citations.map { .init(number: $0.number, id: $0.id, title: $0.title, source: $0.source) },
                              promptTokens: r.reply?.promptTokens ?? 0, completionTokens: r.reply?.completionTokens ?? 0,
                              stopReason: r.reply?.stopReason ?? .endOfGeneration, model: name)
    }

    public func embed(_ texts: [String]) async throws -> (vectors: [[Float]], tokens: Int) {
        guard texts.reduce(0, { $0 + $1.utf8.count }) <= 1 << 20 else { throw KianaNodeError(.invalidInput, "at most 1 MiB of text per request") }
        let embedder = try await loadedEmbedder()
        return try await blocking { (embedder.embed(texts), texts.reduce(0) { $0 + embedder.tokenize($1).count }) }
    }

    func count(_ tokens: Int) { lock.withLock { generated += tokens } }

    // MARK: KnowledgeAPI

    public var modelLoaded: Bool { lock.withLock { backend != nil && embedder != nil } }
    public var tokensGenerated: Int { lock.withLock { generated } }

    /// The retriever over the current state (keyword-only without the embedding model).
    func retriever() async throws -> Retriever? {
        guard let embedder = try? await loadedEmbedder() else { return nil }
        let node = self.node
        return try await blocking { try node.retriever(embedder) }
    }

    public func remember(text: String, title: String?, tags: [String], source: String?) async throws -> String {
        let node = self.node
        return try await blocking { try node.remember(text: text, title: title, tags: tags, source: source).0.description }
    }

    public func forget(id: String) async throws -> String {
        let node = self.node
        return try await blocking { try node.forget(idPrefix: id).0.id.description }
    }

    public func search(_ query: String, k: Int, mode: String, tag: String?, source: String?) async throws -> [SearchResult] {
        guard let m = SearchMode(rawValue: mode) else { throw KianaNodeError(.invalidInput, "mode must be hybrid, vector or keyword") }
        let filter = SearchFilter(tag: tag, sourcePrefix: source)
        let node = self.node
        let ids: [(ItemID, Double)]
        if let r = try await retriever() {
            ids = try await blocking { try r.search(query, k: k, mode: m, filter: filter).map { ($0.id, $0.score) } }
        } else {
            guard m == .keyword || m == .hybrid else { throw KianaNodeError(.invalidInput, "vector search needs the embedding model; \(ModelDirectory.fixHint)") }
            ids = try node.searchStore.keywordSearch(query, limit: k, filter: filter)
        }
        let items = try node.searchStore.items(ids.map(\.0))
        return ids.compactMap { id, score in
            items[id].map { SearchResult(id: id.description, score: score, title: $0.title, text: $0.text ?? "", source: $0.source, tags: $0.tags) }
        }
    }

    public func ask(_ question: String, conversation: String?, maxTokens: Int?, sampling: SamplingOptions?,
                    onText: @escaping @Sendable (String) -> Bool) async throws -> (reply: AssistantReply, conversation: String) {
        let backend = try await loadedBackend()
        let retriever = try await self.retriever()
        var options = AskOptions()
        options.conversation = conversation
        if let maxTokens { options.maxTokens = maxTokens }
        if let sampling { options.sampling = sampling }
        let r = try await node.ask(question, backend: backend, retriever: retriever, options: options, onText: onText)
        count(r.reply?.completionTokens ?? 0)
        let reply = AssistantReply(text: r.answer, citations: r.citations.map { .init(number: $0.number, id: $0.id, title: $0.title, source: $0.source) },
                                   promptTokens: r.reply?.promptTokens ?? 0, completionTokens: r.reply?.completionTokens ?? 0,
                                   stopReason: r.reply?.stopReason ?? .endOfGeneration, model: groundedModelName)
        return (reply, r.conversationId)
    }

    public func conversations() async throws -> [[String: any Sendable]] {
        try node.conversations.list().map { ["id": $0.id, "title": $0.title, "updated": Int($0.updated), "created": Int($0.created)] }
    }

    public func conversation(_ id: String) async throws -> [[String: any Sendable]]? {
        guard try node.conversations.conversation(id) != nil else { return nil }
        return try node.conversations.messages(id).map { ["role": $0.role, "content": $0.content, "citations": $0.citations, "created": Int($0.created)] }
    }
}
