import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import KianaCore
import KianaNet
@testable import KianaServer
import KianaStore
import Testing

/// Every route and every error mapping, in process: the real router, middleware and
/// controllers against `FakeNode`, through HummingbirdTesting (no sockets, no models).
@Suite struct RouterTests {
    static let json: HTTPFields = [.contentType: "application/json"]

    /// Runs `body` against a fresh router over a fresh fake node.
    func withApp(
        config: HTTPConfig = HTTPConfig(), control: ControlSurface? = nil, events: EventStreams = EventStreams(),
        _ body: @Sendable (FakeNode, any TestClientProtocol) async throws -> Void
    ) async throws {
        let node = try FakeNode()
        let app = Application(router: KianaHTTP.router(config: config, node: node, control: control, events: events))
        try await app.test(.router) { client in try await body(node, client) }
    }

    static func object(_ r: TestResponse) -> [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(r.body.readableBytesView)) as? [String: Any]) ?? [:]
    }

    static func error(_ r: TestResponse) -> (code: String, message: String) {
        let e = object(r)["error"] as? [String: Any]
        return (e?["code"] as? String ?? "", e?["message"] as? String ?? "")
    }

    static func text(_ r: TestResponse) -> String { String(buffer: r.body) }

    @discardableResult
    static func post(_ c: any TestClientProtocol, _ uri: String, _ body: String, method: HTTPRequest.Method = .post) async throws -> TestResponse {
        try await c.execute(uri: uri, method: method, headers: json, body: ByteBuffer(string: body))
    }

    // MARK: health

    @Test func healthNamesTheDeviceAndHeight() async throws {
        try await withApp { node, c in
            let r = try await c.execute(uri: "/health", method: .get)
            #expect(r.status == .ok)
            let o = Self.object(r)
            #expect(o["status"] as? String == "ok" && o["deviceId"] as? String == node.identity.deviceID.description && o["height"] as? Int == 0)
        }
    }

    /// Monitors probe with HEAD: every GET route answers it with the GET's status and no body.
    @Test(arguments: ["/health", "/ready", "/api/v1/knowledge", "/", "/ui/app.js", "/openapi.json"])
    func headIsAnsweredOnGetRoutes(_ path: String) async throws {
        try await withApp { _, c in
            let get = try await c.execute(uri: path, method: .get)
            let head = try await c.execute(uri: path, method: .head)
            #expect(head.status == get.status && head.status != .notFound, "\(path): \(head.status)")
            #expect(head.body.readableBytes == 0)
        }
    }

    /// A method no route takes on a path that routes do take is 405 with `Allow`, not 404; a
    /// route's own 404 and an unknown path stay 404.
    @Test(arguments: [
        ("/health", HTTPRequest.Method.patch, "GET, HEAD"),
        ("/api/v1/search", .delete, "GET, HEAD"),
        ("/api/v1/knowledge", .delete, "GET, HEAD, POST"),
        ("/api/chat", .get, "POST"),
    ])
    func wrongMethodIs405WithAllow(_ path: String, _ method: HTTPRequest.Method, _ allow: String) async throws {
        try await withApp { _, c in
            let r = try await c.execute(uri: path, method: method)
            #expect(r.status == .methodNotAllowed && r.headers[.allow] == allow, "\(path): \(r.status) \(r.headers[.allow] ?? "-")")
            #expect(Self.text(r).contains("\(method.rawValue) is not allowed on \(path)"), "\(Self.text(r))")
        }
    }

    /// KI_ana's own bodies refuse fields they do not take, naming the one meant where it is a
    /// plural slip; the compatible APIs are not strict.
    @Test func unknownFieldsAreRefused() async throws {
        try await withApp { _, c in
            var r = try await Self.post(c, "/api/v1/knowledge", #"{"text":"The saw is in the shed.","tag":["home"]}"#)
            #expect(r.status == .badRequest && Self.error(r).message.hasPrefix(#"unknown field "tag" (did you mean "tags"?); this body takes source, tags, text, title"#), "\(Self.text(r))")
            r = try await Self.post(c, "/api/v1/ask", #"{"question":"Where?","model":"x"}"#)
            #expect(r.status == .badRequest && Self.error(r).message.contains(#"unknown field "model""#), "\(Self.text(r))")
            r = try await Self.post(c, "/api/v1/knowledge", #"{"text":"The saw is in the shed.","tags":["home"]}"#)
            #expect(r.status == .created, "\(Self.text(r))")
        }
    }

    @Test func deletingAConversation() async throws {
        try await withApp { _, c in
            #expect(try await c.execute(uri: "/api/v1/conversations/c-1", method: .delete).status == .noContent)
            let r = try await c.execute(uri: "/api/v1/conversations/c-9", method: .delete)
            #expect(r.status == .notFound && Self.error(r).message == "no conversation c-9")
        }
    }

    @Test func notFoundStaysNotFound() async throws {
        try await withApp { _, c in
            var r = try await c.execute(uri: "/api/v1/knowledge/abcd", method: .get)
            #expect(r.status == .notFound && Self.error(r).message.contains("abcd"))
            r = try await c.execute(uri: "/api/v1/nothing-here", method: .delete)
            #expect(r.status == .notFound && r.headers[.allow] == nil)
        }
        // The CLI's control surface (its own token) is not described to anyone.
        try await withApp(control: ControlSurface(token: "ctl")) { _, c in
            let r = try await c.execute(uri: "/control/peers", method: .delete)
            #expect(r.status == .notFound && r.headers[.allow] == nil, "\(r.status)")
        }
        // Without the token nothing is told about routes.
        try await withApp(config: HTTPConfig(token: "secret")) { _, c in
            let r = try await c.execute(uri: "/api/v1/search", method: .delete)
            #expect(r.status == .unauthorized && r.headers[.allow] == nil)
        }
    }

    @Test func readyIs503UntilModelsLoad() async throws {
        try await withApp { node, c in
            var r = try await c.execute(uri: "/ready", method: .get)
            #expect(r.status == .serviceUnavailable && Self.object(r)["model"] as? Bool == false)
            node.set { $0.modelsLoaded = true }
            r = try await c.execute(uri: "/ready", method: .get)
            #expect(r.status == .ok && Self.object(r)["ready"] as? Bool == true)
        }
    }

    @Test func metricsCountRequestsByRoutePattern() async throws {
        try await withApp { _, c in
            try await c.execute(uri: "/api/v1/knowledge/abcd", method: .get)
            let r = try await c.execute(uri: "/metrics", method: .get)
            let text = Self.text(r)
            #expect(r.status == .ok && text.contains("kiana_tokens_generated_total 7") && text.contains("kiana_ledger_height 0"))
            #expect(text.contains(#"kiana_http_requests_total{method="GET",route="/api/v1/knowledge/{id}",status="404"} 1"#), "\(text)")
        }
    }

    // MARK: knowledge

    @Test func teachListReadEditForget() async throws {
        try await withApp { _, c in
            var r = try await Self.post(c, "/api/v1/knowledge", #"{"text":"The bike lock code is 4711.","title":"Bike","tags":["home"],"source":"notes.md"}"#)
            #expect(r.status == .created)
            let id = try #require(Self.object(r)["id"] as? String)
            r = try await c.execute(uri: "/api/v1/knowledge?limit=5", method: .get)
            let page = Self.object(r)
            #expect(page["total"] as? Int == 1 && (page["items"] as? [[String: Any]])?.first?["id"] as? String == id)
            r = try await c.execute(uri: "/api/v1/knowledge/" + id.prefix(8), method: .get)
            let item = Self.object(r)
            #expect(
                item["text"] as? String == "The bike lock code is 4711." && item["tags"] as? [String] == ["home"] && item["source"] as? String == "notes.md")
            #expect(item.keys.contains("created") && item["entry"] is String)
            r = try await Self.post(c, "/api/v1/knowledge/" + id, #"{"title":"Bicycle"}"#, method: .put)
            #expect(r.status == .ok && Self.object(r)["title"] as? String == "Bicycle" && Self.object(r)["text"] as? String == "The bike lock code is 4711.")
            r = try await c.execute(uri: "/api/v1/knowledge/" + id, method: .delete)
            #expect(r.status == .ok && Self.object(r)["forgotten"] as? String == id)
            r = try await c.execute(uri: "/api/v1/knowledge", method: .get)
            #expect(Self.object(r)["total"] as? Int == 0)
        }
    }

    @Test(
        "Bad knowledge requests: each a 4xx with its code and a message naming the problem",
        arguments: [
            (#"{"title":"no text"}"#, 400, "invalid-input", "text is required"),
            ("not json", 400, "invalid-input", "not a JSON object"),
            (#"["text"]"#, 400, "invalid-input", "not a JSON object"),
            (#"{"text":"x","tags":"home"}"#, 400, "invalid-input", "tags must be an array"),
            (#"{"text":"x","tags":[""]}"#, 400, "invalid-input", "tag"),
            (#"{"text":5}"#, 400, "invalid-input", "text must be a string"),
            (#"{"text":"x","source":"\#(String(repeating: "s", count: 5000))"}"#, 413, "too-large", "source is longer"),
            (#"{"text":"x","title":"a\u0007b"}"#, 400, "invalid-input", "control characters"),
            (#"{"text":"a\u0000b"}"#, 400, "invalid-input", "NUL"),
            // Where Foundation says only "not valid JSON", the strict check says where and why.
            (#"{"text":"a\ud800b"}"#, 400, "invalid-input", "line 1, column 11, a lone UTF-16 high surrogate"),
            ("null", 400, "invalid-input", "not a JSON object (it is null)"),
            (#"{"text":"x","tags":{"a":1}}"#, 400, "invalid-input", "tags must be an array"),
        ])
    func badKnowledge(_ body: String, _ status: Int, _ code: String, _ words: String) async throws {
        try await withApp { _, c in
            let r = try await Self.post(c, "/api/v1/knowledge", body)
            #expect(r.status.code == status, "\(Self.text(r))")
            #expect(Self.error(r).code == code && Self.error(r).message.contains(words), "\(Self.text(r))")
        }
    }

    @Test func invalidUTF8AndOversizedBodies() async throws {
        try await withApp { _, c in
            var r = try await c.execute(
                uri: "/api/v1/knowledge", method: .post, headers: Self.json,
                body: ByteBuffer(bytes: Array(#"{"text":"caf"#.utf8) + [0xC3, 0x28] + Array(#""}"#.utf8)))
            #expect(r.status == .badRequest && Self.error(r).message.contains("UTF-8"))
            r = try await Self.post(c, "/api/v1/knowledge", #"{"text":""# + String(repeating: "a", count: 1_100_000) + #""}"#)
            #expect(r.status == .contentTooLarge && Self.error(r).code == "too-large")
            r = try await c.execute(uri: "/api/v1/knowledge", method: .post, headers: [.contentType: "text/plain"], body: ByteBuffer(string: "text=x"))
            #expect(r.status == .unsupportedMediaType && Self.error(r).code == "unsupported-media-type")
        }
    }

    @Test func listLimitsAreChecked() async throws {
        try await withApp { _, c in
            for q in ["limit=0", "limit=1001", "offset=-1", "limit=x"] {
                let r = try await c.execute(uri: "/api/v1/knowledge?" + q, method: .get)
                #expect(r.status == .badRequest, "\(q)")
            }
        }
    }

    @Test func searchPassesTheQueryAndChecksIt() async throws {
        try await withApp { node, c in
            try await Self.post(c, "/api/v1/knowledge", #"{"text":"The roses need water on Sunday.","tags":["garden"]}"#)
            var r = try await c.execute(uri: "/api/v1/search?q=roses&k=3&mode=keyword&tag=garden", method: .get)
            #expect(r.status == .ok)
            let hits = Self.object(r)["hits"] as? [[String: Any]]
            #expect(hits?.count == 1 && hits?.first?["tags"] as? [String] == ["garden"] && hits?.first?.keys.contains("title") == true)
            #expect(node.calls.withLock { $0 }.contains("search roses k=3 mode=keyword tag=garden source=-"))
            r = try await c.execute(uri: "/api/v1/search?q=%20", method: .get)
            #expect(r.status == .badRequest && Self.error(r).message == "q is required")
            r = try await c.execute(uri: "/api/v1/search?q=x&k=101", method: .get)
            #expect(r.status == .badRequest)
        }
    }

    // MARK: ingest

    @Test func ingestStreamsProgressThenTheReport() async throws {
        try await withApp { node, c in
            let r = try await Self.post(c, "/api/v1/ingest", ##"{"files":[{"name":"a.md","text":"# A"},{"name":"b.txt","base64":"aGk="}],"tags":["t"]}"##)
            let text = Self.text(r)
            #expect(r.status == .ok && r.headers[.contentType] == "text/event-stream")
            #expect(text.contains("event: progress") && text.contains("event: done") && text.contains(#""chunksAdded":2"#), "\(text)")
            #expect(node.calls.withLock { $0 }.contains("ingest a.md,b.txt tags=t"))
        }
    }

    @Test(
        "Bad ingest requests",
        arguments: [
            (#"{"paths":["/etc"]}"#, 400, "paths are not taken"),
            (#"{"files":[]}"#, 400, "files must be"),
            (#"{"files":[{"text":"x"}]}"#, 400, "every file needs a name"),
            (#"{"files":[{"name":"../x.md","text":"x"}]}"#, 400, "give a file name"),
            (#"{"files":[{"name":"a.md"}]}"#, 400, "as text or as base64"),
            (#"{"files":[{"name":"a.md","base64":"@@@"}]}"#, 400, "as text or as base64"),
        ])
    func badIngest(_ body: String, _ status: Int, _ words: String) async throws {
        try await withApp { _, c in
            let r = try await Self.post(c, "/api/v1/ingest", body)
            #expect(r.status.code == status && Self.error(r).message.contains(words), "\(Self.text(r))")
        }
    }

    @Test func secondIngestIsAConflictBeforeTheBodyIsRead() async throws {
        try await withApp { node, c in
            node.set { $0.ingesting = true }
            let r = try await Self.post(c, "/api/v1/ingest", #"{"files":[{"name":"a.md","text":"x"}],"stream":false}"#)
            #expect(r.status == .conflict && Self.error(r).code == "conflict")
        }
    }

    // MARK: ask and conversations

    @Test func askStreamsTokensThenTheAnswer() async throws {
        try await withApp { _, c in
            var r = try await Self.post(c, "/api/v1/ask", #"{"question":"Where is the key?"}"#)
            let text = Self.text(r)
            #expect(text.components(separatedBy: "event: token").count == 3, "\(text)")
            #expect(text.contains("event: done") && text.contains(#""conversation":"c-1""#) && text.contains(#""finish_reason":"stop""#))
            r = try await Self.post(c, "/api/v1/ask", #"{"question":"Where?","stream":false,"conversation":"c-1"}"#)
            let o = Self.object(r)
            #expect(o["answer"] as? String == "The spare key is under the blue pot." && o["conversation"] as? String == "c-1")
            #expect((o["citations"] as? [[String: Any]])?.first?["source"] as? String == "notes.md")
        }
    }

    @Test func askChecksItsInputAndTheQueue() async throws {
        try await withApp { node, c in
            var r = try await Self.post(c, "/api/v1/ask", #"{"question":"  "}"#)
            #expect(r.status == .badRequest && Self.error(r).message == "question is required")
            r = try await Self.post(c, "/api/v1/ask", #"{"question":"x","max_tokens":0}"#)
            #expect(r.status == .badRequest && Self.error(r).message.contains("max_tokens"))
            r = try await Self.post(c, "/api/v1/ask", #"{"question":"x","temperature":-1}"#)
            #expect(r.status == .badRequest && Self.error(r).message.contains("temperature"))
            // An unknown conversation is a 404 before any stream starts (not an error event in a 200).
            r = try await Self.post(c, "/api/v1/ask", #"{"question":"x","conversation":"c-9"}"#)
            #expect(r.status == .notFound && Self.error(r).message == "no conversation c-9", "\(Self.text(r))")
            node.set { $0.acceptsGeneration = false }
            r = try await Self.post(c, "/api/v1/ask", #"{"question":"x"}"#)
            #expect(r.status == .serviceUnavailable && Self.error(r).code == "busy")
        }
    }

    @Test func conversations() async throws {
        try await withApp { _, c in
            var r = try await c.execute(uri: "/api/v1/conversations", method: .get)
            #expect((Self.object(r)["conversations"] as? [[String: Any]])?.first?["title"] as? String == "Keys")
            r = try await c.execute(uri: "/api/v1/conversations/c-1", method: .get)
            #expect((Self.object(r)["messages"] as? [[String: Any]])?.count == 1)
            r = try await c.execute(uri: "/api/v1/conversations/nope", method: .get)
            #expect(r.status == .notFound && Self.error(r).code == "not-found")
        }
    }

    // MARK: ledger and device

    @Test func ledgerStatusBlocksEntriesProofVerify() async throws {
        try await withApp { _, c in
            try await Self.post(c, "/api/v1/knowledge", #"{"text":"one"}"#)
            try await Self.post(c, "/api/v1/knowledge", #"{"text":"two"}"#)
            var r = try await c.execute(uri: "/api/v1/ledger", method: .get)
            #expect(Self.object(r)["height"] as? Int == 2 && Self.object(r)["items"] as? Int == 2)
            r = try await c.execute(uri: "/api/v1/ledger/blocks?limit=2", method: .get)
            let blocks = Self.object(r)["blocks"] as? [[String: Any]] ?? []
            #expect(blocks.map { $0["height"] as? Int } == [2, 1])
            r = try await c.execute(uri: "/api/v1/ledger/blocks?before=1", method: .get)
            #expect((Self.object(r)["blocks"] as? [[String: Any]])?.map { $0["height"] as? Int } == [0])
            r = try await c.execute(uri: "/api/v1/ledger/blocks/1", method: .get)
            let entries = Self.object(r)["entries"] as? [[String: Any]] ?? []
            let entry = try #require(entries.first?["id"] as? String)
            #expect((entries.first?["fields"] as? [String: Any])?["text"] as? String == "one")
            r = try await c.execute(uri: "/api/v1/ledger/entries/" + entry.prefix(10), method: .get)
            #expect(Self.object(r)["height"] as? Int == 1 && Self.object(r)["position"] as? Int == 0)
            r = try await c.execute(uri: "/api/v1/ledger/proof/" + entry, method: .get)
            #expect(Self.object(r)["verified"] as? Bool == true)
            r = try await c.execute(uri: "/api/v1/ledger/verify", method: .post)
            #expect(Self.object(r)["valid"] as? Bool == true && Self.object(r)["blocks"] as? Int == 3)
            for (uri, status) in [
                ("/api/v1/ledger/blocks/x", 400), ("/api/v1/ledger/blocks/99", 404), ("/api/v1/ledger/blocks/18446744073709551615", 404),
                ("/api/v1/ledger/blocks?before=99999999999", 400), ("/api/v1/ledger/entries/zz", 400), ("/api/v1/ledger/entries/0000", 404),
            ] {
                r = try await c.execute(uri: uri, method: .get)
                #expect(r.status.code == status, "\(uri): \(Self.text(r))")
            }
        }
    }

    @Test func deviceDescribesThisNode() async throws {
        try await withApp { node, c in
            let r = try await c.execute(uri: "/api/v1/device", method: .get)
            #expect(Self.object(r)["deviceId"] as? String == node.identity.deviceID.description && Self.object(r)["authority"] as? Bool == true)
        }
    }

    @Test func eventStreamsAreLimitedAndTheirIDsChecked() async throws {
        try await withApp(events: EventStreams(limit: 0)) { _, c in
            let r = try await c.execute(uri: "/api/v1/events", method: .get)
            #expect(r.status == .serviceUnavailable)
        }
        try await withApp { _, c in
            let r = try await c.execute(uri: "/api/v1/events?since=-4", method: .get)
            #expect(r.status == .badRequest && Self.error(r).message.contains("since must be a block height"), "\(Self.text(r))")
            let h = try await c.execute(uri: "/api/v1/events", method: .get, headers: [HTTPField.Name("Last-Event-ID")!: "x"])
            #expect(h.status == .badRequest && Self.error(h).message.contains("Last-Event-ID must be a block height"), "\(Self.text(h))")
        }
    }

    // MARK: compatible endpoints

    @Test func openAIModelsChatAndEmbeddings() async throws {
        try await withApp { node, c in
            var r = try await c.execute(uri: "/v1/models", method: .get)
            #expect((Self.object(r)["data"] as? [[String: Any]])?.map { $0["id"] as? String } == ["kiana", "smollm2-135m-instruct"])
            r = try await Self.post(
                c, "/v1/chat/completions",
                #"{"model":"kiana","messages":[{"role":"system","content":"be brief"},{"role":"user","content":[{"type":"text","text":"Where is the key?"}]}],"max_tokens":20}"#
            )
            let o = Self.object(r)
            #expect(o["object"] as? String == "chat.completion" && (o["usage"] as? [String: Any])?["total_tokens"] as? Int == 14)
            #expect(((o["choices"] as? [[String: Any]])?.first?["message"] as? [String: Any])?["content"] as? String == "The spare key is under the blue pot.")
            #expect(((o["kiana"] as? [String: Any])?["citations"] as? [[String: Any]])?.count == 1)
            #expect(node.calls.withLock { $0 }.contains("chat grounded=true max=20 t=0.2 last=Where is the key?"))
            r = try await Self.post(
                c, "/v1/chat/completions",
                #"{"model":"smollm2-135m-instruct","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true}}"#)
            let text = Self.text(r)
            #expect(
                text.hasPrefix("data: ") && text.hasSuffix("data: [DONE]\n\n") && text.contains(#""finish_reason":null"#) && text.contains(#""usage""#),
                "\(text)")
            #expect(!text.contains("kiana"), "plain chat has no citations")
            r = try await Self.post(c, "/v1/embeddings", #"{"input":["ab","abc"]}"#)
            let data = Self.object(r)["data"] as? [[String: Any]]
            #expect(data?.count == 2 && (data?[1]["embedding"] as? [Double])?.first == 3)
            r = try await Self.post(c, "/v1/embeddings", #"{"input":"ab","encoding_format":"base64"}"#)
            #expect((Self.object(r)["data"] as? [[String: Any]])?.first?["embedding"] is String)
        }
    }

    @Test(
        "Bad compatible requests",
        arguments: [
            ("/v1/chat/completions", "not json", "not a JSON object"),
            ("/v1/chat/completions", #"{"model":"kiana"}"#, "messages must be"),
            ("/v1/chat/completions", #"{"messages":[{"role":"user","content":"hi"}]}"#, "model is required"),
            ("/v1/chat/completions", #"{"model":"kiana","messages":[{"role":"robot","content":"hi"}]}"#, "unsupported role"),
            ("/v1/chat/completions", #"{"model":"kiana","messages":[{"content":"hi"}]}"#, "every message needs a role"),
            ("/v1/chat/completions", #"{"model":"kiana","messages":[{"role":"user","content":5}]}"#, "message content must be text"),
            ("/v1/chat/completions", #"{"model":"kiana","messages":[{"role":"assistant","content":"hi"}]}"#, "the last message must be the user's"),
            ("/v1/chat/completions", #"{"model":"kiana","messages":[{"role":"user","content":"hi"}],"temperature":-1}"#, "temperature"),
            ("/v1/chat/completions", #"{"model":"kiana","messages":[{"role":"user","content":"hi"}],"max_tokens":0}"#, "max_tokens"),
            ("/api/generate", #"{"model":"kiana","prompt":"hi","raw":true}"#, "raw prompts"),
            ("/api/chat", #"{"model":"kiana","messages":[{"role":"user","content":"hi"}],"options":{"stop":["s0","s1","s2","s3","s4","s5","s6","s7","s8","s9","s10","s11","s12","s13","s14","s15","s16","s17","s18","s19","s20","s21","s22","s23","s24","s25","s26","s27","s28","s29","s30","s31","s32","s33","s34","s35","s36","s37","s38","s39","s40","s41","s42","s43","s44","s45","s46","s47","s48","s49","s50","s51","s52","s53","s54","s55","s56","s57","s58","s59","s60","s61","s62","s63","s64"]}}"#, "at most 64"),
            ("/v1/chat/completions", #"{"model":"kiana","messages":[{"role":"user","content":"hi"}],"stop":["a","b","c","d","e"]}"#, "at most 4"),
            ("/v1/chat/completions", #"{"model":"kiana","messages":[{"role":"user","content":"hi"}],"stop":7}"#, "stop: must be a string or an array of strings"),
            ("/api/chat", #"{"model":"kiana","messages":[{"role":"user","content":"hi"}],"options":{"num_predict":-3}}"#, "num_predict"),
            ("/v1/embeddings", #"{"model":"m","input":[]}"#, "input must be"),
            ("/api/embed", #"{"input":7}"#, "input: must be a string or an array of strings"),
            ("/api/chat", #"{"model":"kiana","messages":[{"role":"user","content":"hi"}],"options":{"top_k":1e30}}"#, "top_k"),
            ("/api/generate", #"{"model":"kiana","prompt":"hi","options":{"top_k":-1e19}}"#, "top_k"),
            ("/v1/chat/completions", #"{"model":"kiana","messages":[{"role":"user","content":"hi"}],"max_tokens":1e30}"#, "out of range"),
        ])
    func badCompat(_ path: String, _ body: String, _ words: String) async throws {
        try await checkBadCompat(path, body, words)
    }

    /// A load request (no prompt) only loads, as Ollama's does; what clients commonly send along
    /// without meaning it (empty tools, stop null, n 1, a text response format) is taken.
    @Test func ollamaLoadAndHarmlessFieldsAreTaken() async throws {
        try await withApp { _, c in
            let load = try await Self.post(c, "/api/generate", #"{"model":"kiana"}"#)
            #expect(load.status == .ok && (Self.object(load)["done_reason"] as? String) == "load", "\(Self.text(load))")
            let chat = try await Self.post(
                c, "/v1/chat/completions",
                #"{"model":"kiana","messages":[{"role":"user","content":"hi"}],"tools":[],"tool_choice":"auto","stop":null,"n":1,"response_format":{"type":"text"},"logprobs":false}"#)
            #expect(chat.status == .ok, "\(Self.text(chat))")
            let ollama = try await Self.post(
                c, "/api/generate", #"{"model":"kiana","prompt":"hi","stream":false,"format":"","images":[],"raw":false,"options":{"stop":[]}}"#)
            #expect(ollama.status == .ok, "\(Self.text(ollama))")
        }
    }

    /// Ollama clients send num_predict -1 (no limit) or -2 (fill the context): both are taken.
    @Test(arguments: [-1, -2])
    func ollamaUnlimitedNumPredictIsTaken(_ n: Int) async throws {
        try await withApp { _, c in
            let r = try await Self.post(c, "/api/generate", #"{"model":"kiana","prompt":"hi","stream":false,"options":{"num_predict":\#(n)}}"#)
            #expect(r.status == .ok, "\(Self.text(r))")
        }
    }

    func checkBadCompat(_ path: String, _ body: String, _ words: String) async throws {
        try await withApp { _, c in
            let r = try await Self.post(c, path, body)
            #expect(r.status == .badRequest, "\(path) \(body): \(Self.text(r))")
            // Ollama's paths answer as Ollama does: the message is the error.
            let message = path.hasPrefix("/api/") ? Self.object(r)["error"] as? String ?? "" : Self.error(r).message
            #expect(message.contains(words), "\(path) \(body): \(Self.text(r))")
        }
    }

    @Test func ollamaTagsChatGenerateEmbed() async throws {
        try await withApp { _, c in
            var r = try await c.execute(uri: "/api/tags", method: .get)
            #expect((Self.object(r)["models"] as? [[String: Any]])?.first?["name"] as? String == "kiana")
            r = try await Self.post(c, "/api/chat", #"{"model":"kiana","messages":[{"role":"user","content":"Where?"}]}"#)
            let lines = Self.text(r).split(separator: "\n")
            #expect(r.headers[.contentType] == "application/x-ndjson" && lines.count == 3)
            let last = (try? JSONSerialization.jsonObject(with: Data(lines.last!.utf8)) as? [String: Any]) ?? [:]
            #expect(last["done"] as? Bool == true && last["eval_count"] as? Int == 2 && last["kiana"] != nil)
            r = try await Self.post(
                c, "/api/generate", #"{"model":"smollm2-135m-instruct","prompt":"Say hi","system":"short","stream":false,"options":{"temperature":0,"seed":3}}"#
            )
            #expect(Self.object(r)["response"] as? String == "The spare key is under the blue pot." && Self.object(r)["done"] as? Bool == true)
            r = try await Self.post(c, "/api/embed", #"{"input":"abcd"}"#)
            #expect((Self.object(r)["embeddings"] as? [[Double]])?.first?.first == 4 && Self.object(r)["prompt_eval_count"] as? Int == 2)
        }
    }

    // MARK: control surface and tokens

    @Test func controlSurfaceNeedsItsToken() async throws {
        try await withApp(control: ControlSurface(token: "s3cret")) { node, c in
            var r = try await c.execute(uri: "/control/peers", method: .get)
            #expect(r.status == .unauthorized)
            let t: HTTPFields = [ControlSurface.header: "s3cret", .contentType: "application/json"]
            r = try await c.execute(uri: "/control/peers", method: .get, headers: t)
            #expect(r.status == .ok && Self.object(r)["peers"] is [Any])
            r = try await c.execute(uri: "/control/peers", method: .post, headers: t, body: ByteBuffer(string: #"{"address":"nohost"}"#))
            #expect(r.status == .badRequest && Self.error(r).message.contains("HOST:PORT"))
            r = try await c.execute(uri: "/control/peers", method: .post, headers: t, body: ByteBuffer(string: #"{"address":"10.0.0.5:8470"}"#))
            #expect(Self.object(r)["added"] as? Bool == true && node.calls.withLock { $0 }.contains("addPeer 10.0.0.5:8470"))
            // The CLI's "I changed the ledger": the node announces its head at once.
            #expect(try await c.execute(uri: "/control/changed", method: .post).status == .unauthorized)
            r = try await c.execute(uri: "/control/changed", method: .post, headers: t)
            #expect(r.status == .noContent && node.calls.withLock { $0 }.contains("ledgerChangedElsewhere"))
            r = try await c.execute(uri: "/control/pair/open", method: .post, headers: t, body: ByteBuffer(string: #"{"seconds":0}"#))
            #expect(r.status == .badRequest)
            r = try await c.execute(uri: "/control/pair/open", method: .post, headers: t, body: ByteBuffer(string: #"{"seconds":30}"#))
            #expect(Self.object(r)["port"] as? Int == 8470)
            r = try await c.execute(uri: "/control/pair/pending", method: .get, headers: t)
            #expect(Self.object(r)["open"] as? Bool == true)
            r = try await c.execute(uri: "/control/pair/confirm", method: .post, headers: t, body: ByteBuffer(string: #"{"code":"123456"}"#))
            #expect(r.status == .conflict && Self.error(r).code == "pairing")
            r = try await c.execute(uri: "/control/pair/close", method: .post, headers: t)
            #expect(r.status == .noContent)
        }
    }

    @Test func bearerTokenGuardsTheAPIButNotTheUIFiles() async throws {
        try await withApp(config: HTTPConfig(host: "127.0.0.1", port: 0, token: "tok")) { _, c in
            let none = try await c.execute(uri: "/api/v1/knowledge", method: .get)
            let right = try await c.execute(uri: "/api/v1/knowledge", method: .get, headers: [.authorization: "Bearer tok"])
            let wrong = try await c.execute(uri: "/api/v1/knowledge", method: .get, headers: [.authorization: "Bearer tok2"])
            let page = try await c.execute(uri: "/", method: .get)
            // The control surface's own token check is the only one there, and no path climbs out of it.
            let climb = try await c.execute(uri: "/control/../api/v1/knowledge", method: .get)
            #expect(climb.status != .ok, "\(Self.text(climb))")
            #expect(none.status == .unauthorized && right.status == .ok && wrong.status == .unauthorized && page.status == .ok)
            // Missing and wrong are told apart; the scheme is case-insensitive (RFC 9110).
            #expect(Self.error(none).message.contains("required") && Self.error(wrong).message.contains("wrong"), "\(Self.text(none)) \(Self.text(wrong))")
            for ok in ["bearer tok", "BEARER tok", "Bearer  tok"] {
                #expect(try await c.execute(uri: "/api/v1/knowledge", method: .get, headers: [.authorization: ok]).status == .ok, "\(ok)")
            }
            for bad in ["Bearertok", "Basic tok", "Bearer", "Bearer ", "bearer to", "Bearer tok2"] {
                #expect(try await c.execute(uri: "/api/v1/knowledge", method: .get, headers: [.authorization: bad]).status == .unauthorized, "\(bad.debugDescription)")
            }
        }
    }

    @Test("Bearer matching: scheme in any case, the token exactly", arguments: [
        ("Bearer abc", true), ("bearer abc", true), ("bEaReR   abc", true), ("Bearer abcd", false), ("Bearer ab", false),
        ("Bearer\tabc", false), ("Token abc", false), ("", false), ("Bearer", false), ("Bearer abc ", false),
    ])
    func bearerMatching(_ header: String, _ ok: Bool) {
        #expect(BearerTokenMiddleware<BasicRequestContext>.matches(header, token: Array("abc".utf8)) == ok)
    }

    @Test func hostNamesAreParsedStrictly() {
        for ok in ["localhost:8000", "127.0.0.1", "127.3.4.5:1", "[::1]:8000"] {
            #expect(BrowserGuardMiddleware<BasicRequestContext>.isLoopbackAuthority(ok), "\(ok)")
        }
        for bad in ["127.0.0.1.evil.example", "evil.example", "", "[::2]:80", "localhost.evil:80"] {
            #expect(!BrowserGuardMiddleware<BasicRequestContext>.isLoopbackAuthority(bad), "\(bad)")
        }
    }

    // MARK: the one error mapping

    @Test("Every module error code becomes its HTTP status and its kebab-case code", arguments: ErrorCode.allCases)
    func errorMapping(_ code: ErrorCode) async throws {
        try await withApp { node, c in
            node.set { $0.failItem = KianaStoreError(code, "failed with \(code)") }
            let r = try await c.execute(uri: "/api/v1/knowledge/abcd", method: .get)
            #expect(r.status == code.httpStatus)
            #expect(Self.error(r).code == code.rawValue)
            #expect(Self.error(r).message == "failed with \(code)")
            #expect((Self.object(r)["error"] as? [String: Any])?["type"] as? String == (r.status.code >= 500 ? "server_error" : "invalid_request_error"))
        }
    }

    @Test func unknownErrorsAreA500WithoutDetail() async throws {
        struct Secret: Error {}
        try await withApp { node, c in
            node.set { $0.failItem = CancellationError() }
            let r = try await c.execute(uri: "/api/v1/knowledge/abcd", method: .get)
            #expect(r.status == .internalServerError && Self.error(r) == ("internal", "internal error"))
        }
    }
}
