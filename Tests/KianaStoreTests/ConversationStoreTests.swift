import Foundation
import GRDB
@testable import KianaStore
import Testing

@Suite struct ConversationStoreTests {
    /// An answer's citations, supporting sentences and abstention come back as stored; a turn
    /// written before they were kept (no `detail`) still reads, without them.
    @Test func answerDetailIsKeptAndOlderTurnsStillRead() throws {
        let db = try KianaDatabase()
        let store = ConversationStore(database: db)
        let c = try store.create(title: "What is the bike lock code?", now: 1)
        let detail = AnswerDetail(
            cited: [.init(number: 1, id: "ab12", title: "Bike", source: "chat"), .init(number: 3, id: "cd34", title: nil, source: nil)],
            support: [.init(number: 1, id: "ab12", text: "The bike lock code is 4711.")], abstained: false)
        try store.append(
            [
                ConversationMessage(conversationId: c.id, role: "user", content: "What is the bike lock code?", created: 2),
                ConversationMessage(conversationId: c.id, role: "assistant", content: "It is 4711 [1].", citations: ["ab12", "cd34"], created: 3, detail: detail),
            ], to: c.id, now: 3)
        try db.writer.write { db in
            try db.execute(
                sql: "INSERT INTO message (conversationId, role, content, citations, created) VALUES (?, 'assistant', 'older', '[\"ef56\"]', 4)",
                arguments: [c.id])
        }
        let turns = try store.messages(c.id)
        #expect(turns.map(\.detail) == [nil, detail, nil])
        #expect(turns.last?.citations == ["ef56"])
    }

    /// A deleted conversation leaves no readable copy of its text in the database file or its
    /// log, also when the tables grew past their first page while it was written (copies SQLite
    /// moves between pages are zeroed, `secure_delete = FAST`), and other conversations stay.
    @Test func aDeletedConversationLeavesNoTextInTheFile() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("kiana-conv-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let db = try KianaDatabase(path: dir + "/kiana.sqlite")
        let store = ConversationStore(database: db)
        let kept = try store.create(title: "kept", now: 1)
        let gone = try store.create(title: "Where is Zanzibar-4471?", now: 1)
        func add(_ c: Conversation, _ text: String, _ i: Int) throws {
            try store.append(
                [
                    ConversationMessage(conversationId: c.id, role: "user", content: text + String(repeating: "q", count: 1200), created: Int64(i)),
                    ConversationMessage(conversationId: c.id, role: "assistant", content: "answer \(i) " + String(repeating: "a", count: 1300), created: Int64(i)),
                ], to: c.id, now: Int64(i))
        }
        // As the hostile review did it over REST: the deleted conversation's first turn, then
        // turns of both interleaved, the log checkpointed now and then as a running node's is.
        try add(gone, "first Zanzibar-4471 ", 0)
        for i in 1...40 {
            try add(kept, "kept turn \(i) ", i)
            try add(gone, "turn \(i) ", i)
            if i % 4 == 0 { try db.writer.writeWithoutTransaction { try $0.checkpoint(.passive) } }
        }
        let marker = Data("Zanzibar-4471".utf8)
        #expect((FileManager.default.contents(atPath: dir + "/kiana.sqlite") ?? Data()).range(of: marker) != nil, "the test wrote nothing to delete")
        #expect(try store.delete(gone.id))
        for file in ["/kiana.sqlite", "/kiana.sqlite-wal"] {
            let bytes = FileManager.default.contents(atPath: dir + file) ?? Data()
            #expect(bytes.range(of: marker) == nil, "\(file) still holds the deleted text")
        }
        #expect(try store.messages(kept.id).count == 80)
        #expect(try store.conversation(gone.id) == nil)
    }
}
