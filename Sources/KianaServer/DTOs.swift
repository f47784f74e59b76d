import Foundation
import Hummingbird
import KianaAI
import KianaCore
import KianaNet
import KianaStore

// The request and response bodies of KI_ana's own REST API (/api/v1, /health, /ready), as
// Codable types. Field names are the JSON names. A field that is `null` in JSON when it has no
// value is written explicitly (`encodeNil`), as clients have always seen it.

// MARK: health

public struct HealthDTO: ResponseCodable, Sendable {
    public var status: String
    public var deviceId: String
    public var height: UInt64?
    /// The height that last passed verification (at start or by `ledger verify`).
    public var verifiedHeight: UInt64?
    /// Why `status` is "degraded" (absent when it is "ok").
    public var problem: String?
    public init(status: String = "ok", deviceId: String, height: UInt64?, verifiedHeight: UInt64?, problem: String? = nil) {
        self.status = problem == nil ? status : "degraded"
        self.deviceId = deviceId
        self.height = height
        self.verifiedHeight = verifiedHeight
        self.problem = problem
    }
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(status, forKey: .status)
        try c.encode(deviceId, forKey: .deviceId)
        try c.encode(height, forKey: .height)
        try c.encode(verifiedHeight, forKey: .verifiedHeight)
        try c.encodeIfPresent(problem, forKey: .problem)
    }
}

public struct ReadyDTO: ResponseCodable, Sendable {
    public var ready: Bool
    public var store: Bool
    public var model: Bool
    public init(ready: Bool, store: Bool, model: Bool) {
        self.ready = ready
        self.store = store
        self.model = model
    }
}

// MARK: knowledge

/// A knowledge item.
public struct ItemDTO: ResponseCodable, Sendable, Equatable {
    public var id: String
    public var title: String?
    public var text: String
    public var tags: [String]
    public var source: String?
    public var deleted: Bool
    public var created: UInt64?
    public var updated: UInt64?
    /// The ledger entry that last changed the item.
    public var entry: String?

    public init(_ i: StoredItem) {
        id = i.id.description
        title = i.title
        text = i.text ?? ""
        tags = i.tags
        source = i.source
        deleted = i.deleted
        created = i.created?.wall
        updated = i.updated?.wall
        entry = i.lastEntry.map(Hex.encode)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(id, forKey: .id)
        try c.encode(title, forKey: .title)
        try c.encode(text, forKey: .text)
        try c.encode(tags, forKey: .tags)
        try c.encode(source, forKey: .source)
        try c.encode(deleted, forKey: .deleted)
        try c.encode(created, forKey: .created)
        try c.encode(updated, forKey: .updated)
        try c.encode(entry, forKey: .entry)
    }
}

public struct ItemPageDTO: ResponseCodable, Sendable {
    public var total: Int
    public var items: [ItemDTO]
    public init(total: Int, items: [ItemDTO]) {
        self.total = total
        self.items = items
    }
}

/// `POST /api/v1/knowledge`.
public struct NewItemDTO: Codable, Sendable {
    public var text: String?
    public var title: String?
    public var tags: [String]?
    public var source: String?
}

/// `PUT /api/v1/knowledge/{id}`: the fields to change (absent: unchanged).
public struct ItemChangeDTO: Codable, Sendable {
    public var text: String?
    public var title: String?
    public var tags: [String]?
}

public struct CreatedDTO: ResponseCodable, Sendable { public var id: String }
public struct ForgottenDTO: ResponseCodable, Sendable { public var forgotten: String }

/// One search hit with its item.
public struct SearchHitDTO: ResponseCodable, Sendable {
    public var id: String
    public var score: Double
    public var title: String?
    public var text: String
    public var source: String?
    public var tags: [String]
    public init(id: String, score: Double, title: String?, text: String, source: String?, tags: [String]) {
        self.id = id
        self.score = score
        self.title = title
        self.text = text
        self.source = source
        self.tags = tags
    }
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(id, forKey: .id)
        try c.encode(score, forKey: .score)
        try c.encode(title, forKey: .title)
        try c.encode(text, forKey: .text)
        try c.encode(source, forKey: .source)
        try c.encode(tags, forKey: .tags)
    }
}

public struct SearchResultsDTO: ResponseCodable, Sendable { public var hits: [SearchHitDTO] }

// MARK: ingest

/// `POST /api/v1/ingest`: files as text or base64, tags for every new chunk.
public struct IngestRequestDTO: Codable, Sendable {
    public struct File: Codable, Sendable {
        public var name: String?
        public var text: String?
        public var base64: String?
    }
    public var files: [File]?
    public var tags: [String]?
    public var stream: Bool?
    /// Replace files uploaded before under the same names with other content (without it,
    /// such an upload is refused with `exists`, naming them).
    public var replace: Bool?
    /// Refused over HTTP (files on the node are ingested with `kiana ingest`).
    public var paths: [String]?
}

public struct IngestReportDTO: ResponseCodable, Sendable {
    public var filesScanned: Int
    public var filesNew: Int
    public var filesChanged: Int
    public var filesUnchanged: Int
    public var filesRemoved: Int
    public var filesFailed: [String]
    public var chunksAdded: Int
    public var chunksUpdated: Int
    public var chunksRemoved: Int
    public var bytesRead: Int
    public var embedded: Int
    public var changed: Bool
    public init(
        filesScanned: Int, filesNew: Int, filesChanged: Int, filesUnchanged: Int, filesRemoved: Int, filesFailed: [String],
        chunksAdded: Int, chunksUpdated: Int, chunksRemoved: Int, bytesRead: Int, embedded: Int, changed: Bool
    ) {
        self.filesScanned = filesScanned
        self.filesNew = filesNew
        self.filesChanged = filesChanged
        self.filesUnchanged = filesUnchanged
        self.filesRemoved = filesRemoved
        self.filesFailed = filesFailed
        self.chunksAdded = chunksAdded
        self.chunksUpdated = chunksUpdated
        self.chunksRemoved = chunksRemoved
        self.bytesRead = bytesRead
        self.embedded = embedded
        self.changed = changed
    }
}

/// An ingest progress event.
public struct IngestProgressDTO: Codable, Sendable {
    public var phase: String
    public var done: Int
    public var total: Int
    public var file: String
}

// MARK: ask and conversations

/// `POST /api/v1/ask`.
public struct AskRequestDTO: Codable, Sendable {
    public var question: String?
    public var conversation: String?
    public var max_tokens: Int?
    public var temperature: Double?
    public var top_p: Double?
    public var seed: Int64?
    public var stream: Bool?
}

/// A cited knowledge item of an answer (kept as sent with the conversation).
public typealias CitationDTO = AnswerDetail.Cited

/// A sentence of a cited source that supports an answer, shown under it.
public typealias SupportDTO = AnswerDetail.Quote

public struct AnswerDTO: ResponseCodable, Sendable {
    public var answer: String
    public var conversation: String
    public var citations: [CitationDTO]
    /// The source sentences that support the answer.
    public var support: [SupportDTO]
    /// True when nothing taught answers the question and the answer says so.
    public var abstained: Bool
    public var finish_reason: String
}

public struct TokenDTO: Codable, Sendable { public var text: String }

public struct ConversationDTO: Codable, Sendable {
    public var id: String
    public var title: String
    public var updated: Int64
    public var created: Int64
    public init(id: String, title: String, updated: Int64, created: Int64) {
        self.id = id
        self.title = title
        self.updated = updated
        self.created = created
    }
}

public struct ConversationsDTO: ResponseCodable, Sendable { public var conversations: [ConversationDTO] }

public struct MessageDTO: Codable, Sendable {
    public var role: String
    public var content: String
    /// Hex IDs of the cited knowledge items.
    public var citations: [String]
    public var created: Int64
    /// The answer's numbered citations as they were shown (empty for turns stored before
    /// 2026-12-06, and for questions).
    public var cited: [CitationDTO]
    /// The source sentences shown under the answer.
    public var support: [SupportDTO]
    /// True when the answer said that nothing taught answers the question.
    public var abstained: Bool
    public init(role: String, content: String, citations: [String], created: Int64, cited: [CitationDTO] = [], support: [SupportDTO] = [], abstained: Bool = false) {
        self.role = role
        self.content = content
        self.citations = citations
        self.created = created
        self.cited = cited
        self.support = support
        self.abstained = abstained
    }
}

public struct ConversationMessagesDTO: ResponseCodable, Sendable {
    public var id: String
    public var messages: [MessageDTO]
}

// MARK: ledger

public struct LedgerStatusDTO: ResponseCodable, Sendable {
    public var height: UInt64?
    public var head: String?
    public var items: Int
    public var blocks: Int
    public var entries: Int
    public var deletedItems: Int
    public var pending: Int
    public init(height: UInt64?, head: String?, items: Int, blocks: Int, entries: Int, deletedItems: Int, pending: Int) {
        self.height = height
        self.head = head
        self.items = items
        self.blocks = blocks
        self.entries = entries
        self.deletedItems = deletedItems
        self.pending = pending
    }
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(height, forKey: .height)
        try c.encode(head, forKey: .head)
        try c.encode(items, forKey: .items)
        try c.encode(blocks, forKey: .blocks)
        try c.encode(entries, forKey: .entries)
        try c.encode(deletedItems, forKey: .deletedItems)
        try c.encode(pending, forKey: .pending)
    }
}

/// A ledger entry; for knowledge operations, the item and the fields it sets.
public struct EntryDTO: ResponseCodable, Sendable {
    public struct Fields: Codable, Sendable {
        public var title: String?
        public var text: String?
        public var tags: [String]?
        public var source: String?
    }
    public var id: String
    public var kind: String
    public var author: String
    public var authorDevice: String
    public var sequence: UInt64
    public var hlc: String
    public var signature: String
    public var item: String?
    public var fields: Fields?
    /// Where the entry is on the chain (entry lookups only).
    public var height: UInt64?
    public var position: Int?

    public init(_ e: Entry, height: UInt64? = nil, position: Int? = nil) {
        id = Hex.encode(e.id)
        kind = e.kind.rawValue
        author = Hex.encode(e.author)
        authorDevice = DeviceID(publicKey: e.author).description
        sequence = e.sequence
        hlc = e.hlc.description
        signature = Hex.encode(e.signature)
        self.height = height
        self.position = position
        if let op = try? KnowledgeOp(kind: e.kind, payload: e.payload) {
            switch op {
            case .put(let id, let f):
                item = id.description
                fields = Fields(title: f.title, text: f.text, tags: f.tags, source: f.source)
            case .delete(let id):
                item = id.description
            }
        }
    }
}

/// A block header; `entries` when one block is asked for.
public struct BlockDTO: ResponseCodable, Sendable {
    public var height: UInt64
    public var hash: String
    public var parent: String
    public var time: UInt64
    public var signer: String
    public var signerDevice: String
    public var entryRoot: String
    public var entryCount: Int
    public var signature: String
    public var name: String?
    public var authorities: [String]?
    public var entries: [EntryDTO]?

    public init(_ b: Block, withEntries: Bool = false) {
        let h = b.header
        height = h.height
        hash = b.hashHex
        parent = Hex.encode(h.parent)
        time = h.time
        signer = Hex.encode(h.signer)
        signerDevice = DeviceID(publicKey: h.signer).description
        entryRoot = Hex.encode(h.entryRoot)
        entryCount = Int(h.entryCount)
        signature = Hex.encode(b.signature)
        name = h.name
        authorities = h.authorities?.map(Hex.encode)
        entries = withEntries ? b.entries.map { EntryDTO($0) } : nil
    }
}

public struct BlockPageDTO: ResponseCodable, Sendable {
    public var blocks: [BlockDTO]
    public var height: UInt64
}

/// An inclusion proof: the entry in its block, the block in the history tree (RFC 6962).
public struct ProofDTO: ResponseCodable, Sendable {
    public var item: String?
    public var entry: EntryDTO
    public var height: UInt64
    public var position: Int
    public var blockEntryCount: Int
    public var entryRoot: String
    public var entryPath: [String]
    public var blockHash: String
    public var treeSize: Int
    public var historyRoot: String
    public var historyPath: [String]
    public var verified: Bool
    public init(
        item: String?, entry: EntryDTO, height: UInt64, position: Int, blockEntryCount: Int, entryRoot: String, entryPath: [String],
        blockHash: String, treeSize: Int, historyRoot: String, historyPath: [String], verified: Bool
    ) {
        self.item = item
        self.entry = entry
        self.height = height
        self.position = position
        self.blockEntryCount = blockEntryCount
        self.entryRoot = entryRoot
        self.entryPath = entryPath
        self.blockHash = blockHash
        self.treeSize = treeSize
        self.historyRoot = historyRoot
        self.historyPath = historyPath
        self.verified = verified
    }
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(item, forKey: .item)
        try c.encode(entry, forKey: .entry)
        try c.encode(height, forKey: .height)
        try c.encode(position, forKey: .position)
        try c.encode(blockEntryCount, forKey: .blockEntryCount)
        try c.encode(entryRoot, forKey: .entryRoot)
        try c.encode(entryPath, forKey: .entryPath)
        try c.encode(blockHash, forKey: .blockHash)
        try c.encode(treeSize, forKey: .treeSize)
        try c.encode(historyRoot, forKey: .historyRoot)
        try c.encode(historyPath, forKey: .historyPath)
        try c.encode(verified, forKey: .verified)
    }
}

public struct VerifyDTO: ResponseCodable, Sendable {
    public var valid: Bool
    public var height: UInt64
    public var head: String
    public var blocks: Int
    public var entries: Int
    public var authorities: Int
    public var seconds: Double
    public init(valid: Bool, height: UInt64, head: String, blocks: Int, entries: Int, authorities: Int, seconds: Double) {
        self.valid = valid
        self.height = height
        self.head = head
        self.blocks = blocks
        self.entries = entries
        self.authorities = authorities
        self.seconds = seconds
    }
}

// MARK: device

public struct DeviceDTO: ResponseCodable, Sendable {
    public var deviceId: String
    public var publicKey: String
    public var network: String?
    public var authorities: [String]
    public var authority: Bool
    public var dataDirectory: String
    public var backend: String
    public var model: String?
    public var modelsLoaded: Bool
    public var items: Int
    public var blocks: Int
    public var entries: Int
    public var peers: [PeerStatus]?
    public var listening: Int?
    /// The history tree over this device's chain, and sync counters since start (with networking).
    public var treeSize: UInt64?
    public var treeRoot: String?
    public var sync: SyncStats?
    /// Connections by listener and descriptors in use against the budget (the HTTP layer fills it).
    public var connections: ConnectionsDTO?
    public init(
        deviceId: String, publicKey: String, network: String?, authorities: [String], authority: Bool, dataDirectory: String,
        backend: String, model: String?, modelsLoaded: Bool, items: Int, blocks: Int, entries: Int
    ) {
        self.deviceId = deviceId
        self.publicKey = publicKey
        self.network = network
        self.authorities = authorities
        self.authority = authority
        self.dataDirectory = dataDirectory
        self.backend = backend
        self.model = model
        self.modelsLoaded = modelsLoaded
        self.items = items
        self.blocks = blocks
        self.entries = entries
    }
}

// MARK: errors

/// `{"error":{"code","message","type"}}`: every error response.
public struct ErrorBodyDTO: ResponseCodable, Sendable {
    public struct Body: Codable, Sendable {
        public var code: String
        public var message: String
        /// OpenAI's error type, so its clients read these errors too.
        public var type: String
    }
    public var error: Body
}

/// A served model as the Ollama-compatible /api/show describes it.
public struct ModelDetailsDTO: Codable, Sendable, Equatable {
    /// "gguf" for a GGUF model, "kiana" for the grounded model.
    public var format: String
    public var family: String
    public var parameterSize: String
    public var quantizationLevel: String
    public var contextLength: Int?
    public init(format: String, family: String, parameterSize: String, quantizationLevel: String, contextLength: Int?) {
        self.format = format
        self.family = family
        self.parameterSize = parameterSize
        self.quantizationLevel = quantizationLevel
        self.contextLength = contextLength
    }
}
