import Foundation
import KianaAI
import KianaServer

/// What `kiana ask` and `kiana chat` answer with: an opened node, the configured language-model
/// backend and a retriever (none when the embedding model is missing or corrupt: then search is
/// by keyword only, and `keywordOnly` says why).
public struct LocalAssistant: Sendable {
    public let node: Node
    let backend: any ChatBackend
    let retriever: Retriever?
    /// Why search is keyword-only (the embedding model's problem); nil when it is hybrid.
    public let keywordOnly: String?

    /// Loads the backend (the embedded model takes a second or so), then the embedder, and
    /// brings the vector index up to date.
    public init(node: Node, config: BackendConfig, modelDirectory: String, progress: ProgressHandler? = nil) throws {
        self.node = node
        backend = try config.make(modelDirectory: modelDirectory)
        do {
            let embedder = try Node.loadEmbedder(modelDirectory: modelDirectory)
            retriever = try node.retriever(embedder, progress: progress)
            keywordOnly = nil
        } catch let e as KianaAIError where e.code == .modelMissing || e.code == .modelCorrupt {
            retriever = nil
            keywordOnly = e.message
        }
    }

    /// The backend as the chat greeting names it.
    public var label: String { backend.label }

    /// Answers `question` (see `Node.ask`), streaming the answer to `onText`.
    public func ask(_ question: String, options: AskOptions, onText: @escaping @Sendable (String) -> Bool) async throws -> AskResult {
        try await node.ask(question, backend: backend, retriever: retriever, options: options, onText: onText)
    }

    /// The sources retrieved for a question and their sentences scored as evidence (no model
    /// call): what the answer pipeline decides from.
    public func evidence(_ question: String, options: AskOptions = AskOptions()) async throws -> Evidence {
        try await node.evidence(question, retriever: retriever, count: options.sources, settings: options.trust)
    }
}

/// `kiana ask --json`: the answer, its conversation, the cited sources and every source that
/// was in the prompt. Absent values are JSON null.
public struct AskView: Encodable, Sendable {
    /// A cited item: the same shape as in the API's answers.
    public typealias Cited = CitationDTO
    public var answer: String
    public var conversation: String
    public var citations: [Cited]
    /// The IDs of the items that were in the prompt, numbered from 1.
    public var sources: [String]
    /// The new item when the question was "remember that …".
    public var remembered: String?
    /// The source sentences that support the answer.
    public var support: [SupportDTO]
    /// True when nothing taught answers the question.
    public var abstained: Bool

    public init(_ r: AskResult) {
        answer = r.answer
        conversation = r.conversationId
        citations = r.citations.map { Cited(number: $0.number, id: $0.id, title: $0.title, source: $0.source) }
        sources = r.sources.map(\.id)
        remembered = r.remembered?.description
        support = r.support
        abstained = r.abstained
    }

    enum CodingKeys: String, CodingKey { case answer, conversation, citations, sources, remembered, support, abstained }
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(answer, forKey: .answer)
        try c.encode(conversation, forKey: .conversation)
        try c.encode(citations, forKey: .citations)
        try c.encode(sources, forKey: .sources)
        try c.encode(remembered, forKey: .remembered)
        try c.encode(support, forKey: .support)
        try c.encode(abstained, forKey: .abstained)
    }
}
