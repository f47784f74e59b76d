import Foundation
import Hummingbird
import HummingbirdTesting
@testable import KianaServer
import KianaStore
import KianaCore
import KianaAI
import KianaNet
import Testing

/// The OpenAPI document (/openapi.json) against the code: every route is documented and every
/// documented route exists; every documented field of a body exists in its Codable type, and
/// every field the type writes or reads is documented.
@Suite struct OpenAPITests {
    static func document() throws -> [String: Any] {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Sources/KianaServer/Web/openapi.json")
        return try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
    }

    static func normalise(_ path: String) -> String {
        let p = path.hasPrefix("/") ? path : "/" + path
        return p.replacingOccurrences(of: #":([A-Za-z]+)"#, with: "{$1}", options: .regularExpression)
    }

    @Test func everyRouteIsDocumentedAndEveryDocumentedRouteExists() throws {
        let router = KianaHTTP.router(config: HTTPConfig(), node: try FakeNode(), control: ControlSurface(token: "t"))
        let served = Set(
            router.routes.map { "\($0.method.rawValue) \(Self.normalise($0.path.description))" }
                .filter { !$0.contains(" /control/") && !$0.hasSuffix(" /") && !$0.contains(" /ui/") })
        let paths = try #require(try Self.document()["paths"] as? [String: [String: Any]])
        let documented = Set(paths.flatMap { path, ops in ops.keys.map { "\($0.uppercased()) \(path)" } })
        #expect(served.count > 25, "\(served)")
        #expect(served.subtracting(documented).isEmpty, "served but not documented: \(served.subtracting(documented).sorted())")
        #expect(documented.subtracting(served).isEmpty, "documented but not served: \(documented.subtracting(served).sorted())")
    }

    /// One full value of each response type (every optional set), by its Swift name.
    static func samples() throws -> [String: any Encodable] {
        let id = DeviceIdentity.generate()
        let store = LedgerStore(database: try KianaDatabase())
        try store.initialize(genesis: Block.genesis(identity: id, time: 1_700_000_000_000, name: "n"), now: 1_700_000_000_000)
        let receipt = try store.write(
            [.put(ItemID.random(), KnowledgeFields(title: "t", text: "x", tags: ["a"], source: "s"))], identity: id,
            now: 1_700_000_000_100)
        var item = ItemDTO(try store.items()[0])
        item.title = "t"
        let entry = EntryDTO(receipt.entries[0], height: 1, position: 0)
        var block = BlockDTO(receipt.block, withEntries: true)
        block.name = "n"
        block.authorities = ["k"]
        var device = DeviceDTO(
            deviceId: "d", publicKey: "k", network: "n", authorities: [], authority: true, dataDirectory: "/d", backend: "embedded",
            model: "m", modelsLoaded: true, items: 1, blocks: 2, entries: 1)
        device.peers = []
        device.listening = 8470
        device.treeSize = 3
        device.treeRoot = "r"
        device.sync = SyncStats()
        device.connections = ConnectionsDTO(http: HTTPConnectionStats(), p2p: .init(open: 0, share: 172, refused: 0), descriptors: .init(inUse: 1, limit: 2, budget: nil))
        let citation = CitationDTO(number: 1, id: "i", title: "t", source: "s")
        let conversation = ConversationDTO(id: "c", title: "t", updated: 1, created: 1)
        let message = MessageDTO(role: "user", content: "q", citations: [], created: 1)
        let hit = SearchHitDTO(id: "i", score: 1, title: "t", text: "x", source: "s", tags: [])
        return [
            "HealthDTO": HealthDTO(deviceId: "d", height: 1, verifiedHeight: 1, problem: "p"),
            "ReadyDTO": ReadyDTO(ready: true, store: true, model: true),
            "ItemDTO": item, "ItemPageDTO": ItemPageDTO(total: 1, items: [item]),
            "CreatedDTO": CreatedDTO(id: "i"), "ForgottenDTO": ForgottenDTO(forgotten: "i"),
            "SearchHitDTO": hit, "SearchResultsDTO": SearchResultsDTO(hits: [hit]),
            "IngestReportDTO": IngestReportDTO(
                filesScanned: 1, filesNew: 1, filesChanged: 0, filesUnchanged: 0, filesRemoved: 0, filesFailed: [],
                chunksAdded: 1, chunksUpdated: 0, chunksRemoved: 0, bytesRead: 1, embedded: 1, changed: true),
            "CitationDTO": citation,
            "AnswerDTO": AnswerDTO(
                answer: "a", conversation: "c", citations: [citation], support: [SupportDTO(number: 1, id: "i", text: "t")], abstained: false,
                finish_reason: "stop"),
            "SupportDTO": SupportDTO(number: 1, id: "i", text: "t"),
            "ConversationDTO": conversation, "ConversationsDTO": ConversationsDTO(conversations: [conversation]),
            "MessageDTO": message, "ConversationMessagesDTO": ConversationMessagesDTO(id: "c", messages: [message]),
            "LedgerStatusDTO": LedgerStatusDTO(height: 1, head: "h", items: 1, blocks: 2, entries: 1, deletedItems: 0, pending: 0),
            "EntryDTO": entry, "BlockDTO": block, "BlockPageDTO": BlockPageDTO(blocks: [block], height: 1),
            "ProofDTO": ProofDTO(
                item: "i", entry: entry, height: 1, position: 0, blockEntryCount: 1, entryRoot: "r", entryPath: [], blockHash: "b",
                treeSize: 2, historyRoot: "h", historyPath: [], verified: true),
            "VerifyDTO": VerifyDTO(valid: true, height: 1, head: "h", blocks: 2, entries: 1, authorities: 1, seconds: 0),
            "DeviceDTO": device,
            "VoiceStatus": VoiceStatus(
                engines: [.init(name: "espeak", kind: "speech", installed: true, languages: ["en"])], defaultEngine: "auto", speed: 1,
                maxSeconds: 120, maxBytes: 1, install: "x"),
            "Transcript": Transcript(text: "t", language: "en", engine: "pocketsphinx", duration: 1, seconds: 0.1),
        ]
    }

    @Test func documentedResponseFieldsAreTheFieldsTheTypesWrite() throws {
        let schemas = try #require((try Self.document()["components"] as? [String: Any])?["schemas"] as? [String: [String: Any]])
        let samples = try Self.samples()
        var checked = 0
        for (name, schema) in schemas {
            let swift = try #require(schema["x-swift-type"] as? String, "\(name) names no Swift type")
            let sample = try #require(samples[swift], "no sample of \(swift)")
            let written = try #require(try JSONSerialization.jsonObject(with: JSONEncoder().encode(sample)) as? [String: Any])
            let documented = Set((schema["properties"] as? [String: Any] ?? [:]).keys)
            #expect(documented == Set(written.keys), "\(name) (\(swift)): documented \(documented.sorted()), written \(written.keys.sorted())")
            checked += 1
        }
        #expect(checked == samples.count, "every response type has a schema")
    }

    /// The request types by name: the fields they read (their stored properties, as decoded from `{}`).
    static func requestFields() throws -> [String: Set<String>] {
        func fields<T: Decodable>(_ t: T.Type) throws -> Set<String> {
            Set(Mirror(reflecting: try JSONDecoder().decode(T.self, from: Data("{}".utf8))).children.compactMap(\.label))
        }
        return [
            "NewItemDTO": try fields(NewItemDTO.self), "ItemChangeDTO": try fields(ItemChangeDTO.self), "AskRequestDTO": try fields(AskRequestDTO.self),
            "IngestRequestDTO": try fields(IngestRequestDTO.self), "ChatCompletionRequest": try fields(ChatCompletionRequest.self),
            "EmbeddingsRequest": try fields(EmbeddingsRequest.self), "OllamaChatRequest": try fields(OllamaChatRequest.self),
            "OllamaGenerateRequest": try fields(OllamaGenerateRequest.self), "OllamaEmbedRequest": try fields(OllamaEmbedRequest.self),
            "OllamaLegacyEmbedRequest": try fields(OllamaLegacyEmbedRequest.self), "OllamaShowRequest": try fields(OllamaShowRequest.self),
            "SpeakRequestDTO": try fields(SpeakRequestDTO.self), "OpenAISpeechDTO": try fields(OpenAISpeechDTO.self),
        ]
    }

    @Test func documentedRequestFieldsAreTheFieldsTheTypesRead() throws {
        let paths = try #require(try Self.document()["paths"] as? [String: [String: [String: Any]]])
        let types = try Self.requestFields()
        var seen = Set<String>()
        for (path, ops) in paths {
            for (method, op) in ops {
                guard let body = op["requestBody"] as? [String: Any],
                    let schema = ((body["content"] as? [String: Any])?["application/json"] as? [String: Any])?["schema"] as? [String: Any]
                else { continue }
                let swift = try #require(schema["x-swift-type"] as? String, "\(method) \(path) names no Swift type")
                let read = try #require(types[swift], "unknown request type \(swift)")
                let documented = Set((schema["properties"] as? [String: Any] ?? [:]).keys)
                #expect(documented == read, "\(method) \(path) (\(swift)): documented \(documented.sorted()), read \(read.sorted())")
                seen.insert(swift)
            }
        }
        #expect(seen == Set(types.keys))
    }
}
