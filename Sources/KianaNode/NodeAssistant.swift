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
    /// The retriever over the state it was built from (see `SearchStore.fingerprint`).
    private let retrieverLock = NSLock()
    private var cachedRetriever: (fingerprint: String, retriever: Retriever)?
    /// One ingestion at a time (two runs over the same file would both add its chunks); another
    /// is refused rather than queued, since each may hold a 32 MiB upload.
    private var ingestRunning = false
    /// The embedded model answers one request at a time; others wait their turn here.
    let queue: GenerationQueue

    public init(node: Node, modelDirectory: String, config: BackendConfig, waitingLimit: Int = 16) {
        self.node = node
        self.modelDirectory = modelDirectory
        self.config = config
        self.queue = GenerationQueue(limit: config.backend == .embedded ? 1 : 64, waitingLimit: waitingLimit)
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
            let req = request
            let r = try await queue.run { try await backend.chat(req, onText: onText) }
            count(r.completionTokens)
            return AssistantReply(text: r.text, citations: [], promptTokens: r.promptTokens, completionTokens: r.completionTokens,
                                  stopReason: r.stopReason, model: name)
        }
        let retriever = try await self.retriever()
        var options = AskOptions()
        if let maxTokens { options.maxTokens = maxTokens }
        options.sampling = sampling
        options.history = messages.dropLast().filter { $0.role != .system }
        let node = self.node, opts = options
        let r = try await queue.run { try await node.ask(question.content, backend: backend, retriever: retriever, options: opts, onText: onText) }
        return reply(r, model: name)
    }

    /// The HTTP-facing reply of an answer (citations with their item IDs), counting its tokens.
    private func reply(_ r: AskResult, model: String) -> AssistantReply {
        count(r.reply?.completionTokens ?? 0)
        return AssistantReply(text: r.answer, citations: r.citations.map { .init(number: $0.number, id: $0.id, title: $0.title, source: $0.source) },
                              promptTokens: r.reply?.promptTokens ?? 0, completionTokens: r.reply?.completionTokens ?? 0,
                              stopReason: r.reply?.stopReason ?? .endOfGeneration, model: model)
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

    /// The retriever over the current state (nil, so keyword-only, without the embedding
    /// model). Built once and reused until the knowledge or its vectors change.
    func retriever() async throws -> Retriever? {
        guard let embedder = try? await loadedEmbedder() else { return nil }
        return try await blocking { try self.currentRetriever(embedder) }
    }

    private func currentRetriever(_ embedder: Embedder) throws -> Retriever {
        try retrieverLock.withLock {
            let store = node.searchStore
            if let cached = cachedRetriever, cached.fingerprint == (try store.fingerprint(model: Embedder.modelName)) { return cached.retriever }
            var fingerprint = ""
            let r = try node.retriever(embedder, afterEmbedding: { fingerprint = try store.fingerprint(model: Embedder.modelName) })
            cachedRetriever = (fingerprint, r)
            return r
        }
    }

    public func remember(text: String, title: String?, tags: [String], source: String?) async throws -> String {
        let node = self.node
        return try await blocking { try node.remember(text: text, title: title, tags: tags, source: source).0.description }
    }

    public func update(id: String, text: String?, title: String?, tags: [String]?) async throws -> String {
        let node = self.node
        return try await blocking { try node.update(idPrefix: id, text: text, title: title, tags: tags).0.description }
    }

    public var ingesting: Bool { lock.withLock { ingestRunning } }

    public func acceptsGeneration() -> Bool { queue.hasRoom }

    public func ingest(uploads: [(name: String, data: [UInt8])], tags: [String],
                       progress: @escaping @Sendable (String, Int, Int, String) -> Void) async throws -> [String: any Sendable] {
        guard !uploads.isEmpty else { throw KianaNodeError(.invalidInput, "nothing to ingest: send files") }
        let folder = node.directory.path + "/uploads"
        var files: [(path: String, data: [UInt8])] = []
        var names = Set<String>()
        for upload in uploads {
            let name = try TextExtraction.uploadName(upload.name)
            guard names.insert(name).inserted else { throw KianaNodeError(.invalidInput, "\(name) is sent twice") }
            files.append((folder + "/" + name, upload.data))
        }
        let started = lock.withLock { () -> Bool in
            if ingestRunning { return false }
            ingestRunning = true
            return true
        }
        guard started else { throw KianaNodeError(.conflict, "another ingestion is running; try again when it has finished") }
        defer { lock.withLock { ingestRunning = false } }
        let node = self.node, kept = files
        let report: IngestReport = try await blocking {
            do {
                try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
                for file in kept { try Data(file.data).write(to: URL(fileURLWithPath: file.path), options: .atomic) }
            } catch {
                throw KianaNodeError(.io, "cannot keep the uploaded files in \(folder): \(error.localizedDescription)")
            }
            return try node.ingest(paths: kept.map(\.path), tags: tags, progress: progress)
        }
        var embedded = 0
        if report.changed, let embedder = try? await loadedEmbedder() {
            embedded = try await blocking { try node.embedPending(embedder, progress: progress) }
        }
        return ["filesScanned": report.filesScanned, "filesNew": report.filesNew, "filesChanged": report.filesChanged,
                "filesUnchanged": report.filesUnchanged, "filesRemoved": report.filesRemoved, "filesFailed": report.filesFailed,
                "chunksAdded": report.chunksAdded, "chunksUpdated": report.chunksUpdated, "chunksRemoved": report.chunksRemoved,
                "bytesRead": report.bytesRead, "embedded": embedded, "changed": report.changed]
    }

    public func proof(_ id: String) async throws -> [String: any Sendable] {
        let node = self.node
        return try await blocking {
            var entryID = id
            var item: String?
            if let found = try? node.store.item(idPrefix: id), let last = found.lastEntry {
                entryID = Hex.encode(last)
                item = found.id.description
            }
            let p: Node.EntryProof
            do { p = try node.proof(entryIDPrefix: entryID) } catch let e as KianaStoreError where e.code == .notFound {
                throw KianaStoreError(.notFound, "no knowledge item or ledger entry \(id)")
            }
            try p.verify()
            return ["item": item, "entry": LedgerJSON.entry(p.entry), "height": Int(p.height), "position": p.position,
                    "blockEntryCount": p.blockEntryCount, "entryRoot": Hex.encode(p.entryRoot), "entryPath": p.entryPath.map(Hex.encode),
                    "blockHash": Hex.encode(p.blockHash), "treeSize": p.treeSize, "historyRoot": Hex.encode(p.historyRoot),
                    "historyPath": p.historyPath.map(Hex.encode), "verified": true]
        }
    }

    public func device() async throws -> [String: any Sendable] {
        let store = node.store, identity = node.identity
        let network = try store.network().map(Hex.encode)
        let authorities = try store.authorities().map(Hex.encode).sorted()
        let counts = try store.counts()
        return ["deviceId": identity.deviceID.description, "publicKey": Hex.encode(identity.publicKey), "network": network,
                "authorities": authorities, "authority": authorities.contains(Hex.encode(identity.publicKey)),
                "dataDirectory": node.directory.path, "backend": config.backend.rawValue,
                "model": config.model ?? (config.backend == .embedded ? ModelCatalog.defaultModel : nil),
                "modelsLoaded": modelLoaded, "items": counts.items, "blocks": counts.blocks, "entries": counts.entries]
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
        let node = self.node, opts = options
        let r = try await queue.run { try await node.ask(question, backend: backend, retriever: retriever, options: opts, onText: onText) }
        return (reply(r, model: groundedModelName), r.conversationId)
    }

    public func conversations() async throws -> [[String: any Sendable]] {
        try node.conversations.list().map { ["id": $0.id, "title": $0.title, "updated": Int($0.updated), "created": Int($0.created)] }
    }

    public func conversation(_ id: String) async throws -> [[String: any Sendable]]? {
        guard try node.conversations.conversation(id) != nil else { return nil }
        return try node.conversations.messages(id).map { ["role": $0.role, "content": $0.content, "citations": $0.citations, "created": Int($0.created)] }
    }
}

/// Runs at most `limit` generations at once; up to `waitingLimit` more wait in order, and
/// beyond that a request is refused at once with `busy` (HTTP 503) instead of piling up. A
/// waiting request whose task is cancelled (its client went away) leaves the queue.
final class GenerationQueue: @unchecked Sendable {
    let limit: Int
    let waitingLimit: Int
    private let lock = NSLock()
    private var running = 0
    private var waiting: [(id: UInt64, continuation: CheckedContinuation<Void, any Error>)] = []
    private var nextID: UInt64 = 0

    init(limit: Int, waitingLimit: Int) {
        self.limit = limit
        self.waitingLimit = waitingLimit
    }

    /// Whether a request arriving now would run or wait (not be refused).
    var hasRoom: Bool { lock.withLock { running < limit || waiting.count < waitingLimit } }

    func run<T: Sendable>(_ body: @Sendable () async throws -> T) async throws -> T {
        try await enter()
        defer { leave() }
        return try await body()
    }

    private func enter() async throws {
        let id: UInt64? = try lock.withLock {
            if running < limit { running += 1; return nil }
            guard waiting.count < waitingLimit else {
                throw KianaNodeError(.busy, "the language model is busy with \(waiting.count + running) requests; try again shortly")
            }
            nextID += 1
            return nextID
        }
        guard let id else { return }
        // `running` is handed over by `leave` when this waiter is resumed normally.
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
                lock.withLock {
                    if Task.isCancelled { c.resume(throwing: CancellationError()) } else { waiting.append((id, c)) }
                }
            }
        } onCancel: {
            let c = lock.withLock { () -> CheckedContinuation<Void, any Error>? in
                guard let i = waiting.firstIndex(where: { $0.id == id }) else { return nil }
                return waiting.remove(at: i).continuation
            }
            c?.resume(throwing: CancellationError())
        }
    }

    private func leave() {
        let next = lock.withLock { () -> CheckedContinuation<Void, any Error>? in
            if waiting.isEmpty { running -= 1; return nil }
            return waiting.removeFirst().continuation
        }
        next?.resume()
    }
}
