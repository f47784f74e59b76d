import Foundation
import KianaAI
import KianaCore
import KianaNet
import KianaServer
import KianaStore
import Synchronization

/// A small node for the router tests: knowledge and ledger on a real `LedgerStore` over an
/// in-memory database (real signatures, real blocks), canned answers instead of a model, and
/// switches to make each failure happen.
final class FakeNode: NodeAPI, Sendable {
    let identity = DeviceIdentity.generate()
    let store: LedgerStore
    struct Switches {
        /// Thrown by `item(_:)` (the error-mapping tests).
        var failItem: (any Error & Sendable)?
        var ingesting = false
        var acceptsGeneration = true
        var modelsLoaded = false
        /// What the canned model answers, piece by piece.
        var answer = ["The spare key ", "is under the blue pot."]
        var peers: [PeerStatus] = []
        var pairingOpen = false
    }
    let switches = Mutex(Switches())
    let calls = Mutex<[String]>([])

    init() throws {
        store = LedgerStore(database: try KianaDatabase())
        try store.initialize(genesis: Block.genesis(identity: identity, time: 1_700_000_000_000, name: "test"), now: 1_700_000_000_000)
    }

    func set(_ f: (inout Switches) -> Void) { switches.withLock { f(&$0) } }
    func record(_ call: String) { calls.withLock { $0.append(call) } }
    var now: UInt64 { UInt64(Date().timeIntervalSince1970 * 1000) }

    // MARK: health

    func health() async throws -> HealthDTO {
        HealthDTO(deviceId: identity.deviceID.description, height: try store.head()?.height, verifiedHeight: try store.lastVerified()?.height)
    }
    func readiness() async -> ReadyDTO {
        let loaded = switches.withLock { $0.modelsLoaded }
        return ReadyDTO(ready: loaded, store: true, model: loaded)
    }
    func metricsSnapshot() async -> MetricsSnapshot {
        MetricsSnapshot(height: (try? store.head()?.height) ?? nil, items: (try? store.counts().items) ?? 0, tokens: 7)
    }

    // MARK: knowledge

    func items(limit: Int, offset: Int) async throws -> ItemPageDTO {
        let all = try store.items()
        return ItemPageDTO(total: all.count, items: all.dropFirst(offset).prefix(limit).map(ItemDTO.init))
    }
    func item(_ id: String) async throws -> ItemDTO {
        if let e = switches.withLock({ $0.failItem }) { throw e }
        return ItemDTO(try store.item(idPrefix: id))
    }
    func remember(text: String, title: String?, tags: [String], source: String?) async throws -> String {
        let id = ItemID.random()
        _ = try store.write(
            [.put(id, KnowledgeFields(title: title, text: text, tags: tags.isEmpty ? nil : tags, source: source))], identity: identity, now: now)
        return id.description
    }
    func update(id: String, text: String?, title: String?, tags: [String]?, basedOn: [String]?) async throws -> ItemDTO {
        let item = try store.item(idPrefix: id)
        if let basedOn, !basedOn.contains(item.lastEntry.map(Hex.encode) ?? "") { throw KianaStoreError(.changed, "item \(item.id) was changed meanwhile") }
        _ = try store.write([.put(item.id, KnowledgeFields(title: title, text: text, tags: tags))], identity: identity, now: now)
        return ItemDTO(try store.item(idPrefix: id))
    }
    func forget(id: String) async throws -> String {
        let item = try store.item(idPrefix: id)
        _ = try store.write([.delete(item.id)], identity: identity, now: now)
        return item.id.description
    }
    func search(_ query: String, k: Int, mode: String, tag: String?, source: String?) async throws -> [SearchHitDTO] {
        record("search \(query) k=\(k) mode=\(mode) tag=\(tag ?? "-") source=\(source ?? "-")")
        return try store.items().filter { ($0.text ?? "").localizedCaseInsensitiveContains(query) }.prefix(k).map {
            SearchHitDTO(id: $0.id.description, score: 1, title: $0.title, text: $0.text ?? "", source: $0.source, tags: $0.tags)
        }
    }
    func validate(title: String?, text: String?, tags: [String]?, source: String?) throws {
        try KnowledgeFields(title: title, text: text, tags: tags, source: source).validateInput()
    }

    // MARK: ingest

    var ingesting: Bool { switches.withLock { $0.ingesting } }
    func refuseReplacingUploads(_ uploads: [(name: String, data: [UInt8])]) async throws {
        let taken = uploads.map(\.name).filter { $0.hasPrefix("taken") }
        if !taken.isEmpty { throw KianaStoreError(.exists, "a different \(taken.joined(separator: ", ")) was uploaded before") }
    }
    func uploadName(_ raw: String) throws -> String {
        guard !raw.contains("/"), raw.hasSuffix(".md") || raw.hasSuffix(".txt") else {
            throw KianaAIError(.invalidInput, "\(raw): give a file name ending in .md or .txt")
        }
        return raw
    }
    func ingest(
        uploads: [(name: String, data: [UInt8])], tags: [String], replace: Bool,
        progress: @escaping @Sendable (String, Int, Int, String) -> Void
    ) async throws -> IngestReportDTO {
        record("ingest \(uploads.map(\.name).joined(separator: ",")) tags=\(tags.joined(separator: ","))")
        for (i, u) in uploads.enumerated() { progress("reading", i + 1, uploads.count, u.name) }
        return IngestReportDTO(
            filesScanned: uploads.count, filesNew: uploads.count, filesChanged: 0, filesUnchanged: 0, filesRemoved: 0,
            filesFailed: [], chunksAdded: uploads.count, chunksUpdated: 0, chunksRemoved: 0,
            bytesRead: uploads.reduce(0) { $0 + $1.data.count }, embedded: 0, changed: true)
    }

    // MARK: answers

    func modelNames() async throws -> [String] { [groundedModelName, "smollm2-135m-instruct"] }
    func modelDetails(_ name: String) async throws -> ModelDetailsDTO? {
        guard try await modelNames().contains(name) else { return nil }
        return ModelDetailsDTO(format: "gguf", family: "llama", parameterSize: "134M", quantizationLevel: "Q4_1", contextLength: 2048)
    }
    func loadedModels() async throws -> [String] { try await modelNames() }
    func acceptsGeneration() -> Bool { switches.withLock { $0.acceptsGeneration } }
    func chat(
        _ messages: [ChatMessage], grounded: Bool, maxTokens: Int?, sampling: SamplingOptions,
        onText: @escaping @Sendable (String) -> Bool
    ) async throws -> AssistantReply {
        record("chat grounded=\(grounded) max=\(maxTokens.map(String.init) ?? "-") t=\(sampling.temperature) last=\(messages.last?.content ?? "")")
        let pieces = switches.withLock { $0.answer }
        for p in pieces where !onText(p) { break }
        return AssistantReply(
            text: pieces.joined(), citations: grounded ? [CitationDTO(number: 1, id: "00ff", title: nil, source: "notes.md")] : [],
            promptTokens: 12, completionTokens: pieces.count, stopReason: .endOfGeneration,
            model: grounded ? groundedModelName : "smollm2-135m-instruct")
    }
    func ask(
        _ question: String, conversation: String?, maxTokens: Int?, sampling: SamplingOptions?,
        onText: @escaping @Sendable (String) -> Bool
    ) async throws -> (reply: AssistantReply, conversation: String) {
        let r = try await chat([ChatMessage(.user, question)], grounded: true, maxTokens: maxTokens, sampling: sampling ?? SamplingOptions(), onText: onText)
        return (r, conversation ?? "c-1")
    }
    func embed(_ texts: [String]) async throws -> (vectors: [[Float]], tokens: Int) {
        (texts.map { t in [Float(t.count), 0.5, -0.25] }, texts.count * 2)
    }
    func conversations() async throws -> [ConversationDTO] { [ConversationDTO(id: "c-1", title: "Keys", updated: 2, created: 1)] }
    func deleteConversation(_ id: String) async throws -> Bool { id == "c-1" }
    func conversation(_ id: String) async throws -> [MessageDTO]? {
        id == "c-1" ? [MessageDTO(role: "user", content: "Where is the key?", citations: [], created: 1)] : nil
    }

    // MARK: voice (the real engines, when installed)

    let voice = Voice(settings: VoiceSettings(limits: AudioLimits(maxBytes: 4 << 20, maxSeconds: 30)))
    func voiceStatus() async -> VoiceStatus { voice.status() }
    func reserveVoice() throws -> VoiceSlot { try voice.reserve() }
    func speechFormat(_ text: String, language: String?, voice name: String?, speed: Double?, engine: String?) async throws -> SpeechInfo {
        try voice.speechFormat(text, language: language, voice: name, speed: speed, engine: engine)
    }
    func speak(
        _ text: String, language: String?, voice name: String?, speed: Double?, engine: String?, slot: VoiceSlot,
        onAudio: @escaping @Sendable (PCMAudio) -> Bool
    ) async throws -> SpeechInfo {
        try voice.speak(text, language: language, voice: name, speed: speed, engine: engine, slot: slot, onAudio: onAudio)
    }
    func transcribe(_ audio: PCMAudio, language: String?, slot: VoiceSlot) async throws -> Transcript {
        try voice.transcribe(audio, language: language, slot: slot)
    }
    var audioLimits: AudioLimits { voice.settings.limits }

    // MARK: ledger

    func ledgerStatus() async throws -> LedgerStatusDTO {
        let head = try store.head()
        let c = try store.counts()
        return LedgerStatusDTO(
            height: head?.height, head: head.map { Hex.encode($0.hash) }, items: c.items, blocks: c.blocks, entries: c.entries,
            deletedItems: c.deletedItems, pending: c.pending)
    }
    func head() async throws -> LedgerHead? { try store.head() }
    func blocks(from: UInt64, through: UInt64) async throws -> [Block] { try store.blocks(from: from, through: through) }
    func entry(_ id: String) async throws -> EntryDTO {
        let (e, h, p) = try store.findEntry(idPrefix: id)
        return EntryDTO(e, height: h, position: p)
    }
    func proof(_ id: String) async throws -> ProofDTO {
        let (e, h, p) = try store.findEntry(idPrefix: id)
        return ProofDTO(
            item: nil, entry: EntryDTO(e), height: h, position: p, blockEntryCount: 1, entryRoot: "", entryPath: [],
            blockHash: "", treeSize: Int(h) + 1, historyRoot: "", historyPath: [], verified: true)
    }
    func verify() async throws -> VerifyDTO {
        let s = try store.verify(now: now)
        return VerifyDTO(
            valid: true, height: s.height, head: Hex.encode(s.tipHash), blocks: s.blockCount, entries: s.entryCount,
            authorities: s.authorities.count, seconds: 0)
    }

    // MARK: device and peers

    func device() async throws -> DeviceDTO {
        DeviceDTO(
            deviceId: identity.deviceID.description, publicKey: Hex.encode(identity.publicKey), network: try store.network().map(Hex.encode),
            authorities: [Hex.encode(identity.publicKey)], authority: true, dataDirectory: "/fake", backend: "embedded", model: "m",
            modelsLoaded: false, items: try store.counts().items, blocks: try store.counts().blocks, entries: try store.counts().entries)
    }
    func peers(rtt: Bool) async -> [PeerStatus] { switches.withLock { $0.peers } }
    func syncStatus() async throws -> SyncStatus {
        SyncStatus(height: 0, head: "", treeSize: 1, treeRoot: "", stats: SyncStats(), peers: switches.withLock { $0.peers })
    }
    func syncStats() async -> SyncStats? { nil }
    func admissionStats() async -> AdmissionStats? { nil }
    func ledgerChangedElsewhere() async { record("ledgerChangedElsewhere") }
    func addPeer(address: String) async throws -> Bool {
        guard address.contains(":") else { throw KianaNetError(.invalidInput, "\(address) is not HOST:PORT") }
        record("addPeer \(address)")
        return true
    }
    func openPairing(seconds: Int) async throws -> Int? {
        set { $0.pairingOpen = true }
        return 8470
    }
    func closePairing() async { set { $0.pairingOpen = false } }
    func pendingPairings() async -> (open: Bool, requests: [PairingRequest]) { (switches.withLock { $0.pairingOpen }, []) }
    func confirmPairing(device: String?, code: String) async throws -> PairingOutcome {
        throw KianaNetError(.pairing, "no device is waiting to pair")
    }
}
