import HTTPTypes
import Hummingbird
import Synchronization

/// The routes the router holds, filled once they are all added (middleware must be added
/// before the routes it wraps, so it cannot read them when it is made).
final class RouteTable: Sendable {
    private let routes = Mutex<[(path: RouterPath, method: HTTPRequest.Method)]>([])

    func set(_ list: [(path: RouterPath, method: HTTPRequest.Method)]) { routes.withLock { $0 = list } }

    /// The methods routes take on `path` (HEAD with every GET, as the router answers it), sorted.
    func methods(for path: String) -> [String] {
        let parts = path.split(separator: "/", omittingEmptySubsequences: true)
        var out = Set<String>()
        for r in routes.withLock({ $0 }) where Self.matches(r.path.components, parts) {
            out.insert(r.method.rawValue)
            if r.method == .get { out.insert(HTTPRequest.Method.head.rawValue) }
        }
        return out.sorted()
    }

    static func matches(_ pattern: [RouterPath.Element], _ parts: [Substring]) -> Bool {
        var i = 0
        for (n, element) in pattern.enumerated() {
            if element == RouterPath.Element.recursiveWildcard { return n < pattern.count && i < parts.count }
            guard i < parts.count, element ~= parts[i] else { return false }
            i += 1
        }
        return i == parts.count
    }
}

/// A request no route takes with its method, on a path that routes do take with others, is
/// answered 405 with `Allow` (RFC 9110 §15.5.6) instead of 404, so a client that used the
/// wrong method is told so. Added after authentication: a request without the token learns
/// nothing about the routes.
struct MethodNotAllowedMiddleware<Context: RequestContext>: RouterMiddleware {
    let table: RouteTable

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let e as HTTPError where e.status == .notFound && context.coreContext.endpointPath.value == "NotFound" {
            // No route matched: the router's not-found responder marks the request so; a
            // route's own 404 ("no such item") carries the route's path. The CLI's /control
            // surface has a token of its own, checked in its routes: nothing is said of it.
            let path = request.uri.path
            guard path != "/control", !path.hasPrefix("/control/") else { throw e }
            let allowed = table.methods(for: path)
            guard !allowed.isEmpty else { throw e }
            throw HTTPError(
                .methodNotAllowed, headers: [.allow: allowed.joined(separator: ", ")],
                message: "\(request.method.rawValue) is not allowed on \(path); it takes \(allowed.joined(separator: ", "))")
        }
    }
}
