import Foundation
import KianaStore
import Synchronization

/// One chat message.
public struct ChatMessage: Sendable, Codable, Equatable {
    public enum Role: String, Sendable, Codable { case system, user, assistant }
    public var role: Role
    public var content: String
    public init(_ role: Role, _ content: String) {
        self.role = role
        self.content = content
    }
}

/// What a backend is asked to do.
public struct ChatRequest: Sendable {
    public var messages: [ChatMessage]
    public var maxTokens: Int = 512
    public var sampling = SamplingOptions()
    public var stop: [String] = []
    public init(messages: [ChatMessage]) { self.messages = messages }
}

/// A finished answer.
public struct ChatReply: Sendable {
    public var text: String
    public var promptTokens: Int
    public var completionTokens: Int
    public var stopReason: StopReason
    public var seconds: Double
    public init(text: String, promptTokens: Int, completionTokens: Int, stopReason: StopReason, seconds: Double) {
        self.text = text
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
        self.stopReason = stopReason
        self.seconds = seconds
    }
}

/// A language model the assistant can talk to: the embedded engine, Ollama, or any
/// OpenAI-compatible server. A backend that cannot answer throws; it never invents a reply.
public protocol ChatBackend: Sendable {
    /// "embedded smollm2-135m-instruct", "ollama llama3.2 at http://…", for messages.
    var label: String { get }
    /// Context window in tokens (the prompt budget is planned against it).
    var contextSize: Int { get }
    /// Token count of a text (exact for the embedded engine, an estimate elsewhere).
    func countTokens(_ text: String) -> Int
    /// Streams the answer to `onText` (return false to stop) and returns it whole.
    func chat(_ request: ChatRequest, onText: @escaping @Sendable (String) -> Bool) async throws -> ChatReply
    /// Embeddings of texts through this backend.
    func embed(_ texts: [String]) async throws -> [[Float]]
    /// Model names the backend offers.
    func models() async throws -> [String]
}

/// Chat prompt formats, recognised from the model's `tokenizer.chat_template`.
public enum ChatTemplate: String, Sendable {
    /// `<|im_start|>role\ncontent<|im_end|>\n` … `<|im_start|>assistant\n` (SmolLM, Qwen, …).
    case chatML
    /// Llama 3's header blocks.
    case llama3

    /// The format of a Jinja template, or nil when it is none of the supported ones.
    public static func detect(_ jinja: String?) -> ChatTemplate? {
        guard let j = jinja else { return .chatML }  // no template: ChatML is the common default
        if j.contains("<|im_start|>") { return .chatML }
        if j.contains("<|start_header_id|>") { return .llama3 }
        return nil
    }

    /// The prompt text for `messages`, ending where the assistant's answer begins.
    public func render(_ messages: [ChatMessage]) -> String {
        var s = ""
        switch self {
        case .chatML:
            for m in messages { s += "<|im_start|>\(m.role.rawValue)\n\(m.content)<|im_end|>\n" }
            s += "<|im_start|>assistant\n"
        case .llama3:
            s = "<|begin_of_text|>"
            for m in messages { s += "<|start_header_id|>\(m.role.rawValue)<|end_header_id|>\n\n\(m.content)<|eot_id|>" }
            s += "<|start_header_id|>assistant<|end_header_id|>\n\n"
        }
        return s
    }
}

/// The embedded engine as a backend: one model, one session (its KV cache is reused across
/// turns that share a prefix); requests are served one at a time on a Dispatch thread (`blocking`) so the
/// cooperative pool never blocks on generation.
public final class EmbeddedBackend: ChatBackend, Sendable {
    public let model: LlamaModel
    public let template: ChatTemplate
    public let name: String
    /// The one session (KV cache), used by one request at a time.
    private let session: Mutex<LlamaSession>

    public init(model: LlamaModel, name: String, contextSize: Int = 2048, threads: Int = ProcessInfo.processInfo.activeProcessorCount) throws(KianaAIError) {
        guard let t = ChatTemplate.detect(model.chatTemplate) else {
            throw KianaAIError(.modelCorrupt, "\(name): its chat template is not one KI_ana knows (ChatML, Llama 3)")
        }
        self.model = model
        self.name = name
        template = t
        session = Mutex(LlamaSession(model: model, contextSize: contextSize, threads: threads))
    }

    public var label: String { "embedded \(name)" }
    public var contextSize: Int { session.withLock { $0.contextSize } }
    public func countTokens(_ text: String) -> Int { model.tokenizer.encode(text, special: false).count }

    public func chat(_ request: ChatRequest, onText: @escaping @Sendable (String) -> Bool) async throws -> ChatReply {
        let prompt = model.tokenizer.encode(template.render(request.messages))
        var options = GenerationOptions()
        options.maxTokens = request.maxTokens
        options.sampling = request.sampling
        options.stop = request.stop
        let opts = options
        let r = try await blocking { [self] in
            try session.withLock { try $0.generate(prompt: prompt, options: opts, onText: onText) }
        }
        return ChatReply(
            text: r.text, promptTokens: r.promptTokens, completionTokens: r.tokens.count,
            stopReason: r.stopReason, seconds: r.promptSeconds + r.generationSeconds)
    }

    public func embed(_ texts: [String]) async throws -> [[Float]] {
        throw KianaAIError(.invalidInput, "the embedded language model does not make embeddings; KI_ana embeds with all-MiniLM-L6-v2")
    }

    public func models() async throws -> [String] { [name] }
}
