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
}
