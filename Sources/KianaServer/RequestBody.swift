import Foundation
import HTTPTypes
import Hummingbird
import KianaCore
import NIOCore

/// Reading request bodies: one limit check, one answer for bodies over it, one decoding error.
enum RequestBodies {
    /// Request bodies larger than this are refused with 413 (ingest uploads have their own limit).
    static let defaultLimit = 1 << 20

    /// The body, at most `limit` bytes; over it a `.tooLarge` error (413). A body over the limit
    /// is still read to its end and thrown away before the 413 is sent: clients that send the
    /// whole body before reading the answer (Python's urllib, many HTTP libraries) would
    /// otherwise never see it, and a body left half-read stalls the connection. Slow or endless
    /// bodies are bounded by the connection deadlines, not here.
    static func collect(_ request: Request, limit: Int) async throws -> ByteBuffer {
        var buffer = ByteBuffer()
        var total = 0
        for try await chunk in request.body {
            total += chunk.readableBytes
            if total <= limit {
                var chunk = chunk
                buffer.writeBuffer(&chunk)
            }
        }
        guard total <= limit else { throw tooLarge(limit) }
        return buffer
    }

    static func tooLarge(_ limit: Int) -> HTTPError {
        HTTPError(
            .contentTooLarge,
            message: "the request body is larger than \(limit >= 1 << 20 ? "\(limit >> 20) MiB" : "\(limit) bytes")")
    }

    /// Decodes a JSON body into `T`; malformed input is a 400 whose message names the problem
    /// (not UTF-8, not JSON, which field is missing or of the wrong type).
    static func decode<T: Decodable>(_ type: T.Type, from request: Request, limit: Int) async throws -> T {
        let buffer = try await collect(request, limit: limit)
        let bytes = Data(buffer.readableBytesView)
        guard String(validating: bytes, as: UTF8.self) != nil else {
            throw HTTPError(.badRequest, message: "the request body is not valid UTF-8")
        }
        let value: T
        do {
            value = try JSONDecoder().decode(T.self, from: bytes)
        } catch let e as DecodingError {
            // A body that is a JSON object but holds a value the types cannot take (a number out
            // of range, a lone surrogate) is named as such, not as "not a JSON object".
            if case .dataCorrupted(let c) = e, c.codingPath.isEmpty,
                (try? JSONSerialization.jsonObject(with: bytes, options: [.fragmentsAllowed])) is [String: Any]
            {
                throw HTTPError(.badRequest, message: "a value in the body is out of range or malformed (\(c.debugDescription))")
            }
            // Foundation says only "not valid JSON": the strict check says where and why.
            if case .dataCorrupted(let c) = e, c.codingPath.isEmpty, let bad = JSONSyntax.firstError(in: bytes) {
                throw HTTPError(.badRequest, message: "the request body is not a JSON object: at line \(bad.line), column \(bad.column), \(bad.message)")
            }
            throw HTTPError(.badRequest, message: describe(e))
        }
        // KI_ana's own bodies take only their fields: a misspelt one ("tag" for "tags") would
        // otherwise be dropped without a word.
        if let strict = T.self as? any StrictBody.Type,
            let object = try? JSONSerialization.jsonObject(with: bytes) as? [String: Any]
        {
            let unknown = Set(object.keys).subtracting(strict.fields).sorted()
            if let first = unknown.first {
                let hint = strict.fields.first { $0 == first + "s" || $0 + "s" == first }.map { " (did you mean \"\($0)\"?)" } ?? ""
                throw HTTPError(
                    .badRequest,
                    message: "unknown field \"\(String(first.prefix(64)))\"\(hint); this body takes \(strict.fields.sorted().joined(separator: ", "))")
            }
        }
        return value
    }

    static func describe(_ e: DecodingError) -> String {
        func path(_ c: [any CodingKey]) -> String {
            c.isEmpty
                ? "the body"
                : c.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
                    .replacingOccurrences(of: ".[", with: "[")
        }
        switch e {
        case .dataCorrupted(let c) where c.codingPath.isEmpty: return "the request body is not a JSON object"
        case .dataCorrupted(let c): return "\(path(c.codingPath)): \(c.debugDescription)"
        case .keyNotFound(let k, let c): return "\(path(c.codingPath + [k])) is required"
        case .typeMismatch(_, let c) where c.codingPath.isEmpty: return "the request body is not a JSON object"
        case .typeMismatch(let t, let c): return "\(path(c.codingPath)) must be \(typeName(t))"
        case .valueNotFound(_, let c) where c.codingPath.isEmpty: return "the request body is not a JSON object (it is null)"
        case .valueNotFound(let t, let c): return "\(path(c.codingPath)) must be \(typeName(t)), not null"
        @unknown default: return "the request body does not match the expected form"
        }
    }

    static func typeName(_ t: Any.Type) -> String {
        switch t {
        case is String.Type: return "a string"
        case is Int.Type, is UInt64.Type, is Int64.Type: return "an integer"
        case is Double.Type, is Float.Type: return "a number"
        case is Bool.Type: return "true or false"
        case is [String].Type: return "an array of strings"
        default:
            // A dictionary is a Collection too, but in JSON it is an object.
            let name = String(describing: t)
            if name.hasPrefix("Dictionary<") || (name.hasPrefix("[") && name.contains(":")) { return "an object" }
            return t is any Collection.Type ? "an array" : "an object"
        }
    }
}

/// A request body of KI_ana's own API that refuses fields it does not know (the compatible
/// APIs take what their clients send and refuse only what changes the answer).
protocol StrictBody {
    static var fields: Set<String> { get }
}

extension NewItemDTO: StrictBody { static var fields: Set<String> { ["text", "title", "tags", "source"] } }
extension ItemChangeDTO: StrictBody { static var fields: Set<String> { ["text", "title", "tags"] } }
extension AskRequestDTO: StrictBody {
    static var fields: Set<String> { ["question", "conversation", "max_tokens", "temperature", "top_p", "seed", "stream"] }
}
extension IngestRequestDTO: StrictBody { static var fields: Set<String> { ["files", "tags", "stream", "replace", "paths"] } }
