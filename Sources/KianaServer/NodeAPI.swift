import KianaAI
import KianaCore
import KianaNet
import KianaStore

/// The one door from HTTP to the node: every route calls this and nothing else (no store, no
/// peer network held by a route). KianaNode's `NodeService` implements it over the data
/// directory, the ledger and the loaded models; the router tests use a small fake.
public protocol NodeAPI: Sendable {
    // MARK: health

    /// This device's ID, the ledger head (nil before the genesis is read) and the verified height.
    func health() async throws -> HealthDTO
    /// The store answers and the language model and embedder are loaded.
    func readiness() async -> ReadyDTO
    /// Figures for /metrics, read at each scrape.
    func metricsSnapshot() async -> MetricsSnapshot

    // MARK: knowledge

    func items(limit: Int, offset: Int) async throws -> ItemPageDTO
    /// One item by ID or unique prefix.
    func item(_ id: String) async throws -> ItemDTO
    /// Adds an item (a signed ledger entry); returns its ID.
    func remember(text: String, title: String?, tags: [String], source: String?) async throws -> String
    /// Changes an item's text, title or tags (nil leaves a field as it is); returns the item.
    /// `basedOn`: entry IDs (hex) the change may apply to (If-Match); nil applies it to any version.
    func update(id: String, text: String?, title: String?, tags: [String]?, basedOn: [String]?) async throws -> ItemDTO
    /// Forgets an item by ID or unique prefix; returns the full ID.
    func forget(id: String) async throws -> String
    /// Hybrid, keyword or vector search; hits best first.
    func search(_ query: String, k: Int, mode: String, tag: String?, source: String?) async throws -> [SearchHitDTO]
    /// Checks fields entering through HTTP with the same rules as every other way in.
    func validate(title: String?, text: String?, tags: [String]?, source: String?) throws

    // MARK: ingest

    /// Ingests uploaded files (kept in the data directory, so uploading a file again updates its
    /// chunks; a different file under a name uploaded before is refused with `exists` unless
    /// `replace`), then embeds what is new. One ingestion at a time: another is refused with
    /// `conflict`. `progress` receives (phase, done, total, detail).
    func ingest(
        uploads: [(name: String, data: [UInt8])], tags: [String], replace: Bool,
        progress: @escaping @Sendable (String, Int, Int, String) -> Void
    ) async throws -> IngestReportDTO
    /// True while an ingestion runs (checked before a large upload is read).
    var ingesting: Bool { get }
    /// Refuses (`exists`, naming them) uploads whose names an earlier upload with other content
    /// holds: ingesting them replaces that file's knowledge, which the client must ask for
    /// (`replace`). `ingest` checks again under its lock.
    func refuseReplacingUploads(_ uploads: [(name: String, data: [UInt8])]) async throws
    /// The name an upload is stored under, checked (no paths, a supported type).
    func uploadName(_ raw: String) throws -> String

    // MARK: answers

    /// The grounded model's name ("kiana") first, then the backend's own models.
    func modelNames() async throws -> [String]
    /// What /api/show tells about a served model; nil when the name is not served.
    func modelDetails(_ name: String) async throws -> ModelDetailsDTO?
    /// The models loaded in memory now (for /api/ps).
    func loadedModels() async throws -> [String]
    /// Answers `messages`. With `grounded`, the last user message is answered from the
    /// knowledge base (retrieval, numbered sources, citations); otherwise the messages go to the
    /// backend as they are. `onText` receives the streamed text and returns false to stop.
    func chat(
        _ messages: [ChatMessage], grounded: Bool, maxTokens: Int?, sampling: SamplingOptions,
        onText: @escaping @Sendable (String) -> Bool
    ) async throws -> AssistantReply
    /// A grounded answer stored in a conversation (nil: a new one).
    func ask(
        _ question: String, conversation: String?, maxTokens: Int?, sampling: SamplingOptions?,
        onText: @escaping @Sendable (String) -> Bool
    ) async throws -> (reply: AssistantReply, conversation: String)
    /// False when the language model's queue is full: the request is refused with 503 before a
    /// stream starts.
    func acceptsGeneration() -> Bool
    /// Embeddings (all-MiniLM-L6-v2, 384 dimensions) and the token count of all texts.
    func embed(_ texts: [String]) async throws -> (vectors: [[Float]], tokens: Int)
    /// Conversations, most recent first.
    func conversations() async throws -> [ConversationDTO]
    /// One conversation's messages, nil if there is none.
    func conversation(_ id: String) async throws -> [MessageDTO]?
    /// Deletes a conversation and its messages; false if there is none.
    func deleteConversation(_ id: String) async throws -> Bool

    // MARK: voice

    /// The speech engines this machine has and the voice limits.
    func voiceStatus() async -> VoiceStatus
    /// A place among the voice requests in flight (at most four), or `busy`: taken before an
    /// upload is read or a response begins, held until the work is done.
    func reserveVoice() throws -> VoiceSlot
    /// What `speak` would use for these arguments, checked (nothing is spoken).
    func speechFormat(_ text: String, language: String?, voice: String?, speed: Double?, engine: String?) async throws -> SpeechInfo
    /// Speaks `text` in `slot` (engine, language, voice and speed checked; nil: the settings),
    /// sentence by sentence: `onAudio` gets each piece and returns false to stop.
    func speak(
        _ text: String, language: String?, voice: String?, speed: Double?, engine: String?, slot: VoiceSlot,
        onAudio: @escaping @Sendable (PCMAudio) -> Bool
    ) async throws -> SpeechInfo
    /// Recognises speech in `audio` (English) in `slot`.
    func transcribe(_ audio: PCMAudio, language: String?, slot: VoiceSlot) async throws -> Transcript
    /// What an uploaded recording may be.
    var audioLimits: AudioLimits { get }

    // MARK: ledger

    func ledgerStatus() async throws -> LedgerStatusDTO
    /// The canonical head, nil before genesis.
    func head() async throws -> LedgerHead?
    /// Canonical blocks in the height range (inclusive), oldest first.
    func blocks(from: UInt64, through: UInt64) async throws -> [Block]
    /// An entry on the chain by ID or unique prefix, with its height and position.
    func entry(_ id: String) async throws -> EntryDTO
    /// The inclusion proof of an item (the entry that last changed it) or of an entry, checked.
    func proof(_ id: String) async throws -> ProofDTO
    /// Re-validates the whole ledger (and the database file).
    func verify() async throws -> VerifyDTO

    // MARK: device and peers

    /// This device: identity, network, authorities, models, and its peers when networking runs.
    func device() async throws -> DeviceDTO
    /// Peers as `kiana peers` shows them (with round-trip times when `rtt`); empty without networking.
    func peers(rtt: Bool) async -> [PeerStatus]
    /// Head, history tree, sync counters and members' sync state (`kiana sync status`); throws
    /// `notRunning` without networking.
    func syncStatus() async throws -> SyncStatus
    /// Sync counters for /metrics (nil without networking).
    func syncStats() async -> SyncStats?
    /// The P2P port's admission counters for /metrics (nil without networking).
    func admissionStats() async -> AdmissionStats?
    /// Remembers a peer address for the dialer; false if it was known.
    func addPeer(address: String) async throws -> Bool
    /// Another process (the CLI) changed the ledger in this data directory: members are told
    /// the new head now rather than at the next poll.
    func ledgerChangedElsewhere() async
    /// Opens the pairing window; returns the link port.
    func openPairing(seconds: Int) async throws -> Int?
    func closePairing() async
    func pendingPairings() async -> (open: Bool, requests: [PairingRequest])
    /// Confirms a waiting device's code: writes the add-authority vote when it matches.
    func confirmPairing(device: String?, code: String) async throws -> PairingOutcome
}

/// The result of a pairing confirmation.
public struct PairingOutcome: Sendable {
    public var request: PairingRequest
    public var accepted: Bool
    public var member: Bool
    public var authorities: Int
    public var votesFor: Int
    /// Whether this confirmation wrote the add vote (false: the device was in already, or this
    /// authority had voted for it before).
    public var voted: Bool
    public init(request: PairingRequest, accepted: Bool, member: Bool, authorities: Int, votesFor: Int, voted: Bool = true) {
        self.request = request
        self.accepted = accepted
        self.member = member
        self.authorities = authorities
        self.votesFor = votesFor
        self.voted = voted
    }
}

/// A finished answer with the knowledge items it cites.
public struct AssistantReply: Sendable {
    public var text: String
    public var citations: [CitationDTO]
    public var promptTokens: Int
    public var completionTokens: Int
    public var stopReason: StopReason
    public var model: String
    /// Grounded answers: the source sentences that support the answer.
    public var support: [SupportDTO]
    /// Grounded answers: nothing taught answers the question and the answer says so.
    public var abstained: Bool
    public init(
        text: String, citations: [CitationDTO], promptTokens: Int, completionTokens: Int, stopReason: StopReason, model: String,
        support: [SupportDTO] = [], abstained: Bool = false
    ) {
        self.text = text
        self.citations = citations
        self.support = support
        self.abstained = abstained
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
        self.stopReason = stopReason
        self.model = model
    }
}

/// The model name that means "answer from the knowledge base" on the compatible APIs.
public let groundedModelName = "kiana"
