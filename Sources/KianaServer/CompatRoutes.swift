import Foundation
import HTTPTypes
import Hummingbird
import KianaAI
import NIOCore

/// OpenAI-compatible (/v1/…) and Ollama-compatible (/api/…) endpoints over the node's
/// assistant, so existing tools and the official clients work with a base URL only.
/// The model "kiana" answers from the knowledge base (grounded, with citations in a `kiana`
/// field); any other listed model name is plain chat with the node's language model.
struct CompatRoutes: Sendable {
    let assistant: any AssistantAPI
    /// Request bodies larger than this are refused with 413.
    static let maxBody = 1 << 20

    func add<Context: RequestContext>(to router: Router<Context>) {
        let a = assistant
        router.get("/v1/models") { _, _ -> Response in
            let names = try await a.modelNames()
            return Self.json(["object": "list", "data": names.map { ["id": $0, "object": "model", "created": 0, "owned_by": "kiana"] }])
        }
        router.post("/v1/chat/completions") { req, ctx -> Response in
            try Self.admit(a.acceptsGeneration())
            let o = try await Self.body(req, ctx)
            let (messages, model) = try Self.messages(o)
            let sampling = try Self.sampling(o, temperature: "temperature", topP: "top_p", seed: "seed")
            let maxTokens = try Self.positive(o["max_completion_tokens"] ?? o["max_tokens"], "max_tokens")
            let id = "chatcmpl-" + UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "")
            let created = Int(Date().timeIntervalSince1970)
            let grounded = model == groundedModelName
            if o["stream"] as? Bool == true {
                let usage = (o["stream_options"] as? [String: Any])?["include_usage"] as? Bool == true
                return Self.stream(contentType: "text/event-stream") { emit in
                    let head = Self.chunk(id: id, created: created, model: model, delta: ["role": "assistant", "content": ""], finish: nil)
                    guard emit(head) else { return }
                    let r = try await a.chat(messages, grounded: grounded, maxTokens: maxTokens, sampling: sampling) { piece in
                        emit(Self.chunk(id: id, created: created, model: model, delta: ["content": piece], finish: nil))
                    }
                    _ = emit(Self.chunk(id: id, created: created, model: model, delta: [:], finish: Self.finishReason(r.stopReason),
                                        extra: grounded ? ["kiana": ["citations": Self.citations(r)]] : [:]))
                    if usage {
                        _ = emit("data: " + Self.text(["id": id, "object": "chat.completion.chunk", "created": created, "model": model, "choices": [] as [Any],
                                                       "usage": Self.usage(r)]) + "\n\n")
                    }
                    _ = emit("data: [DONE]\n\n")
                }
            }
            let r = try await a.chat(messages, grounded: grounded, maxTokens: maxTokens, sampling: sampling) { _ in true }
            var out: [String: Any] = ["id": id, "object": "chat.completion", "created": created, "model": model,
                                      "choices": [["index": 0, "message": ["role": "assistant", "content": r.text], "finish_reason": Self.finishReason(r.stopReason)]],
                                      "usage": Self.usage(r)]
            if grounded { out["kiana"] = ["citations": Self.citations(r)] }
            return Self.json(out)
        }
        router.post("/v1/embeddings") { req, ctx -> Response in
            let o = try await Self.body(req, ctx)
            let texts = try Self.inputs(o["input"])
            let model = o["model"] as? String ?? "all-minilm-l6-v2"
            let base64 = (o["encoding_format"] as? String) == "base64"
            let (vectors, tokens) = try await a.embed(texts)
            let data: [[String: Any]] = vectors.enumerated().map { i, v in
                let e: Any = base64 ? Data(v.flatMap { withUnsafeBytes(of: $0.bitPattern.littleEndian, Array.init) }).base64EncodedString() : v.map(Double.init)
                return ["object": "embedding", "index": i, "embedding": e]
            }
            return Self.json(["object": "list", "data": data, "model": model, "usage": ["prompt_tokens": tokens, "total_tokens": tokens]])
        }

        // Ollama
        router.get("/api/tags") { _, _ -> Response in
            let names = try await a.modelNames()
            let now = Self.isoNow()
            return Self.json(["models": names.map { ["name": $0, "model": $0, "modified_at": now, "size": 0, "digest": "",
                                                     "details": ["format": "gguf", "family": "kiana"]] }])
        }
        router.post("/api/chat") { req, ctx -> Response in
            try Self.admit(a.acceptsGeneration())
            let o = try await Self.body(req, ctx)
            let (messages, model) = try Self.messages(o)
            return try await Self.ollama(a, o, messages: messages, model: model, key: "message")
        }
        router.post("/api/generate") { req, ctx -> Response in
            try Self.admit(a.acceptsGeneration())
            let o = try await Self.body(req, ctx)
            guard let model = o["model"] as? String, !model.isEmpty else { throw HTTPError(.badRequest, message: "model is required") }
            guard let prompt = o["prompt"] as? String else { throw HTTPError(.badRequest, message: "prompt is required") }
            var messages: [ChatMessage] = []
            if let system = o["system"] as? String, !system.isEmpty { messages.append(ChatMessage(.system, system)) }
            messages.append(ChatMessage(.user, prompt))
            return try await Self.ollama(a, o, messages: messages, model: model, key: "response")
        }
        router.post("/api/embed") { req, ctx -> Response in
            let o = try await Self.body(req, ctx)
            let texts = try Self.inputs(o["input"])
            let (vectors, tokens) = try await a.embed(texts)
            return Self.json(["model": o["model"] as? String ?? "all-minilm-l6-v2", "embeddings": vectors.map { $0.map(Double.init) },
                              "prompt_eval_count": tokens])
        }
    }

    /// /api/chat and /api/generate: NDJSON stream (Ollama's default) or one object.
    static func ollama(_ a: any AssistantAPI, _ o: [String: Any], messages: [ChatMessage], model: String, key: String) async throws -> Response {
        let opts = o["options"] as? [String: Any] ?? [:]
        let sampling = try sampling(opts, temperature: "temperature", topP: "top_p", seed: "seed", topK: "top_k", minP: "min_p", repeatPenalty: "repeat_penalty")
        let maxTokens = try positive(opts["num_predict"], "num_predict")
        let grounded = model == groundedModelName
        let start = DispatchTime.now().uptimeNanoseconds
        if o["stream"] as? Bool ?? true {
            return stream(contentType: "application/x-ndjson") { emit in
                let r = try await a.chat(messages, grounded: grounded, maxTokens: maxTokens, sampling: sampling) { piece in
                    emit(text(["model": model, "created_at": isoNow(), key: ollamaPart(key, piece), "done": false]) + "\n")
                }
                _ = emit(text(ollamaFinal(r, "", model: model, key: key, grounded: grounded, start: start)) + "\n")
            }
        }
        let r = try await a.chat(messages, grounded: grounded, maxTokens: maxTokens, sampling: sampling) { _ in true }
        return json(ollamaFinal(r, r.text, model: model, key: key, grounded: grounded, start: start))
    }

    static func ollamaPart(_ key: String, _ text: String) -> Any {
        key == "message" ? ["role": "assistant", "content": text] as [String: Any] : text
    }

    static func ollamaFinal(_ r: AssistantReply, _ text: String, model: String, key: String, grounded: Bool, start: UInt64) -> [String: Any] {
        var f: [String: Any] = ["model": model, "created_at": isoNow(), key: ollamaPart(key, text), "done": true,
                                "done_reason": r.stopReason == .length ? "length" : "stop",
                                "total_duration": Int(DispatchTime.now().uptimeNanoseconds - start),
                                "prompt_eval_count": r.promptTokens, "eval_count": r.completionTokens]
        if grounded { f["kiana"] = ["citations": citations(r)] }
        return f
    }

    /// One SSE chunk of a streamed chat completion.
    static func chunk(id: String, created: Int, model: String, delta: [String: Any], finish: String?, extra: [String: Any] = [:]) -> String {
        var c: [String: Any] = ["id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                                "choices": [["index": 0, "delta": delta, "finish_reason": finish.map { $0 as Any } ?? NSNull()]]]
        for (k, v) in extra { c[k] = v }
        return "data: " + text(c) + "\n\n"
    }

    // MARK: request parsing (every field validated before use)

    /// 503 before anything is read when the language model's queue is full.
    static func admit(_ accepted: Bool) throws {
        guard accepted else { throw HTTPError(.serviceUnavailable, message: "the language model is busy with other requests; try again shortly") }
    }

    static func body(_ req: Request, _ ctx: some RequestContext, limit: Int = maxBody) async throws -> [String: Any] {
        let buffer = try await RequestBodies.collect(req, limit: limit)
        guard String(validating: buffer.readableBytesView, as: UTF8.self) != nil else {
            throw HTTPError(.badRequest, message: "the request body is not valid UTF-8")
        }
        guard let o = try? JSONSerialization.jsonObject(with: Data(buffer.readableBytesView)) as? [String: Any] else {
            throw HTTPError(.badRequest, message: "the request body is not a JSON object")
        }
        return o
    }

    static func messages(_ o: [String: Any]) throws -> ([ChatMessage], String) {
        guard let model = o["model"] as? String, !model.isEmpty else { throw HTTPError(.badRequest, message: "model is required") }
        guard let list = o["messages"] as? [[String: Any]], !list.isEmpty, list.count <= 1000 else {
            throw HTTPError(.badRequest, message: "messages must be a non-empty array of at most 1000 messages")
        }
        var out: [ChatMessage] = []
        for m in list {
            guard let roleName = m["role"] as? String else { throw HTTPError(.badRequest, message: "every message needs a role") }
            let role: ChatMessage.Role
            switch roleName {
            case "system", "developer": role = .system
            case "user": role = .user
            case "assistant": role = .assistant
            default: throw HTTPError(.badRequest, message: "unsupported role \(roleName)")
            }
            var content = ""
            if let s = m["content"] as? String { content = s } else if let parts = m["content"] as? [[String: Any]] {
                content = parts.compactMap { $0["type"] as? String == "text" ? $0["text"] as? String : nil }.joined(separator: "\n")
            } else if !(m["content"] is NSNull), m["content"] != nil {
                throw HTTPError(.badRequest, message: "message content must be text")
            }
            out.append(ChatMessage(role, content))
        }
        guard out.last?.role == .user else { throw HTTPError(.badRequest, message: "the last message must be the user's") }
        return (out, model)
    }

    static func inputs(_ v: Any?) throws -> [String] {
        if let s = v as? String { return [s] }
        if let a = v as? [String], !a.isEmpty, a.count <= 2048 { return a }
        throw HTTPError(.badRequest, message: "input must be a string or a non-empty array of at most 2048 strings")
    }

    static func positive(_ v: Any?, _ name: String) throws -> Int? {
        guard let v, !(v is NSNull) else { return nil }
        guard let n = v as? Int, n > 0, n <= 32768 else { throw HTTPError(.badRequest, message: "\(name) must be 1…32768") }
        return n
    }

    static func sampling(_ o: [String: Any], temperature: String, topP: String, seed: String,
                         topK: String? = nil, minP: String? = nil, repeatPenalty: String? = nil) throws -> SamplingOptions {
        var s = SamplingOptions()
        s.temperature = 0.2
        func num(_ k: String?) -> Double? { k.flatMap { o[$0] as? Double ?? (o[$0] as? Int).map(Double.init) } }
        if let t = num(temperature) { s.temperature = Float(t) }
        if let p = num(topP) { s.topP = Float(p) }
        if let k = num(topK) { s.topK = Int(k) }
        if let m = num(minP) { s.minP = Float(m) }
        if let r = num(repeatPenalty) { s.repeatPenalty = Float(r) }
        if let v = o[seed] as? Int { s.seed = UInt64(truncatingIfNeeded: v) }
        do { try s.validate() } catch { throw HTTPError(.badRequest, message: error.message) }
        return s
    }

    // MARK: responses

    static func finishReason(_ r: StopReason) -> String { r == .length || r == .contextFull ? "length" : "stop" }

    static func usage(_ r: AssistantReply) -> [String: Any] {
        ["prompt_tokens": r.promptTokens, "completion_tokens": r.completionTokens, "total_tokens": r.promptTokens + r.completionTokens]
    }

    static func citations(_ r: AssistantReply) -> [[String: Any]] {
        r.citations.map { ["number": $0.number, "id": $0.id, "title": $0.title ?? NSNull(), "source": $0.source ?? NSNull()] }
    }

    static func isoNow() -> String { ISO8601DateFormatter().string(from: Date()) }

    static func text(_ o: Any) -> String {
        String(decoding: (try? JSONSerialization.data(withJSONObject: normalize(o), options: [.withoutEscapingSlashes])) ?? Data("{}".utf8), as: UTF8.self)
    }

    /// Optionals inside `Any` become their value or JSON null.
    static func normalize(_ v: Any) -> Any {
        if let d = v as? [String: Any] { return d.mapValues(normalize) }
        if let a = v as? [Any] { return a.map(normalize) }
        let m = Mirror(reflecting: v)
        if m.displayStyle == .optional { return m.children.first.map { normalize($0.value) } ?? NSNull() }
        return v
    }

    static func json(_ o: Any, status: HTTPResponse.Status = .ok) -> Response {
        Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: text(o))))
    }

    /// A streamed response: `produce` calls `emit` with each piece of text (from any thread);
    /// `emit` returns false once the client is gone, which stops generation.
    static func stream(contentType: String, _ produce: @escaping @Sendable (@escaping @Sendable (String) -> Bool) async throws -> Void) -> Response {
        Response(status: .ok, headers: [.contentType: contentType, .cacheControl: "no-cache"], body: ResponseBody { writer in
            let (pieces, continuation) = AsyncStream<String>.makeStream(bufferingPolicy: .unbounded)
            let gone = ClientGone()
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    defer { continuation.finish() }
                    do {
                        try await produce { piece in
                            if gone.value { return false }
                            continuation.yield(piece)
                            return true
                        }
                    } catch {
                        // Headers are sent: report the failure in the stream's own format.
                        let message = (error as? KianaAIError)?.message ?? "\(error)"
                        continuation.yield(contentType == "text/event-stream"
                                           ? "data: " + text(["error": ["message": message, "type": "server_error"]]) + "\n\n"
                                           : text(["error": message]) + "\n")
                    }
                }
                for await piece in pieces {
                    do { try await writer.write(ByteBuffer(string: piece)) } catch {
                        gone.set()
                        group.cancelAll()   // a request still waiting for the model leaves the queue
                        break
                    }
                }
                try await group.waitForAll()
            }
            try await writer.finish(nil)
        })
    }
}

/// Set once the client disconnects.
final class ClientGone: @unchecked Sendable {
    private let lock = NSLock()
    private var gone = false
    var value: Bool { lock.lock(); defer { lock.unlock() }; return gone }
    func set() { lock.lock(); gone = true; lock.unlock() }
}
