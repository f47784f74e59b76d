import Foundation
import GRDB

/// A conversation with the assistant (local to this device).
public struct Conversation: Codable, Sendable, Equatable, FetchableRecord, PersistableRecord {
    public var id: String
    public var title: String
    public var created: Int64
    public var updated: Int64
    public init(id: String, title: String, created: Int64, updated: Int64) {
        self.id = id
        self.title = title
        self.created = created
        self.updated = updated
    }
}

/// One turn of a conversation. `citations` are the hex IDs of the knowledge items the answer
/// cites; `detail` is what the answer showed beside its text (nil for turns stored before it was kept).
public struct ConversationMessage: Codable, Sendable, Equatable, FetchableRecord, MutablePersistableRecord {
    public static let databaseTableName = "message"
    public var id: Int64?
    public var conversationId: String
    public var role: String
    public var content: String
    public var citations: [String]
    public var created: Int64
    public var detail: AnswerDetail?

    public init(
        conversationId: String, role: String, content: String, citations: [String] = [], created: Int64, detail: AnswerDetail? = nil
    ) {
        self.conversationId = conversationId
        self.role = role
        self.content = content
        self.citations = citations
        self.created = created
        self.detail = detail
    }

    public mutating func didInsert(_ inserted: InsertionSuccess) { id = inserted.rowID }
}

/// What an answer showed beside its text: its numbered citations, the source sentences that
/// support it, and whether it abstained. `Cited` and `Quote` are also the HTTP API's citation
/// and support objects (`CitationDTO`, `SupportDTO`): what is kept is what was sent.
public struct AnswerDetail: Codable, Sendable, Equatable {
    /// A cited knowledge item of an answer.
    public struct Cited: Codable, Sendable, Equatable {
        /// The number the prompt gave the source.
        public var number: Int
        /// Hex ID of the knowledge item.
        public var id: String
        public var title: String?
        public var source: String?
        public init(number: Int, id: String, title: String?, source: String?) {
            self.number = number
            self.id = id
            self.title = title
            self.source = source
        }
        /// Absent title and source are written as null (the API lists every field).
        public func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(number, forKey: .number)
            try c.encode(id, forKey: .id)
            try c.encode(title, forKey: .title)
            try c.encode(source, forKey: .source)
        }
    }
    /// A sentence of a cited source that supports an answer, shown under it.
    public struct Quote: Codable, Sendable, Equatable {
        /// The citation number of its source.
        public var number: Int
        /// Hex ID of the knowledge item.
        public var id: String
        public var text: String
        public init(number: Int, id: String, text: String) {
            self.number = number
            self.id = id
            self.text = text
        }
    }
    public var cited: [Cited]
    public var support: [Quote]
    public var abstained: Bool
    public init(cited: [Cited], support: [Quote], abstained: Bool) {
        self.cited = cited
        self.support = support
        self.abstained = abstained
    }
}

/// Conversations and their messages, on the node's database.
public struct ConversationStore: Sendable {
    public let database: KianaDatabase
    public init(database: KianaDatabase) { self.database = database }

    /// Starts a conversation titled after its first question.
    public func create(title: String, now: Int64) throws(KianaStoreError) -> Conversation {
        let c = Conversation(id: UUID().uuidString.lowercased(), title: String(title.prefix(80)), created: now, updated: now)
        try database.run("creating a conversation") { try database.writer.write { db in try c.insert(db) } }
        return c
    }

    public func conversation(_ id: String) throws(KianaStoreError) -> Conversation? {
        try database.run("reading a conversation") { try database.writer.read { db in try Conversation.fetchOne(db, key: id) } }
    }

    /// The conversation whose ID is `id` or starts with it (at least 4 characters, one match).
    public func conversation(idPrefix id: String) throws(KianaStoreError) -> Conversation? {
        if let exact = try conversation(id) { return exact }
        let prefix = id.lowercased()
        guard prefix.count >= 4, prefix.allSatisfy({ $0.isHexDigit || $0 == "-" }) else { return nil }
        return try database.run("finding a conversation") {
            try database.writer.read { db in
                let rows = try Conversation.filter(Column("id").like(prefix + "%")).limit(2).fetchAll(db)
                guard rows.count < 2 else { throw KianaStoreError(.ambiguous, "conversation prefix \(id) is ambiguous: give more characters") }
                return rows.first
            }
        }
    }

    /// Conversations, most recently updated first.
    public func list(limit: Int = 100) throws(KianaStoreError) -> [Conversation] {
        try database.run("listing conversations") {
            try database.writer.read { db in
                try Conversation.order(Column("updated").desc).limit(limit).fetchAll(db)
            }
        }
    }

    /// Messages of a conversation in order.
    public func messages(_ id: String) throws(KianaStoreError) -> [ConversationMessage] {
        try database.run("reading messages") {
            try database.writer.read { db in
                try ConversationMessage.filter(Column("conversationId") == id).order(Column("id")).fetchAll(db)
            }
        }
    }

    /// Appends messages (one transaction) and touches the conversation.
    public func append(_ messages: [ConversationMessage], to id: String, now: Int64) throws(KianaStoreError) {
        defer { database.keepWritesIfWALLost() }
        try database.run("saving messages") {
            try database.writer.write { db in
                guard var c = try Conversation.fetchOne(db, key: id) else {
                    throw KianaStoreError(.notFound, "no conversation \(id)")
                }
                for var m in messages {
                    m.conversationId = id
                    try m.insert(db)
                }
                c.updated = now
                try c.update(db)
            }
        }
    }

    /// Deletes a conversation and its messages; false if there was none. The deleted rows'
    /// bytes are overwritten in the database file (`secure_delete`) and the write-ahead log is
    /// checkpointed and emptied, so what was asked and answered is not left in free pages.
    @discardableResult
    public func delete(_ id: String) throws(KianaStoreError) -> Bool {
        defer { database.keepWritesIfWALLost() }
        return try database.run("deleting a conversation") {
            try database.writer.writeWithoutTransaction { db in
                try db.execute(sql: "PRAGMA secure_delete = ON")
                defer { try? db.execute(sql: "PRAGMA secure_delete = FAST") }
                var deleted = false
                try db.inTransaction {
                    deleted = try Conversation.deleteOne(db, key: id)
                    return .commit
                }
                // The earlier copies of those pages in the write-ahead log go too (best effort:
                // a reader in another process may hold the log; its next checkpoint clears it).
                if deleted { _ = try? db.execute(sql: "PRAGMA wal_checkpoint(TRUNCATE)") }
                return deleted
            }
        }
    }
}
