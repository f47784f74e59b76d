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
    /// False when the language model's queue is full: the request is refused with 503 before a
    /// stream starts (a race with other requests still ends in an `error` event).
    func acceptsGeneration() -> Bool
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

/// Knowledge operations the REST API needs beyond reading the store (writes are signed ledger
/// entries; search needs the embedder). Implemented in KianaNode.
public protocol KnowledgeAPI: Sendable {
    /// Adds an item; returns its ID.
    func remember(text: String, title: String?, tags: [String], source: String?) async throws -> String
    /// Changes an item's text, title or tags (nil leaves a field as it is); returns the full ID.
    func update(id: String, text: String?, title: String?, tags: [String]?) async throws -> String
    /// Ingests uploaded files (kept in the data directory, so uploading a file again replaces
    /// its chunks), then embeds what is new. One ingestion at a time: another one is refused
    /// with `conflict`. `progress` receives (phase, done, total, detail); the result is the
    /// report as JSON.
    func ingest(uploads: [(name: String, data: [UInt8])], tags: [String],
                progress: @escaping @Sendable (String, Int, Int, String) -> Void) async throws -> [String: any Sendable]
    /// True while an ingestion runs.
    var ingesting: Bool { get }
    /// See `AssistantAPI.acceptsGeneration`.
    func acceptsGeneration() -> Bool
    /// The inclusion proof of an item (the entry that last changed it) or of an entry, checked.
    func proof(_ id: String) async throws -> [String: any Sendable]
    /// This device: identity, network, authorities, models.
    func device() async throws -> [String: any Sendable]
    /// Forgets an item by ID (or unique prefix); returns the full ID.
    func forget(id: String) async throws -> String
    /// Hybrid (or keyword/vector) search; hits best first.
    func search(_ query: String, k: Int, mode: String, tag: String?, source: String?) async throws -> [SearchResult]
    /// Grounded answer stored in a conversation (nil: a new one).
    func ask(_ question: String, conversation: String?, maxTokens: Int?, sampling: SamplingOptions?,
             onText: @escaping @Sendable (String) -> Bool) async throws -> (reply: AssistantReply, conversation: String)
    /// Conversations, most recent first: id, title, updated (ms since 1970).
    func conversations() async throws -> [[String: any Sendable]]
    /// One conversation's messages (role, content, citations), nil if there is none.
    func conversation(_ id: String) async throws -> [[String: any Sendable]]?
    /// True once the language model and the embedder have been loaded.
    var modelLoaded: Bool { get }
    /// Tokens generated since start.
    var tokensGenerated: Int { get }
}

/// One search hit with its item.
public struct SearchResult: Sendable, Codable {
    public var id: String
    public var score: Double
    public var title: String?
    public var text: String
    public var source: String?
    public var tags: [String]
    public init(id: String, score: Double, title: String?, text: String, source: String?, tags: [String]) {
        self.id = id; self.score = score; self.title = title; self.text = text; self.source = source; self.tags = tags
    }
}
