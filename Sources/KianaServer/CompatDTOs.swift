import Foundation
import Hummingbird
import KianaAI

// Request and response bodies of the OpenAI-compatible (/v1) and Ollama-compatible (/api)
// endpoints, as far as KI_ana implements them. Unknown request fields are ignored, as the
// originals do; known ones the node cannot honour (tools, several choices, JSON mode, images,
// log probabilities, other embedding sizes) are refused with 400 rather than silently dropped.

/// Any JSON value, kept only as far as the checks need it.
enum AnyJSON: Decodable, Sendable, Equatable {
    case string(String)
    case bool(Bool)
    case null
    case other

    init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() {
            self = .null
        } else if let s = try? c.decode(String.self) {
            self = .string(s)
        } else if let b = try? c.decode(Bool.self) {
            self = .bool(b)
        } else {
            self = .other
        }
    }
}

/// A chat message as both APIs send it: `content` is text, OpenAI's list of parts, or null.
struct CompatMessage: Decodable, Sendable {
    enum Content: Decodable, Sendable {
        case text(String)
        case none
        /// Parts of a kind the node's text-only model cannot read (images, audio, files).
        case unsupported(String)

        init(from decoder: any Decoder) throws {
            let c = try decoder.singleValueContainer()
            if c.decodeNil() {
                self = .none
                return
            }
            if let s = try? c.decode(String.self) {
                self = .text(s)
                return
            }
            struct Part: Decodable {
                var type: String?
                var text: String?
            }
            if let parts = try? c.decode([Part].self) {
                if let other = parts.first(where: { $0.type != "text" }) {
                    self = .unsupported(other.type ?? "untyped")
                    return
                }
                self = .text(parts.compactMap(\.text).joined(separator: "\n"))
                return
            }
            throw DecodingError.dataCorruptedError(in: c, debugDescription: "message content must be text")
        }

        var text: String {
            if case .text(let s) = self { return s }
            return ""
        }
    }

    var role: String?
    var content: Content?
    /// Ollama's images beside a message.
    var images: [AnyJSON]?
}

/// One string or a list of them (`input` of the embedding endpoints, OpenAI's `stop`).
enum StringOrList: Decodable, Sendable {
    case one(String)
    case many([String])

    init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let s = try? c.decode(String.self) {
            self = .one(s)
        } else if let a = try? c.decode([String].self) {
            self = .many(a)
        } else {
            throw DecodingError.dataCorruptedError(in: c, debugDescription: "must be a string or an array of strings")
        }
    }

    var list: [String] {
        switch self {
        case .one(let s): return [s]
        case .many(let a): return a
        }
    }
}

// MARK: OpenAI

struct ChatCompletionRequest: Decodable, Sendable {
    struct StreamOptions: Decodable, Sendable { var include_usage: Bool? }
    var model: String?
    var messages: [CompatMessage]?
    var temperature: Double?
    var top_p: Double?
    var seed: Int64?
    var max_tokens: Int?
    var max_completion_tokens: Int?
    var stream: Bool?
    var stream_options: StreamOptions?
    var stop: StringOrList?
    var n: Int?
    var tools: [AnyJSON]?
    var functions: [AnyJSON]?
    var tool_choice: AnyJSON?
    var response_format: ResponseFormat?
    var logprobs: Bool?
    struct ResponseFormat: Decodable, Sendable { var type: String? }
}

struct EmbeddingsRequest: Decodable, Sendable {
    var model: String?
    var input: StringOrList?
    var encoding_format: String?
    var dimensions: Int?
}

struct ModelListDTO: ResponseEncodable, Sendable {
    struct Model: Codable, Sendable {
        var id: String
        var object = "model"
        var created = 0
        var owned_by = "kiana"
    }
    var object = "list"
    var data: [Model]
}

struct UsageDTO: Codable, Sendable {
    var prompt_tokens: Int
    var completion_tokens: Int
    var total_tokens: Int
    init(_ r: AssistantReply) {
        prompt_tokens = r.promptTokens
        completion_tokens = r.completionTokens
        total_tokens = r.promptTokens + r.completionTokens
    }
}

/// KI_ana's addition to compatible answers of the grounded model: what it cites.
/// What the compatible endpoints add for model `kiana`: citations and supporting sentences.
struct KianaExtraDTO: Codable, Sendable {
    var citations: [CitationDTO]
    var support: [SupportDTO]
    var abstained: Bool
    init(_ r: AssistantReply) {
        citations = r.citations
        support = r.support
        abstained = r.abstained
    }
}

struct ChatCompletionDTO: ResponseEncodable, Sendable {
    struct Message: Codable, Sendable {
        var role = "assistant"
        var content: String
    }
    struct Choice: Codable, Sendable {
        var index = 0
        var message: Message
        var finish_reason: String
    }
    var id: String
    var object = "chat.completion"
    var created: Int
    var model: String
    var choices: [Choice]
    var usage: UsageDTO
    var kiana: KianaExtraDTO?
}

/// One chunk of a streamed chat completion; `finish_reason` is null until the last one.
struct ChatChunkDTO: Encodable, Sendable {
    struct Delta: Codable, Sendable {
        var role: String?
        var content: String?
    }
    struct Choice: Encodable, Sendable {
        var index = 0
        var delta: Delta
        var finish_reason: String?
        enum CodingKeys: String, CodingKey { case index, delta, finish_reason }
        func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(index, forKey: .index)
            try c.encode(delta, forKey: .delta)
            try c.encode(finish_reason, forKey: .finish_reason)
        }
    }
    var id: String
    var object = "chat.completion.chunk"
    var created: Int
    var model: String
    var choices: [Choice]
    var usage: UsageDTO?
    var kiana: KianaExtraDTO?
}

struct EmbeddingsDTO: ResponseEncodable, Sendable {
    enum Vector: Encodable, Sendable {
        case floats([Double])
        case base64(String)
        func encode(to encoder: any Encoder) throws {
            var c = encoder.singleValueContainer()
            switch self {
            case .floats(let v): try c.encode(v)
            case .base64(let s): try c.encode(s)
            }
        }
    }
    struct Item: Encodable, Sendable {
        var object = "embedding"
        var index: Int
        var embedding: Vector
    }
    struct Usage: Codable, Sendable {
        var prompt_tokens: Int
        var total_tokens: Int
    }
    var object = "list"
    var data: [Item]
    var model: String
    var usage: Usage
}

/// OpenAI's error shape for a failure after a stream began.
struct StreamFailureDTO: Encodable, Sendable {
    struct Body: Encodable, Sendable {
        var message: String
        var type = "server_error"
    }
    var error: Body
}

// MARK: Ollama

struct OllamaOptions: Decodable, Sendable {
    var temperature: Double?
    var top_p: Double?
    var seed: Int64?
    var top_k: Double?
    var min_p: Double?
    var repeat_penalty: Double?
    var num_predict: Int?
    var stop: [String]?
}

struct OllamaChatRequest: Decodable, Sendable {
    var model: String?
    var messages: [CompatMessage]?
    var stream: Bool?
    var options: OllamaOptions?
    var format: AnyJSON?
    var tools: [AnyJSON]?
}

struct OllamaGenerateRequest: Decodable, Sendable {
    var model: String?
    var prompt: String?
    var system: String?
    var stream: Bool?
    var options: OllamaOptions?
    var format: AnyJSON?
    var images: [AnyJSON]?
    var raw: Bool?
}

struct OllamaEmbedRequest: Decodable, Sendable {
    var model: String?
    var input: StringOrList?
}

struct OllamaTagsDTO: ResponseEncodable, Sendable {
    struct Details: Codable, Sendable {
        var format = "gguf"
        var family = "kiana"
    }
    struct Model: Codable, Sendable {
        var name: String
        var model: String
        var modified_at: String
        var size = 0
        var digest = ""
        var details = Details()
    }
    var models: [Model]
}

/// One line of /api/chat (`message`) or /api/generate (`response`); the last has `done` true
/// and the counts.
struct OllamaPartDTO: ResponseEncodable, Sendable {
    struct Message: Codable, Sendable {
        var role = "assistant"
        var content: String
    }
    var model: String
    var created_at: String
    var message: Message?
    var response: String?
    var done: Bool
    var done_reason: String?
    var total_duration: Int?
    var prompt_eval_count: Int?
    var eval_count: Int?
    var kiana: KianaExtraDTO?
}

struct OllamaEmbedDTO: ResponseEncodable, Sendable {
    var model: String
    var embeddings: [[Double]]
    var prompt_eval_count: Int
}

struct OllamaFailureDTO: Encodable, Sendable { var error: String }

struct OllamaShowRequest: Decodable, Sendable {
    var model: String?
    /// The older spelling of `model`.
    var name: String?
}

struct OllamaDetailsDTO: Codable, Sendable {
    var parent_model = ""
    var format: String
    var family: String
    var families: [String]
    var parameter_size: String
    var quantization_level: String
    init(_ d: ModelDetailsDTO) {
        format = d.format
        family = d.family
        families = [d.family]
        parameter_size = d.parameterSize
        quantization_level = d.quantizationLevel
    }
}

struct OllamaShowDTO: ResponseEncodable, Sendable {
    var modelfile = ""
    var parameters = ""
    var template = ""
    var license = ""
    var details: OllamaDetailsDTO
    var model_info: [String: Int]
    var capabilities: [String]
    var modified_at: String
}

struct OllamaPsDTO: ResponseEncodable, Sendable {
    struct Model: Codable, Sendable {
        var name: String
        var model: String
        var size = 0
        var digest = ""
        var details: OllamaDetailsDTO?
        var expires_at: String
        var size_vram = 0
    }
    var models: [Model]
}

/// The legacy /api/embeddings: one prompt, one vector.
struct OllamaLegacyEmbedRequest: Decodable, Sendable {
    var model: String?
    var prompt: String?
}

struct OllamaLegacyEmbedDTO: ResponseEncodable, Sendable { var embedding: [Double] }
extension ModelListDTO.Model: ResponseEncodable {}
