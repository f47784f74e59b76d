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

/// An error of one of KI_ana's modules: a stable code name and a message for people.
/// The HTTP status comes from the code alone, in `APIErrorMiddleware.status(forCode:)`.
public protocol CodedError: Error {
    var codeName: String { get }
    var message: String { get }
}

extension KianaCoreError: CodedError { public var codeName: String { code.name } }
extension KianaStoreError: CodedError { public var codeName: String { code.name } }
extension KianaAIError: CodedError { public var codeName: String { code.name } }
extension KianaNetError: CodedError { public var codeName: String { code.name } }

/// The one place errors become HTTP responses: `{"error":{"code":…,"message":…}}` with a
/// status chosen by the error's code. Unknown errors are 500 with a generic message (their
/// description may hold paths or other detail that does not belong in a response).
struct APIErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch {
            let (status, code, message) = Self.describe(error)
            return CompatRoutes.json(["error": ["code": code, "message": message, "type": status.code >= 500 ? "server_error" : "invalid_request_error"]],
                                     status: status)
        }
    }

    static func describe(_ error: any Error) -> (HTTPResponse.Status, String, String) {
        if let e = error as? HTTPError {
            return (e.status, code(for: e.status), e.body ?? e.status.reasonPhrase)
        }
        if let e = error as? CodedError {
            return (status(forCode: e.codeName), kebab(e.codeName), e.message)
        }
        if let e = error as? any HTTPResponseError {
            return (e.status, code(for: e.status), e.status.reasonPhrase)
        }
        return (.internalServerError, "internal", "internal error")
    }

    /// HTTP status for a module error code (codes are shared names across modules).
    static func status(forCode name: String) -> HTTPResponse.Status {
        switch name {
        case "invalid-input", "invalidInput", "ambiguous", "malformed-encoding", "invalid-structure", "invalid-entry", "invalid-key",
             "invalid-device-id", "contextFull":
            return .badRequest
        case "not-found", "not-initialized": return .notFound
        case "conflict", "already-initialized", "not-authority": return .conflict
        case "busy", "modelMissing", "modelCorrupt", "toolMissing": return .serviceUnavailable
        case "backend", "network": return .badGateway
        case "invalid-proof", "verification-failed", "corrupt": return .unprocessableContent
        default: return .internalServerError
        }
    }

    /// "invalidInput" → "invalid-input": one spelling of codes on the wire.
    static func kebab(_ name: String) -> String {
        var out = ""
        for c in name {
            if c.isUppercase { out += "-" + c.lowercased() } else { out.append(c) }
        }
        return out
    }

    static func code(for status: HTTPResponse.Status) -> String {
        switch status.code {
        case 400: "invalid-input"
        case 401: "unauthorized"
        case 404: "not-found"
        case 405: "method-not-allowed"
        case 409: "conflict"
        case 413: "too-large"
        case 415: "unsupported-media-type"
        case 421: "misdirected"
        case 503: "busy"
        default: status.code >= 500 ? "internal" : "http-\(status.code)"
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
            if !type.hasPrefix("application/json") && !type.hasPrefix("application/x-ndjson") {
                throw HTTPError(.unsupportedMediaType, message: "request bodies must be sent as Content-Type: application/json")
            }
        }
        return try await next(request, context)
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
