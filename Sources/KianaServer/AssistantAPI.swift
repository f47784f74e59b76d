import KianaAI

/// What the HTTP surface needs from the node's assistant (implemented in KianaNode, which
/// owns the store, retrieval and the language-model backend).
public protocol AssistantAPI: Sendable {
    /// The grounded model's name ("kiana") first, then the backend's own models.
    func modelNames() async throws -> [String]
    /// Answers `messages`. With `grounded`, the last user message is answered from the
    /// knowledge base (retrieval, numbered sources, citations); otherwise the messages go to the
    /// backend as they are. `onText` receives the streamed text and returns false to stop.
    func chat(_ messages: [ChatMessage], grounded: Bool, maxTokens: Int?, sampling: SamplingOptions,
              onText: @escaping @Sendable (String) -> Bool) async throws -> AssistantReply
    /// Embeddings (all-MiniLM-L6-v2, 384 dimensions) and the token count of each text.
    func embed(_ texts: [String]) async throws -> (vectors: [[Float]], tokens: Int)
}

/// A finished answer with the knowledge items it cites.
public struct AssistantReply: Sendable {
    public struct Cited: Sendable, Codable, Equatable {
        public var number: Int
        public var id: String
        public var title: String?
        public var source: String?
        public init(number: Int, id: String, title: String?, source: String?) {
            self.number = number; self.id = id; self.title = title; self.source = source
        }
    }
    public var text: String
    public var citations: [Cited]
    public var promptTokens: Int
    public var completionTokens: Int
    public var stopReason: StopReason
    public var model: String
    public init(text: String, citations: [Cited], promptTokens: Int, completionTokens: Int, stopReason: StopReason, model: String) {
        self.text = text; self.citations = citations; self.promptTokens = promptTokens
        self.completionTokens = completionTokens; self.stopReason = stopReason; self.model = model
    }
}

/// The model name that means "answer from the knowledge base" on the compatible APIs.
public let groundedModelName = "kiana"
