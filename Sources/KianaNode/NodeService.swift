import Foundation
import KianaAI
import KianaCore
import KianaNet
import KianaServer
import KianaStore
import ServiceLifecycle
import Synchronization

/// The node behind the HTTP surface (`NodeAPI`): knowledge, answers, ledger, device and peers,
/// over one data directory, one model host and (when networking runs) the peer network.
/// Store calls run off the cooperative pool (`blocking`), since SQLite and verification block.
public final class NodeService: NodeAPI {
    let node: Node
    let models: ModelHost
    let network: PeerNetwork?
    struct State {
        var generated = 0
        /// The retriever over the state it was built from (see `SearchStore.fingerprint`).
        var retriever: (fingerprint: String, retriever: Retriever)?
        /// One ingestion at a time (two runs over the same file would both add its chunks);
        /// another is refused rather than queued, since each may hold a 32 MiB upload.
        var ingesting = false
    }
    private let state = Mutex(State())
    private let retrieverBuild = AsyncLock()
    /// The embedded model answers one request at a time; others wait their turn here.
    let queue: GenerationQueue
    /// Speech in and out (engines found on first use).
    let voice: Voice

    public init(node: Node, models: ModelHost, network: PeerNetwork? = nil, voice: Voice = Voice(), waitingLimit: Int = 16) {
        self.node = node
        self.models = models
        self.network = network
        self.voice = voice
        self.queue = GenerationQueue(limit: models.config.backend == .embedded ? 1 : 64, waitingLimit: waitingLimit)
    }

    /// Runs a store operation off the cooperative pool.
    func store<T: Sendable>(_ body: @escaping @Sendable (Node) throws -> T) async throws -> T {
        let node = self.node
        return try await blocking { try body(node) }
    }

    // MARK: health

    public func health() async throws -> HealthDTO {
        let (head, verified) = try await store { n in (try? n.store.head(), try? n.store.lastVerified()) }
        let problem =
            node.store.database.lostWAL
            ? "the database's write-ahead log (kiana.sqlite-wal) was deleted while the node ran: every write is now copied into the database file as it is made; restart the node"
            : nil
        return HealthDTO(deviceId: node.identity.deviceID.description, height: head?.height, verifiedHeight: verified?.height, problem: problem)
    }

    public func readiness() async -> ReadyDTO {
        let storeOK = ((try? await store { n in try n.store.head() }) ?? nil) != nil
        let model = models.allLoaded
        return ReadyDTO(ready: storeOK && model, store: storeOK, model: model)
    }

    public func metricsSnapshot() async -> MetricsSnapshot {
        var s = (try? await store { n in
            let counts = try? n.store.counts()
            let path = n.directory.databasePath
            let bytes = [path, path + "-wal"].reduce(0) { sum, p in
                sum + ((try? FileManager.default.attributesOfItem(atPath: p)[.size] as? Int) ?? 0)
            }
            return MetricsSnapshot(
                height: try? n.store.head()?.height, items: counts?.items ?? 0, entries: counts?.entries ?? 0, pending: counts?.pending ?? 0,
                databaseBytes: bytes)
        }) ?? MetricsSnapshot()
        s.tokens = state.withLock { $0.generated }
        s.modelsLoaded = models.allLoaded
        if let network { s.links = await network.connectedLinks }
        return s
    }

    // MARK: knowledge

    public func items(limit: Int, offset: Int) async throws -> ItemPageDTO {
        try await store { n in
            let all = try n.store.items()
            return ItemPageDTO(total: all.count, items: all.dropFirst(offset).prefix(limit).map(ItemDTO.init))
        }
    }

    public func item(_ id: String) async throws -> ItemDTO {
        try await store { n in ItemDTO(try n.store.item(idPrefix: id)) }
    }

    public func validate(title: String?, text: String?, tags: [String]?, source: String?) throws {
        do throws(KianaCoreError) {
            try KnowledgeFields(title: title, text: text, tags: tags, source: source).validateInput()
        } catch {
            throw KianaNodeError(error.code, error.message, cause: error)
        }
    }

    public func remember(text: String, title: String?, tags: [String], source: String?) async throws -> String {
        try await store { n in try n.remember(text: text, title: title, tags: tags, source: source).0.description }
    }

    public func update(id: String, text: String?, title: String?, tags: [String]?, basedOn: [String]?) async throws -> ItemDTO {
        try await store { n in
            let full = try n.update(idPrefix: id, text: text, title: title, tags: tags, basedOn: basedOn).0
            return ItemDTO(try n.store.item(idPrefix: full.description))
        }
    }

    public func forget(id: String) async throws -> String {
        try await store { n in try n.forget(idPrefix: id).0.id.description }
    }

    public func search(_ query: String, k: Int, mode: String, tag: String?, source: String?) async throws -> [SearchHitDTO] {
        guard let m = SearchMode(rawValue: mode) else { throw KianaNodeError(.invalidInput, "mode must be hybrid, vector or keyword") }
        let filter = SearchFilter(tag: tag, sourcePrefix: source)
        let ids: [(ItemID, Double)]
        // Keyword search needs no vectors: it never waits for a retriever to be built.
        if m != .keyword, let r = try await retriever() {
            ids = try await blocking { try r.search(query, k: k, mode: m, filter: filter).map { ($0.id, $0.score) } }
        } else {
            guard m == .keyword || m == .hybrid else {
                throw KianaNodeError(.invalidInput, "vector search needs the embedding model; \(ModelDirectory.fixHint)")
            }
            ids = try await store { n in try n.searchStore.keywordSearch(query, limit: k, filter: filter) }
        }
        let items = try await store { n in try n.searchStore.items(ids.map(\.0)) }
        return ids.compactMap { id, score in
            items[id].map { SearchHitDTO(id: id.description, score: score, title: $0.title, text: $0.text ?? "", source: $0.source, tags: $0.tags) }
        }
    }

    /// Items without a vector that a search embeds before it runs; with more waiting, it runs
    /// on the vectors there are.
    static let embedBeforeSearch = 8

    /// The retriever over the current state (nil, so keyword-only, without the embedding
    /// model). Built once and reused until the knowledge or its vectors change.
    func retriever() async throws -> Retriever? {
        guard let embedder = try? await models.embedder() else { return nil }
        return try await retrieverBuild.run {
            let node = self.node
            let fingerprint = try await blocking { try node.searchStore.fingerprint(model: Embedder.modelName) }
            if let cached = state.withLock({ $0.retriever }), cached.fingerprint == fingerprint { return cached.retriever }
            let built: (String, Retriever) = try await blocking {
                var after = ""
                // A few items waiting (a write just made) are embedded first, so they are found by
                // meaning at once; a large backlog (an upload, a sync) is left to the indexing
                // service and the embedding of the upload: searched by keyword meanwhile, and by
                // meaning as their vectors land, instead of every search waiting for all of them.
                let r = try node.retriever(
                    embedder, embeddingAtMost: Self.embedBeforeSearch, afterEmbedding: { after = try node.searchStore.fingerprint(model: Embedder.modelName) })
                return (after, r)
            }
            state.withLock { $0.retriever = (built.0, built.1) }
            return built.1
        }
    }

    // MARK: ingest

    public var ingesting: Bool { state.withLock { $0.ingesting } }

    public func uploadName(_ raw: String) throws -> String { try TextExtraction.uploadName(raw) }

    public func refuseReplacingUploads(_ uploads: [(name: String, data: [UInt8])]) async throws {
        let folder = node.directory.path + "/uploads"
        try await blocking { try Self.refuseReplacing(uploads, in: folder) }
    }

    /// Throws `exists` naming the uploads whose file in `folder` holds other bytes. Only a
    /// regular file of the same size is read (a link or a FIFO planted there is not followed,
    /// and counts as other).
    static func refuseReplacing(_ uploads: [(name: String, data: [UInt8])], in folder: String) throws {
        let taken = try uploads.compactMap { u -> String? in
            let name = try TextExtraction.uploadName(u.name)
            let path = folder + "/" + name
            var st = stat()
            guard lstat(path, &st) == 0 else { return nil }  // not there: a new file
            guard (st.st_mode & S_IFMT) == S_IFREG, Int(st.st_size) == u.data.count else { return name }
            guard let old = FileManager.default.contents(atPath: path) else { return name }
            return old.elementsEqual(u.data) ? nil : name
        }
        guard taken.isEmpty else {
            throw KianaNodeError(
                .exists, "a different \(taken.joined(separator: ", ")) was uploaded before: send it again with replace to make it the new version, or rename it")
        }
    }

    public func ingest(
        uploads: [(name: String, data: [UInt8])], tags: [String], replace: Bool,
        progress: @escaping @Sendable (String, Int, Int, String) -> Void
    ) async throws -> IngestReportDTO {
        guard !uploads.isEmpty else { throw KianaNodeError(.invalidInput, "nothing to ingest: send files") }
        try node.requireWritable()
        let folder = node.directory.path + "/uploads"
        // Each file as written here (`path`) and as the ingest names it (`named`: absolute and
        // standardized, also for a relative data directory).
        let standardFolder = URL(fileURLWithPath: folder).standardizedFileURL.path
        var files: [(path: String, named: String, data: [UInt8])] = []
        var names = Set<String>()
        for upload in uploads {
            let name = try TextExtraction.uploadName(upload.name)
            guard names.insert(name).inserted else { throw KianaNodeError(.invalidInput, "\(name) is sent twice") }
            files.append((folder + "/" + name, standardFolder + "/" + name, upload.data))
        }
        let started = state.withLock { s -> Bool in
            if s.ingesting { return false }
            s.ingesting = true
            return true
        }
        guard started else { throw KianaNodeError(.conflict, "another ingestion is running; try again when it has finished") }
        defer { state.withLock { $0.ingesting = false } }
        let kept = files
        let node = self.node
        // On a thread of its own (ingests run one at a time): a large upload holds it for
        // minutes, and the shared pool's few threads serve /health and search meanwhile.
        let report: IngestReport = try await onOwnThread { [node] in
            let n = node
            // Taken before the files are written: a CLI ingest holding it means 409 and nothing
            // changed in uploads/ (the node does not wait: it would hold a store thread).
            let lock = try IngestLock(directory: n.directory, wait: false)
            defer { lock.release() }
            // Again under the lock: an upload that landed since the route's check is not replaced unasked.
            if !replace { try Self.refuseReplacing(uploads, in: folder) }
            // What each name held before, so a file that fails to ingest leaves uploads/ as it was
            // (a broken upload must not block or replace the next one of that name).
            var before: [String: Data] = [:]
            var written: [String] = []
            func putBack(_ path: String) {
                if let old = before[path] { try? old.write(to: URL(fileURLWithPath: path), options: .atomic) } else { unlink(path) }
            }
            do {
                try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
                for file in kept {
                    var st = stat()
                    if lstat(file.path, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG, let old = FileManager.default.contents(atPath: file.path) {
                        before[file.path] = old
                    }
                    try Data(file.data).write(to: URL(fileURLWithPath: file.path), options: .atomic)
                    written.append(file.path)
                }
            } catch {
                // Nothing was ingested: uploads/ goes back to what it held.
                written.forEach(putBack)
                throw KianaNodeError(.io, "cannot keep the uploaded files in \(folder): \(error.localizedDescription)")
            }
            // Only an authority writes: said before anything is read (not as the first write's error).
            guard try n.isAuthority else {
                for file in kept where before[file.path] == nil { unlink(file.path) }
                throw KianaNodeError(
                    .notAuthority, "this device is not an authority of its network (its vote is not complete, or it was dropped): it cannot add knowledge")
            }
            let report: IngestReport
            do {
                report = try n.ingest(paths: kept.map(\.path), tags: tags, progress: progress, holding: lock)
            } catch {
                // Cut off (a full disk, a busy database): a new upload nothing was taken from is
                // not kept, so it does not turn the next upload of its name into a 409.
                for file in kept where before[file.path] == nil {
                    if (try? n.searchStore.items(sourcePrefix: file.named + "#").isEmpty) == true { unlink(file.path) }
                }
                throw error
            }
            for file in kept where report.failedPaths.contains(file.named) { putBack(file.path) }
            return report
        }
        var embedded = 0
        if report.changed, let embedder = try? await models.embedder() {
            // One thread at background priority: the node keeps answering while an upload is
            // embedded (the indexing service embeds the rest if this is cut short).
            let one = embedder.withThreads(1)
            // Graceful shutdown ends it after the batch at hand (small ones: seconds at most on
            // one thread); the indexing service embeds the rest after the next start.
            let stop = OnceFlag()
            embedded = try await withGracefulShutdownHandler {
                try await inBackground { [node] in try node.embedPending(one, batch: 16, shouldStop: { stop.isSet }, progress: progress) }
            } onGracefulShutdown: {
                stop.set()
            }
        }
        return IngestReportDTO(
            filesScanned: report.filesScanned, filesNew: report.filesNew, filesChanged: report.filesChanged,
            filesUnchanged: report.filesUnchanged, filesRemoved: report.filesRemoved,
            // Named as uploaded: the node's own paths are not the client's business.
            filesFailed: report.filesFailed.map { $0.replacingOccurrences(of: standardFolder + "/", with: "") },
            chunksAdded: report.chunksAdded, chunksUpdated: report.chunksUpdated, chunksRemoved: report.chunksRemoved,
            bytesRead: report.bytesRead, embedded: embedded, changed: report.changed)
    }

    // MARK: answers

    public func modelNames() async throws -> [String] {
        let config = models.config
        if config.backend == .embedded { return [groundedModelName, config.model ?? ModelCatalog.defaultModel] }
        return [groundedModelName] + (try await models.backend().models())
    }

    public func modelDetails(_ name: String) async throws -> ModelDetailsDTO? {
        let names = try await modelNames()
        guard names.contains(name) else { return nil }
        let config = models.config
        guard config.backend == .embedded else {
            return ModelDetailsDTO(
                format: name == groundedModelName ? "kiana" : config.backend.rawValue, family: name == groundedModelName ? "kiana" : "remote",
                parameterSize: "", quantizationLevel: "", contextLength: config.context)
        }
        // the embedded model behind both names, as `kiana models list` reads it
        let embedded = config.model ?? ModelCatalog.defaultModel
        let dir = models.modelDirectory
        let view = try await blocking { LocalModels.list(directory: dir).first { $0.name == embedded || $0.path == embedded } }
        let size = view?.parameters.map { $0 >= 1_000_000_000 ? "\($0 / 1_000_000_000)B" : "\($0 / 1_000_000)M" } ?? ""
        return ModelDetailsDTO(
            format: name == groundedModelName ? "kiana" : "gguf", family: name == groundedModelName ? "kiana" : (view?.architecture ?? "llama"),
            parameterSize: size, quantizationLevel: view?.quantisation ?? "", contextLength: config.context ?? 2048)
    }

    public func loadedModels() async throws -> [String] {
        guard models.backendLoaded else { return [] }
        return try await modelNames()
    }

    public func acceptsGeneration() -> Bool { queue.hasRoom }

    public func chat(
        _ messages: [ChatMessage], grounded: Bool, maxTokens: Int?, sampling: SamplingOptions,
        onText: @escaping @Sendable (String) -> Bool
    ) async throws -> AssistantReply {
        let backend = try await models.backend()
        let name = grounded ? groundedModelName : (models.config.model ?? ModelCatalog.defaultModel)
        guard grounded, let question = messages.last, question.role == .user else {
            var request = ChatRequest(messages: messages)
            if let maxTokens { request.maxTokens = maxTokens }
            request.sampling = sampling
            let req = request
            let r = try await queue.run { try await backend.chat(req, onText: onText) }
            count(r.completionTokens)
            return AssistantReply(
                text: r.text, citations: [], promptTokens: r.promptTokens, completionTokens: r.completionTokens,
                stopReason: r.stopReason, model: name)
        }
        let retriever = try await self.retriever()
        var options = AskOptions()
        if let maxTokens { options.maxTokens = maxTokens }
        options.sampling = sampling
        options.history = messages.dropLast().filter { $0.role != .system }
        let node = self.node
        let opts = options
        let r = try await queue.run { try await node.ask(question.content, backend: backend, retriever: retriever, options: opts, onText: onText) }
        return reply(r, model: name)
    }

    public func ask(
        _ question: String, conversation: String?, maxTokens: Int?, sampling: SamplingOptions?,
        onText: @escaping @Sendable (String) -> Bool
    ) async throws -> (reply: AssistantReply, conversation: String) {
        let backend = try await models.backend()
        let retriever = try await self.retriever()
        var options = AskOptions()
        options.conversation = conversation
        if let maxTokens { options.maxTokens = maxTokens }
        if let sampling { options.sampling = sampling }
        let node = self.node
        let opts = options
        let r = try await queue.run { try await node.ask(question, backend: backend, retriever: retriever, options: opts, onText: onText) }
        return (reply(r, model: groundedModelName), r.conversationId)
    }

    /// The HTTP-facing reply of an answer (citations with their item IDs), counting its tokens.
    private func reply(_ r: AskResult, model: String) -> AssistantReply {
        count(r.reply?.completionTokens ?? 0)
        return AssistantReply(
            text: r.answer, citations: r.citations.map { .init(number: $0.number, id: $0.id, title: $0.title, source: $0.source) },
            promptTokens: r.reply?.promptTokens ?? 0, completionTokens: r.reply?.completionTokens ?? 0,
            stopReason: r.reply?.stopReason ?? .endOfGeneration, model: model,
            support: r.support, abstained: r.abstained)
    }

    func count(_ tokens: Int) { state.withLock { $0.generated += tokens } }

    public func embed(_ texts: [String]) async throws -> (vectors: [[Float]], tokens: Int) {
        guard texts.reduce(0, { $0 + $1.utf8.count }) <= 1 << 20 else { throw KianaNodeError(.invalidInput, "at most 1 MiB of text per request") }
        let embedder = try await models.embedder()
        return try await blocking { (embedder.embed(texts), texts.reduce(0) { $0 + embedder.tokenize($1).count }) }
    }

    public func conversations() async throws -> [ConversationDTO] {
        try await store { n in try n.conversationList().map { ConversationDTO(id: $0.id, title: $0.title, updated: $0.updated, created: $0.created) } }
    }

    public func deleteConversation(_ id: String) async throws -> Bool {
        try node.requireWritable()
        return try await store { n in try n.conversations.delete(id) }
    }

    public func conversation(_ id: String) async throws -> [MessageDTO]? {
        try await store { n in
            guard try n.conversations.conversation(id) != nil else { return nil }
            return try n.conversations.messages(id).map { m in
                MessageDTO(
                    role: m.role, content: m.content, citations: m.citations, created: m.created,
                    cited: m.detail?.cited ?? [], support: m.detail?.support ?? [],
                    abstained: m.detail?.abstained ?? false)
            }
        }
    }

    // MARK: voice

    public func voiceStatus() async -> VoiceStatus {
        let voice = self.voice
        return (try? await onOwnThread { voice.status() }) ?? voice.status()
    }

    public func reserveVoice() throws -> VoiceSlot { try voice.reserve() }

    // Voice waits on its engines: on threads of its own, in a reserved slot (at most 4 run).
    public func speechFormat(_ text: String, language: String?, voice name: String?, speed: Double?, engine: String?) async throws -> SpeechInfo {
        let voice = self.voice
        return try await onOwnThread { try voice.speechFormat(text, language: language, voice: name, speed: speed, engine: engine) }
    }

    public func speak(
        _ text: String, language: String?, voice name: String?, speed: Double?, engine: String?, slot: VoiceSlot,
        onAudio: @escaping @Sendable (PCMAudio) -> Bool
    ) async throws -> SpeechInfo {
        let voice = self.voice
        return try await onOwnThread { try voice.speak(text, language: language, voice: name, speed: speed, engine: engine, slot: slot, onAudio: onAudio) }
    }

    public func transcribe(_ audio: PCMAudio, language: String?, slot: VoiceSlot) async throws -> Transcript {
        let voice = self.voice
        return try await onOwnThread { try voice.transcribe(audio, language: language, slot: slot) }
    }

    public var audioLimits: AudioLimits { voice.settings.limits }

    // MARK: ledger

    public func ledgerStatus() async throws -> LedgerStatusDTO {
        try await store { n in
            let head = try n.store.head()
            let c = try n.store.counts()
            return LedgerStatusDTO(
                height: head?.height, head: head.map { Hex.encode($0.hash) }, items: c.items, blocks: c.blocks,
                entries: c.entries, deletedItems: c.deletedItems, pending: c.pending)
        }
    }

    public func head() async throws -> LedgerHead? {
        try await store { n in try n.store.head() }
    }

    public func blocks(from: UInt64, through: UInt64) async throws -> [Block] {
        try await store { n in try n.store.blocks(from: from, through: through) }
    }

    public func entry(_ id: String) async throws -> EntryDTO {
        try await store { n in
            let (e, height, position) = try n.store.findEntry(idPrefix: id)
            return EntryDTO(e, height: height, position: position)
        }
    }

    public func proof(_ id: String) async throws -> ProofDTO {
        try await store { n in
            let (p, item) = try n.proof(itemOrEntry: id)
            try p.verify()
            return ProofDTO(
                item: item, entry: EntryDTO(p.entry), height: p.height, position: p.position, blockEntryCount: p.blockEntryCount,
                entryRoot: Hex.encode(p.entryRoot), entryPath: p.entryPath.map(Hex.encode), blockHash: Hex.encode(p.blockHash),
                treeSize: p.treeSize, historyRoot: Hex.encode(p.historyRoot), historyPath: p.historyPath.map(Hex.encode), verified: true)
        }
    }

    public func verify() async throws -> VerifyDTO {
        try await store { n in
            let start = DispatchTime.now().uptimeNanoseconds
            let s = try n.verify()
            return VerifyDTO(
                valid: true, height: s.tip.height, head: Hex.encode(s.tipHash), blocks: s.blockCount, entries: s.entryCount,
                authorities: s.authorities.count, seconds: Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
        }
    }

    // MARK: device and peers

    public func device() async throws -> DeviceDTO {
        let config = models.config
        let loaded = models.allLoaded
        var d = try await store { n in
            let authorities = try n.store.authorities().map(Hex.encode).sorted()
            let counts = try n.store.counts()
            return DeviceDTO(
                deviceId: n.identity.deviceID.description, publicKey: Hex.encode(n.identity.publicKey),
                network: try n.store.network().map(Hex.encode), authorities: authorities,
                authority: authorities.contains(Hex.encode(n.identity.publicKey)), dataDirectory: n.directory.path,
                backend: config.backend.rawValue, model: config.model ?? (config.backend == .embedded ? ModelCatalog.defaultModel : nil),
                modelsLoaded: loaded, items: counts.items, blocks: counts.blocks, entries: counts.entries)
        }
        if let network {
            d.peers = await network.statusWithRTT()
            d.listening = await network.listeningPort
            if let head = try? await network.sync.head() {
                d.treeSize = head.size
                d.treeRoot = Hex.encode(head.root)
            }
            d.sync = network.counters.snapshot
        }
        return d
    }

    public func peers(rtt: Bool) async -> [PeerStatus] {
        guard let network else { return [] }
        return rtt ? await network.statusWithRTT() : await network.status()
    }

    public func syncStatus() async throws -> SyncStatus {
        try await requireNetwork().syncStatus()
    }

    public func syncStats() async -> SyncStats? { network?.counters.snapshot }
    public func admissionStats() async -> AdmissionStats? { network?.admissionStats }

    public func ledgerChangedElsewhere() async { network?.wake() }

    public func addPeer(address: String) async throws -> Bool {
        do throws(KianaNetError) { _ = try PeerNetwork.parse(address) } catch { throw KianaNodeError(.invalidInput, error.message) }
        return try await store { n in try n.addPeer(address: address) }
    }

    func requireNetwork() throws -> PeerNetwork {
        guard let network else { throw KianaNodeError(.notRunning, "device networking is not running in this node") }
        return network
    }

    public func openPairing(seconds: Int) async throws -> Int? {
        let network = try requireNetwork()
        // Only an authority can write the vote that lets a device in: refused before anyone
        // types a code for nothing.
        guard try await store({ n in try n.isAuthority }) else {
            throw KianaNodeError(
                .notAuthority,
                "this device is not an authority of its network (it was dropped, or its own vote is not complete): pair from a device `kiana status` lists under Authorities")
        }
        await network.pairing.open(seconds: seconds)
        return await network.listeningPort
    }

    public func closePairing() async {
        await network?.pairing.close()
    }

    public func pendingPairings() async -> (open: Bool, requests: [PairingRequest]) {
        guard let network else { return (false, []) }
        return (await network.pairing.isOpen, await network.pairing.pending())
    }

    /// A matching code writes the add-authority vote here (the peer layer signs nothing), then
    /// lets the joiner in; if the vote cannot be written the joiner is turned away.
    public func confirmPairing(device: String?, code: String) async throws -> PairingOutcome {
        let network = try requireNetwork()
        let checked = try await network.pairing.check(device: device, code: code)
        var outcome = (request: checked.request, accepted: checked.matched)
        var voted = false
        if checked.matched {
            let key = Hex.encode(checked.key)
            do {
                // No second vote for a device that is in already, or that this device voted for
                // before (a join cut off after its code, run again): it is let in for the ledger.
                voted = try await store { n in
                    let m = try n.store.membership()
                    let votedFor = m.votes.contains { $0.signer == n.identity.publicKey && $0.vote.target == checked.key && $0.vote.authorize }
                    guard !m.authorities.contains(checked.key), !votedFor else { return false }
                    _ = try n.vote(add: true, target: key, force: true)  // the matched code is the confirmation
                    return true
                }
            } catch {
                await network.pairing.reject(checked.key)
                throw KianaNetError(.pairing, "could not write the vote: \(ErrorLine.text(for: error))", cause: error)
            }
            await network.pairing.admit(checked.key, voted: voted)
            outcome.accepted = true
        }
        let key = checked.key
        let m = try? await store { n in try n.store.membership() }
        return PairingOutcome(
            request: outcome.request, accepted: outcome.accepted, member: m?.authorities.contains(key) ?? false,
            authorities: m?.authorities.count ?? 0, votesFor: m?.tally[key]?.count ?? 0, voted: voted)
    }
}
