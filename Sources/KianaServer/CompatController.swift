import Foundation
import HTTPTypes
import Hummingbird
import KianaAI
import KianaCore
import NIOCore

/// OpenAI-compatible (/v1/…) and Ollama-compatible (/api/…) endpoints over the node, so
/// existing tools and the official clients work with a base URL only. The model "kiana"
/// answers from the knowledge base (grounded, with citations in a `kiana` field); any other
/// listed model name is plain chat with the node's language model.
struct CompatController<Context: RequestContext>: Sendable {
    let node: any NodeAPI

    var routes: RouteCollection<Context> {
        let r = RouteCollection(context: Context.self)
        r.get("v1/models", use: models)
        r.get("v1/models/:id", use: model)
        r.post("v1/chat/completions", use: chatCompletions)
        r.post("v1/embeddings", use: embeddings)
        r.get("api/tags", use: tags)
        r.post("api/chat", use: ollamaChat)
        r.post("api/generate", use: ollamaGenerate)
        r.post("api/embed", use: ollamaEmbed)
        r.post("api/embeddings", use: ollamaLegacyEmbed)
        r.post("api/show", use: ollamaShow)
        r.get("api/ps", use: ollamaPs)
        return r
    }

    // MARK: OpenAI

    @Sendable func models(_ req: Request, _ ctx: Context) async throws -> ModelListDTO {
        ModelListDTO(data: try await node.modelNames().map { .init(id: $0) })
    }

    /// One model (what the official client's `models.retrieve` asks for).
    @Sendable func model(_ req: Request, _ ctx: Context) async throws -> ModelListDTO.Model {
        let id = Compat.canonical(try ctx.parameters.require("id"))
        try await Compat.served(id, node)
        return .init(id: id)
    }

    @Sendable func chatCompletions(_ req: Request, _ ctx: Context) async throws -> Response {
        try Compat.admit(node.acceptsGeneration())
        let body = try await RequestBodies.decode(ChatCompletionRequest.self, from: req, limit: RequestBodies.defaultLimit)
        try Compat.refuseUnsupported(body)
        let stops = try Compat.stops(body.stop?.list, limit: 4)
        let (messages, model) = try Compat.messages(body.messages, model: body.model)
        try await Compat.served(model, node)
        let sampling = try Compat.sampling(temperature: body.temperature, topP: body.top_p, seed: body.seed)
        let maxTokens = try Compat.positive(body.max_completion_tokens ?? body.max_tokens, "max_tokens")
        let id = "chatcmpl-" + UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "")
        let created = Int(Date().timeIntervalSince1970)
        let grounded = model == groundedModelName
        // A grounded answer asks the last user message: checked as a question before a stream starts.
        if grounded, let last = messages.last { _ = try Grounding.checkedQuestion(last.content) }
        let node = self.node
        if body.stream == true {
            let usage = body.stream_options?.include_usage == true
            @Sendable func chunk(_ delta: ChatChunkDTO.Delta, finish: String? = nil, kiana: KianaExtraDTO? = nil) -> String {
                JSONText.event(nil, ChatChunkDTO(id: id, created: created, model: model, choices: [.init(delta: delta, finish_reason: finish)], kiana: kiana))
            }
            return Streaming.response(
                contentType: "text/event-stream",
                failure: { error in
                    JSONText.event(nil, StreamFailureDTO(error: .init(message: (error as? any KianaError)?.message ?? "\(error)")))
                }
            ) { emit in
                guard emit(chunk(.init(role: "assistant", content: ""))) else { return }
                let (r, _, stopped) = try await Compat.generate(
                    node, messages, grounded: grounded, maxTokens: maxTokens, sampling: sampling, stops: stops
                ) { emit(chunk(.init(content: $0))) }
                let finish = stopped ? "stop" : Compat.finishReason(r.stopReason)
                _ = emit(chunk(.init(), finish: finish, kiana: grounded ? KianaExtraDTO(r) : nil))
                if usage {
                    _ = emit(JSONText.event(nil, ChatChunkDTO(id: id, created: created, model: model, choices: [], usage: UsageDTO(r))))
                }
                _ = emit("data: [DONE]\n\n")
            }
        }
        let (r, text, stopped) = try await Compat.generate(node, messages, grounded: grounded, maxTokens: maxTokens, sampling: sampling, stops: stops)
        return try ChatCompletionDTO(
            id: id, created: created, model: model,
            choices: [.init(message: .init(content: text), finish_reason: stopped ? "stop" : Compat.finishReason(r.stopReason))],
            usage: UsageDTO(r), kiana: grounded ? KianaExtraDTO(r) : nil
        )
        .response(from: req, context: ctx)
    }

    @Sendable func embeddings(_ req: Request, _ ctx: Context) async throws -> EmbeddingsDTO {
        let body = try await RequestBodies.decode(EmbeddingsRequest.self, from: req, limit: RequestBodies.defaultLimit)
        if let d = body.dimensions, d != 384 {
            throw HTTPError(.badRequest, message: "dimensions must be 384: all-MiniLM-L6-v2's vectors cannot be shortened")
        }
        if let f = body.encoding_format, f != "float", f != "base64" {
            throw HTTPError(.badRequest, message: "encoding_format must be float or base64")
        }
        let texts = try Compat.inputs(body.input)
        let base64 = body.encoding_format == "base64"
        let (vectors, tokens) = try await node.embed(texts)
        let data: [EmbeddingsDTO.Item] = vectors.enumerated().map { i, v in
            let e: EmbeddingsDTO.Vector =
                base64
                ? .base64(Data(v.flatMap { withUnsafeBytes(of: $0.bitPattern.littleEndian, Array.init) }).base64EncodedString())
                : .floats(v.map(Double.init))
            return .init(index: i, embedding: e)
        }
        return EmbeddingsDTO(data: data, model: body.model ?? "all-minilm-l6-v2", usage: .init(prompt_tokens: tokens, total_tokens: tokens))
    }

    // MARK: Ollama

    @Sendable func tags(_ req: Request, _ ctx: Context) async throws -> OllamaTagsDTO {
        let now = Compat.isoNow()
        return OllamaTagsDTO(models: try await node.modelNames().map { .init(name: $0, model: $0, modified_at: now) })
    }

    @Sendable func ollamaChat(_ req: Request, _ ctx: Context) async throws -> Response {
        try Compat.admit(node.acceptsGeneration())
        let body = try await RequestBodies.decode(OllamaChatRequest.self, from: req, limit: RequestBodies.defaultLimit)
        try Compat.refuseUnsupported(format: body.format, tools: body.tools, images: nil, raw: nil)
        let (messages, model) = try Compat.messages(body.messages, model: body.model)
        try await Compat.served(model, node)
        return try await ollama(req, ctx, options: body.options, stream: body.stream, messages: messages, model: model, chatShape: true)
    }

    @Sendable func ollamaGenerate(_ req: Request, _ ctx: Context) async throws -> Response {
        try Compat.admit(node.acceptsGeneration())
        let body = try await RequestBodies.decode(OllamaGenerateRequest.self, from: req, limit: RequestBodies.defaultLimit)
        guard let requested = body.model, !requested.isEmpty else { throw HTTPError(.badRequest, message: "model is required") }
        let model = Compat.canonical(requested)
        // No prompt (or an empty one) only loads the model, as in Ollama.
        let prompt = body.prompt ?? ""
        try Compat.refuseUnsupported(format: body.format, tools: nil, images: body.images, raw: body.raw)
        try await Compat.served(model, node)
        // An empty prompt only loads the model, as in Ollama: nothing is generated.
        if prompt.isEmpty && (body.system ?? "").isEmpty {
            var loaded = OllamaPartDTO(model: model, created_at: Compat.isoNow(), message: nil, response: "", done: true)
            loaded.done_reason = "load"
            return try loaded.response(from: req, context: ctx)
        }
        var messages: [ChatMessage] = []
        if let system = body.system, !system.isEmpty { messages.append(ChatMessage(.system, system)) }
        messages.append(ChatMessage(.user, prompt))
        return try await ollama(req, ctx, options: body.options, stream: body.stream, messages: messages, model: model, chatShape: false)
    }

    @Sendable func ollamaEmbed(_ req: Request, _ ctx: Context) async throws -> OllamaEmbedDTO {
        let body = try await RequestBodies.decode(OllamaEmbedRequest.self, from: req, limit: RequestBodies.defaultLimit)
        let texts = try Compat.inputs(body.input)
        let (vectors, tokens) = try await node.embed(texts)
        return OllamaEmbedDTO(model: body.model ?? "all-minilm-l6-v2", embeddings: vectors.map { $0.map(Double.init) }, prompt_eval_count: tokens)
    }

    /// The legacy single-prompt embedding endpoint that older Ollama clients call.
    @Sendable func ollamaLegacyEmbed(_ req: Request, _ ctx: Context) async throws -> OllamaLegacyEmbedDTO {
        let body = try await RequestBodies.decode(OllamaLegacyEmbedRequest.self, from: req, limit: RequestBodies.defaultLimit)
        guard let prompt = body.prompt else { throw HTTPError(.badRequest, message: "prompt is required") }
        let (vectors, _) = try await node.embed([prompt])
        return OllamaLegacyEmbedDTO(embedding: vectors.first?.map(Double.init) ?? [])
    }

    @Sendable func ollamaShow(_ req: Request, _ ctx: Context) async throws -> OllamaShowDTO {
        let body = try await RequestBodies.decode(OllamaShowRequest.self, from: req, limit: RequestBodies.defaultLimit)
        guard let raw = body.model ?? body.name, !raw.isEmpty else { throw HTTPError(.badRequest, message: "model is required") }
        let name = Compat.canonical(raw)
        guard let d = try await node.modelDetails(name) else { throw Compat.notServed(name) }
        return OllamaShowDTO(
            details: OllamaDetailsDTO(d), model_info: d.contextLength.map { ["\(d.family).context_length": $0] } ?? [:],
            capabilities: ["completion"], modified_at: Compat.isoNow())
    }

    @Sendable func ollamaPs(_ req: Request, _ ctx: Context) async throws -> OllamaPsDTO {
        var models: [OllamaPsDTO.Model] = []
        for name in try await node.loadedModels() {
            let details = try await node.modelDetails(name).map(OllamaDetailsDTO.init)
            models.append(.init(name: name, model: name, details: details, expires_at: "9999-12-31T23:59:59Z"))
        }
        return OllamaPsDTO(models: models)
    }

    /// /api/chat and /api/generate: NDJSON stream (Ollama's default) or one object.
    func ollama(
        _ req: Request, _ ctx: Context, options: OllamaOptions?, stream: Bool?, messages: [ChatMessage], model: String,
        chatShape: Bool
    ) async throws -> Response {
        let o = options ?? OllamaOptions()
        let sampling = try Compat.sampling(
            temperature: o.temperature, topP: o.top_p, seed: o.seed, topK: o.top_k, minP: o.min_p,
            repeatPenalty: o.repeat_penalty)
        // Ollama's -1 (no limit) and -2 (fill the context) leave the length to the node, whose
        // default is bounded by the model's context.
        let maxTokens = try Compat.positive([-1, -2].contains(o.num_predict) ? nil : o.num_predict, "num_predict")
        let stops = try Compat.stops(o.stop, limit: 64)
        let grounded = model == groundedModelName
        let start = DispatchTime.now().uptimeNanoseconds
        let node = self.node
        @Sendable func part(_ text: String) -> OllamaPartDTO {
            OllamaPartDTO(
                model: model, created_at: Compat.isoNow(), message: chatShape ? .init(content: text) : nil,
                response: chatShape ? nil : text, done: false)
        }
        @Sendable func final(_ r: AssistantReply, _ text: String, stopped: Bool) -> OllamaPartDTO {
            var f = part(text)
            f.done = true
            f.done_reason = r.stopReason == .length && !stopped ? "length" : "stop"
            f.total_duration = Int(DispatchTime.now().uptimeNanoseconds - start)
            f.prompt_eval_count = r.promptTokens
            f.eval_count = r.completionTokens
            f.kiana = grounded ? KianaExtraDTO(r) : nil
            return f
        }
        if stream ?? true {
            return Streaming.response(
                contentType: "application/x-ndjson",
                failure: { error in
                    JSONText.encode(OllamaFailureDTO(error: APIErrorMiddleware<Context>.describe(error).2)) + "\n"
                }
            ) { emit in
                let (r, _, stopped) = try await Compat.generate(
                    node, messages, grounded: grounded, maxTokens: maxTokens, sampling: sampling, stops: stops
                ) { emit(JSONText.encode(part($0)) + "\n") }
                _ = emit(JSONText.encode(final(r, "", stopped: stopped)) + "\n")
            }
        }
        let (r, text, stopped) = try await Compat.generate(node, messages, grounded: grounded, maxTokens: maxTokens, sampling: sampling, stops: stops)
        return try final(r, text, stopped: stopped).response(from: req, context: ctx)
    }
}

/// Request checks shared by the compatible endpoints and /api/v1/ask.
enum Compat {
    /// 503 before anything is read when the language model's queue is full.
    static func admit(_ accepted: Bool) throws {
        guard accepted else { throw HTTPError(.serviceUnavailable, message: "the language model is busy with other requests; try again shortly") }
    }

    /// A model name the node does not serve is a 404 with code not-found, as the OpenAI API
    /// answers an unknown model (no aliases: docs/decisions.md).
    static func served(_ model: String, _ node: any NodeAPI) async throws {
        if model == groundedModelName { return }
        let names = try await node.modelNames()
        // Ollama lists "llama3.2:latest" for "llama3.2", and clients send "kiana:latest"
        let base = model.hasSuffix(":latest") ? String(model.dropLast(7)) : model
        guard names.contains(model) || names.contains(model + ":latest") || names.contains(base) else { throw notServed(model) }
    }

    /// Ollama's implicit tag: "kiana:latest" is "kiana".
    static func canonical(_ model: String) -> String {
        model == groundedModelName + ":latest" ? groundedModelName : model
    }

    static func notServed(_ model: String) -> KianaServerError {
        KianaServerError(
            .notFound,
            "model \"\(String(model.prefix(100)))\" is not served here: use \"\(groundedModelName)\" (answers from your knowledge) or a model from GET /v1/models")
    }

    /// Generates with the client's stop sequences. Streamed (`send` given), each piece is passed
    /// on as far as it cannot still become a sequence, and what was held back at the end after
    /// it; `send` returning false (the client went) stops generation. The text returned is the
    /// whole answer cut before the first sequence to complete; `stopped` says one did.
    static func generate(
        _ node: any NodeAPI, _ messages: [ChatMessage], grounded: Bool, maxTokens: Int?, sampling: SamplingOptions, stops: [String],
        send: (@Sendable (String) -> Bool)? = nil
    ) async throws -> (reply: AssistantReply, text: String, stopped: Bool) {
        let filter = StopStream(stops)
        let r = try await node.chat(messages, grounded: grounded, maxTokens: maxTokens, sampling: sampling) { piece in
            let text = filter.feed(piece)
            if let send, !text.isEmpty, !send(text) { return false }
            return !filter.stopped
        }
        if let send {
            let tail = filter.finish()
            if !tail.isEmpty { _ = send(tail) }
        }
        let (text, cut) = StopFilter.cut(r.text, at: stops)
        return (r, text, cut || filter.stopped)
    }

    /// Stop sequences: at most `limit` (OpenAI's is 4; Ollama sets none, its clients send a
    /// template's several), each at most 256 characters; empty ones stop nothing and are dropped.
    static func stops(_ list: [String]?, limit: Int) throws -> [String] {
        let list = (list ?? []).filter { !$0.isEmpty }
        guard list.count <= limit else { throw HTTPError(.badRequest, message: "stop takes at most \(limit) sequences") }
        guard list.allSatisfy({ $0.count <= 256 }) else { throw HTTPError(.badRequest, message: "a stop sequence may be at most 256 characters") }
        return list
    }

    /// OpenAI fields the node cannot honour: refused, so a client does not take plain text for
    /// what it asked (a tool call, JSON, several choices).
    static func refuseUnsupported(_ b: ChatCompletionRequest) throws {
        if let n = b.n, n != 1 { throw HTTPError(.badRequest, message: "n must be 1: the node generates one choice") }
        if let tools = b.tools, !tools.isEmpty, b.tool_choice != .string("none") {
            throw HTTPError(.badRequest, message: "tools are not supported: the node's model does not call functions (send no tools, or tool_choice \"none\")")
        }
        if let functions = b.functions, !functions.isEmpty {
            throw HTTPError(.badRequest, message: "functions are not supported: the node's model does not call functions")
        }
        if let type = b.response_format?.type, type != "text" {
            throw HTTPError(.badRequest, message: "response_format \(type.prefix(40)) is not supported: answers are plain text")
        }
        if b.logprobs == true { throw HTTPError(.badRequest, message: "logprobs are not supported") }
    }

    /// The same for Ollama's fields.
    static func refuseUnsupported(format: AnyJSON?, tools: [AnyJSON]?, images: [AnyJSON]?, raw: Bool?) throws {
        if let format, format != .null, format != .string("") {
            throw HTTPError(.badRequest, message: "format is not supported: answers are plain text")
        }
        if let tools, !tools.isEmpty { throw HTTPError(.badRequest, message: "tools are not supported: the node's model does not call functions") }
        if let images, !images.isEmpty { throw HTTPError(.badRequest, message: "images are not supported: the node's model reads text only") }
        if raw == true {
            throw HTTPError(.badRequest, message: "raw prompts are not taken here (the chat template is always applied); `kiana generate` on the node completes a raw prompt")
        }
    }

    static func messages(_ list: [CompatMessage]?, model: String?) throws -> ([ChatMessage], String) {
        guard let model, !model.isEmpty else { throw HTTPError(.badRequest, message: "model is required") }
        guard let list, !list.isEmpty, list.count <= 1000 else {
            throw HTTPError(.badRequest, message: "messages must be a non-empty array of at most 1000 messages")
        }
        var out: [ChatMessage] = []
        for m in list {
            guard let roleName = m.role else { throw HTTPError(.badRequest, message: "every message needs a role") }
            let role: ChatMessage.Role
            switch roleName {
            case "system", "developer": role = .system
            case "user": role = .user
            case "assistant": role = .assistant
            default: throw HTTPError(.badRequest, message: "unsupported role \(roleName)")
            }
            if case .unsupported(let type) = m.content {
                throw HTTPError(.badRequest, message: "message content of type \(type.prefix(40)) is not supported: the node's model reads text only")
            }
            if let images = m.images, !images.isEmpty { throw HTTPError(.badRequest, message: "images are not supported: the node's model reads text only") }
            out.append(ChatMessage(role, m.content?.text ?? ""))
        }
        guard out.last?.role == .user else { throw HTTPError(.badRequest, message: "the last message must be the user's") }
        return (out, canonical(model))
    }

    static func inputs(_ v: StringOrList?) throws -> [String] {
        switch v {
        case .one(let s): return [s]
        case .many(let a) where !a.isEmpty && a.count <= 2048: return a
        default: throw HTTPError(.badRequest, message: "input must be a string or a non-empty array of at most 2048 strings")
        }
    }

    static func positive(_ v: Int?, _ name: String) throws -> Int? {
        guard let v else { return nil }
        guard v > 0, v <= 32768 else { throw HTTPError(.badRequest, message: "\(name) must be 1…32768") }
        return v
    }

    static func sampling(
        temperature: Double?, topP: Double?, seed: Int64?, topK: Double? = nil, minP: Double? = nil,
        repeatPenalty: Double? = nil
    ) throws -> SamplingOptions {
        var s = SamplingOptions()
        s.temperature = 0.2
        if let temperature { s.temperature = Float(temperature) }
        if let topP { s.topP = Float(topP) }
        if let topK {
            // top_k arrives as any JSON number: only whole numbers in a sane range are taken.
            guard topK.isFinite, topK >= 0, topK <= 1_000_000, let k = Int(exactly: topK.rounded(.towardZero)) else {
                throw HTTPError(.badRequest, message: "top_k must be a whole number from 0 (off) to 1000000")
            }
            s.topK = k
        }
        if let minP { s.minP = Float(minP) }
        if let repeatPenalty { s.repeatPenalty = Float(repeatPenalty) }
        if let seed { s.seed = UInt64(truncatingIfNeeded: seed) }
        do { try s.validate() } catch { throw HTTPError(.badRequest, message: error.message) }
        return s
    }

    static func finishReason(_ r: StopReason) -> String { r == .length || r == .contextFull ? "length" : "stop" }

    static func isoNow() -> String { ISO8601DateFormatter().string(from: Date()) }
}
