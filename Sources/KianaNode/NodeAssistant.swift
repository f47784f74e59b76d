import Foundation
import KianaAI
import KianaServer

/// The node's assistant behind the HTTP surface: the language-model backend and the embedder
/// are loaded on first use (node start stays light), then kept.
public final class NodeAssistant: AssistantAPI, @unchecked Sendable {
    let node: Node
    let modelDirectory: String
    let config: BackendConfig
    private let lock = NSLock()
    private var backend: (any ChatBackend)?
    private var embedder: Embedder?

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
        return AssistantReply(text: r.answer, citations: r.citations.map { .init(number: $0.number, id: $0.id, title: $0.title, source: $0.source) },
                              promptTokens: r.reply?.promptTokens ?? 0, completionTokens: r.reply?.completionTokens ?? 0,
                              stopReason: r.reply?.stopReason ?? .endOfGeneration, model: name)
    }

    public func embed(_ texts: [String]) async throws -> (vectors: [[Float]], tokens: Int) {
        guard texts.reduce(0, { $0 + $1.utf8.count }) <= 1 << 20 else { throw KianaNodeError(.invalidInput, "at most 1 MiB of text per request") }
        let embedder = try await loadedEmbedder()
        return try await blocking { (embedder.embed(texts), texts.reduce(0) { $0 + embedder.tokenize($1).count }) }
    }
}
