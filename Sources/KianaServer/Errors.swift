import Foundation
#if canImport(Glibc)
    import Glibc
#endif
import HTTPTypes
import Hummingbird
import KianaAI
import KianaCore
import KianaNet
import KianaStore
import NIOCore
import NIOHTTP1

/// The one place errors become HTTP responses: `{"error":{"code":…,"message":…}}` with a
/// status chosen by the error's code. Unknown errors are 500 with a generic message (their
/// description may hold paths or other detail that does not belong in a response).
struct APIErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch {
            let (status, code, message) = Self.describe(error)
            if status.code >= 500 {
                // What failed, for the operator: the error's type and code, never its text (which
                // may quote the request).
                context.logger.warning(
                    "request failed", metadata: ["error": .string(String(reflecting: type(of: error))), "code": .string(code)])
            }
            // Ollama's clients read `error` as a string (the official Python client shows it as
            // the exception's text); everything else gets the OpenAI-shaped object.
            let text =
                Self.isOllamaPath(request.uri.path)
                ? JSONText.encode(OllamaFailureDTO(error: message))
                : JSONText.encode(
                    ErrorBodyDTO(error: .init(code: code, message: message, type: status.code >= 500 ? "server_error" : "invalid_request_error")))
            var headers: HTTPFields = [.contentType: "application/json"]
            // What the error says of itself beyond its status (`Allow` on a 405).
            if let e = error as? HTTPError, let allow = e.headers[.allow] { headers[.allow] = allow }
            // Busy or briefly unable (a full queue, too many streams, a model loading): the client
            // may try again, and says when. 408: the request was not read, so the connection ends.
            if status == .serviceUnavailable || status == .tooManyRequests { headers[.retryAfter] = String(Self.retryAfterSeconds) }
            if status == .requestTimeout { headers[.connection] = "close" }
            return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(string: text)))
        }
    }

    /// Ollama's API: `/api/…` outside KI_ana's own `/api/v1/`.
    static func isOllamaPath(_ path: String) -> Bool {
        path.hasPrefix("/api/") && !path.hasPrefix("/api/v1/") && path != "/api/v1"
    }

    /// What `Retry-After` says on a 503 or 429 (seconds).
    static var retryAfterSeconds: Int { 2 }

    static func describe(_ error: any Error) -> (HTTPResponse.Status, String, String) {
        if let e = error as? HTTPError {
            let code = ErrorCode(status: e.status)
            return (e.status, code.rawValue, e.body ?? e.status.reasonPhrase)
        }
        if let e = error as? any KianaError {
            return (e.code.httpStatus, e.code.rawValue, e.message)
        }
        if error is HTTPParserError {
            // The body ended early (the client hung up) or did not parse: the client's doing.
            return (.badRequest, ErrorCode.invalidInput.rawValue, "the request was cut off or is not valid HTTP")
        }
        if let e = error as? any HTTPResponseError {
            return (e.status, ErrorCode(status: e.status).rawValue, e.status.reasonPhrase)
        }
        return (.internalServerError, ErrorCode.internal.rawValue, "internal error")
    }
}

extension ErrorCode {
    /// The HTTP status of an error with this code: the one mapping, exhaustive over the set.
    public var httpStatus: HTTPResponse.Status {
        switch self {
        case .unsupportedMediaType: return .unsupportedMediaType
        case .misdirected: return .misdirectedRequest
        case .methodNotAllowed: return .methodNotAllowed
        case .invalidInput, .ambiguous, .malformedEncoding, .invalidStructure, .invalidEntry, .invalidBlock, .invalidKey,
            .invalidDeviceID, .contextFull, .unknownType, .unknownKind, .protocolViolation, .version:
            return .badRequest
        case .unauthorized, .refused, .handshake: return .unauthorized
        case .notFound, .notInitialized: return .notFound
        case .changed: return .preconditionFailed
        case .conflict, .exists, .alreadyInitialized, .notAuthority, .pairing, .notConfirmed, .rejected, .locked: return .conflict
        case .tooLarge: return .contentTooLarge
        case .busy, .modelMissing, .modelCorrupt, .toolMissing, .readOnly, .index, .notRunning, .discovery, .listen, .closed:
            return .serviceUnavailable
        case .backend, .network, .unreachable: return .badGateway
        case .timeout: return .gatewayTimeout
        case .invalidProof, .verificationFailed, .corrupt, .ingest: return .unprocessableContent
        case .database, .io, .dataDirectory, .keyFile, .internal: return .internalServerError
        }
    }

    /// The code of an HTTP error raised by the framework or a route (status only).
    init(status: HTTPResponse.Status) {
        switch status.code {
        case 400: self = .invalidInput
        case 401, 403: self = .unauthorized
        case 404: self = .notFound
        case 405: self = .methodNotAllowed
        case 409: self = .conflict
        case 412: self = .changed
        case 413, 431: self = .tooLarge
        case 415: self = .unsupportedMediaType
        case 421: self = .misdirected
        case 503: self = .busy
        case 504: self = .timeout
        default: self = status.code >= 500 ? .internal : .invalidInput
        }
    }
}

/// Defences for a server on loopback that browsers can reach:
/// - DNS rebinding: a page on evil.example whose name resolves to 127.0.0.1 sends
///   `Host: evil.example`; only loopback host names are accepted.
/// - Cross-site requests: a form or `fetch(…, {mode: "no-cors"})` from another site can only
///   send "simple" content types; bodies of writes must be `application/json`, which needs a CORS
///   preflight that this server never grants.
struct BrowserGuardMiddleware<Context: RequestContext>: RouterMiddleware {
    let checkHost: Bool

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if checkHost, !Self.isLoopbackAuthority(request.head.authority ?? "") {
            throw HTTPError(.misdirectedRequest, message: "this node only answers requests addressed to 127.0.0.1, localhost or [::1]")
        }
        let hasBody = request.headers[.transferEncoding] != nil || (request.headers[.contentLength].flatMap { Int($0) } ?? 0) > 0
        if hasBody && (request.method == .post || request.method == .put || request.method == .patch) {
            let type = request.headers[.contentType]?.lowercased() ?? ""
            if Self.audioUploadPaths.contains(request.uri.path) {
                try Self.checkAudioUpload(request, type: type)
            } else if !type.hasPrefix("application/json") && !type.hasPrefix("application/x-ndjson") {
                throw HTTPError(.unsupportedMediaType, message: "request bodies must be sent as Content-Type: application/json")
            }
        }
        return try await next(request, context)
    }

    /// Routes that take a recording instead of JSON.
    static var audioUploadPaths: Set<String> { ["/api/v1/voice/transcribe", "/v1/audio/transcriptions"] }

    /// A recording comes as audio/wav (or octet-stream), which a cross-site page cannot send
    /// without a preflight, or as multipart/form-data, which it can: a form is taken only when
    /// the browser says the request is not cross-site (Sec-Fetch-Site, Origin); clients that
    /// are not browsers send neither header.
    static func checkAudioUpload(_ request: Request, type: String) throws {
        let base = type.split(separator: ";").first.map { $0.trimmingCharacters(in: .whitespaces) } ?? ""
        if ["audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave", "application/octet-stream"].contains(base) { return }
        guard base == "multipart/form-data" else {
            throw HTTPError(.unsupportedMediaType, message: "send the recording as a WAV file (Content-Type: audio/wav) or a multipart form with a file field")
        }
        if let site = request.headers[HTTPField.Name("Sec-Fetch-Site")!], site != "same-origin", site != "none" {
            throw HTTPError(.forbidden, message: "a form from another site cannot upload recordings here")
        }
        if let origin = request.headers[HTTPField.Name("Origin")!], origin != "null" {
            // Same origin only: host and port as the request addressed them (another web app on
            // localhost:9999 is another site).
            let authority = origin.split(separator: "/", omittingEmptySubsequences: true).dropFirst().first.map(String.init) ?? ""
            guard authority.lowercased() == (request.head.authority ?? "").lowercased() else {
                throw HTTPError(.forbidden, message: "a form from another site cannot upload recordings here")
            }
        } else if request.headers[HTTPField.Name("Origin")!] == "null" {
            throw HTTPError(.forbidden, message: "a form from an opaque origin cannot upload recordings here")
        }
    }

    static func isLoopbackAuthority(_ authority: String) -> Bool {
        var host = Substring(authority)
        if host.hasPrefix("[") {
            guard let end = host.firstIndex(of: "]") else { return false }
            host = host[host.index(after: host.startIndex)..<end]
        } else if let colon = host.lastIndex(of: ":") {
            host = host[..<colon]
        }
        return Loopback.isLoopbackHost(String(host))
    }
}

/// Loopback host names: "localhost", "::1" and IPv4 literals in 127.0.0.0/8 (parsed, so
/// "127.0.0.1.evil.example" is not one).
public enum Loopback {
    public static func isLoopbackHost(_ host: String) -> Bool {
        if host == "localhost" || host == "::1" { return true }
        var addr = in_addr()
        guard inet_pton(AF_INET, host, &addr) == 1 else { return false }
        return UInt32(bigEndian: addr.s_addr) >> 24 == 127
    }
}
