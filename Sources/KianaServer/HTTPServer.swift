import Foundation
import Hummingbird
import HummingbirdCore
import KianaNet
import KianaCore
import Logging
import NIOCore
#if canImport(Glibc)
    import Glibc
#endif

/// Where and how the HTTP surface listens.
public struct HTTPConfig: Sendable {
    public var host: String
    public var port: Int
    /// Bearer token; required when `host` is not a loopback address.
    public var token: String?
    /// Deadlines and connection caps.
    public var limits: HTTPLimits
    /// The node's descriptor budget, when the node set one (shown by /metrics and the device endpoint).
    public var budget: DescriptorBudget?

    public init(host: String = "127.0.0.1", port: Int = 8000, token: String? = nil, limits: HTTPLimits = HTTPLimits(), budget: DescriptorBudget? = nil) {
        self.host = host
        self.port = port
        self.token = token
        self.limits = limits
        self.budget = budget
    }

    public var isLoopback: Bool { Loopback.isLoopbackHost(host) }
}

/// The request context of every route: the response encoder writes slashes unescaped.
public struct KianaRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// Completes when the request's connection closes (streamed responses stop then).
    let closed: EventLoopFuture<Void>
    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        closed = source.channel.closeFuture
    }
    public var responseEncoder: JSONEncoder { JSONText.encoder() }
}

/// Makes the connection's close visible to streamed responses made by the route
/// (`Streaming.connectionClosed`), whatever the route's context type.
struct ConnectionScopeMiddleware: RouterMiddleware {
    typealias Context = KianaRequestContext
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        try await Streaming.$connectionClosed.withValue(context.closed) { try await next(request, context) }
    }
}

/// Builds the node's HTTP application: middleware, then one controller per subject, each
/// talking to the node only through `NodeAPI`.
public enum KianaHTTP {
    /// The router alone (the in-process tests drive it through HummingbirdTesting).
    public static func router(
        config: HTTPConfig, node: any NodeAPI, control: ControlSurface? = nil,
        events: EventStreams = EventStreams(), connections: HTTPConnectionBook = HTTPConnectionBook()
    ) -> Router<KianaRequestContext> {
        // HEAD is answered on every GET route (monitors probe with it): the GET's headers, no body.
        let router = Router(context: KianaRequestContext.self, options: .autoGenerateHeadEndpoints)
        let metrics = Metrics()
        let listeners = ListenerStatus(http: connections, budget: config.budget)
        router.add(middleware: ConnectionScopeMiddleware())
        router.add(middleware: RequestLogMiddleware(metrics: metrics))
        router.add(middleware: APIErrorMiddleware())
        router.add(middleware: BrowserGuardMiddleware(checkHost: config.isLoopback))
        if let token = config.token, !token.isEmpty {
            router.add(middleware: BearerTokenMiddleware(token: token))
        }
        let routes = RouteTable()
        router.add(middleware: MethodNotAllowedMiddleware(table: routes))
        if let control { router.addRoutes(ControlController(node: node, token: control.token, listeners: listeners).routes, atPath: "/control") }
        router.addRoutes(HealthController(node: node, metrics: metrics, listeners: listeners).routes)
        router.addRoutes(CompatController(node: node).routes)
        router.addRoutes(VoiceController(node: node).routes)
        let api: RouterPath = "/api/v1"
        router.addRoutes(KnowledgeController(node: node).routes, atPath: api)
        router.addRoutes(IngestController(node: node).routes, atPath: api)
        router.addRoutes(AskController(node: node).routes, atPath: api)
        router.addRoutes(LedgerController(node: node).routes, atPath: api)
        router.addRoutes(DeviceController(node: node, listeners: listeners).routes, atPath: api)
        router.addRoutes(EventsController(node: node, events: events).routes, atPath: api)
        WebUI.add(to: router)
        routes.set(router.routes.map { ($0.path, $0.method) })
        return router
    }

    public static func application(
        config: HTTPConfig,
        node: any NodeAPI,
        control: ControlSurface? = nil,
        events: EventStreams = EventStreams(),
        logger: Logger,
        onRunning: @escaping @Sendable (Int) async -> Void = { _ in }
    ) throws(KianaServerError) -> some ApplicationProtocol {
        if !config.isLoopback && (config.token ?? "").isEmpty {
            throw KianaServerError(.unauthorized, "listening on \(config.host) (not loopback) needs a token: set KIANA_TOKEN or --token")
        }
        let book = HTTPConnectionBook(limits: config.limits)
        let refusals = RefusalLog()
        var http1 = HTTP1Channel.Configuration()
        // One source of deadlines: the connection guard (Hummingbird's idle timer closes without a
        // word and cannot tell a head that trickles from a body or a stalled reader).
        http1.idleTimeout = nil
        // A head of 32 KiB is plenty (cookies aside, ours are small) and bounds what a connection
        // waiting for its head deadline can pin.
        http1.httpDecoder.maxHeaderListSize = 32 * 1024
        let token = config.token
        let channelConfiguration = http1
        let controlToken = control?.token
        let server = HTTPServerBuilder { responder in
            GuardedHTTP1(
                responder: responder, configuration: channelConfiguration, book: book, refusals: refusals, token: token, controlToken: controlToken, logger: logger)
        }
        return Application(
            router: router(config: config, node: node, control: control, events: events, connections: book),
            server: server,
            configuration: .init(address: .hostname(config.host, port: config.port), serverName: "kiana", backlog: config.limits.backlog),
            onServerRunning: { channel in
                // Drain a burst of connections faster than NIO's default 4 per wake-up, so a
                // flood's refusals do not hold up a real client's accept.
                try? await channel.setOption(.maxMessagesPerRead, value: 16).get()
                await onRunning(channel.localAddress?.port ?? config.port)
            },
            logger: logger
        )
    }
}

/// Rejects requests without `Authorization: Bearer <token>` (constant-time comparison).
struct BearerTokenMiddleware<Context: RequestContext>: RouterMiddleware {
    let token: String

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        // The UI's static files hold no data and a browser cannot attach a header when it opens
        // a page; the UI then asks for the token and sends it with every API call.
        if request.method == .get || request.method == .head, WebUI.files[request.uri.path] != nil { return try await next(request, context) }
        // The control surface has its own, stronger token (from the data directory, new at each
        // start); the local CLI sends that one, not the API token.
        if request.uri.path.hasPrefix("/control/") { return try await next(request, context) }
        guard let given = request.headers[.authorization] else {
            throw HTTPError(.unauthorized, message: "a bearer token is required (Authorization: Bearer <token>; `kiana token` prints it)")
        }
        guard Self.matches(given, token: Array(token.utf8)) else {
            throw HTTPError(.unauthorized, message: "the bearer token is wrong (the token the node was started with: its --token, KIANA_TOKEN or http.token if given, otherwise what `kiana token` prints on the node)")
        }
        return try await next(request, context)
    }

    /// Whether an Authorization header value is `Bearer <token>`: the scheme in any case
    /// (RFC 9110 §11.1), spaces after it; the token compared in constant time.
    static func matches(_ header: String, token: [UInt8]) -> Bool {
        let bytes = Array(header.utf8)
        guard bytes.count > 7, Array(bytes[0..<6]).map({ $0 | 0x20 }) == Array("bearer".utf8), bytes[6] == 0x20 else { return false }
        let rest = bytes[6...].drop { $0 == 0x20 }
        return equal(Array(rest), token)
    }

    static func equal(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        var diff = UInt8(a.count == b.count ? 0 : 1)
        for i in 0..<min(a.count, b.count) { diff |= a[i] ^ b[i] }
        return diff == 0
    }
}

extension KianaServerError {
    /// A user-facing error for failures to listen (port taken, address not available), or nil.
    public static func listening(_ error: any Error, config: HTTPConfig) -> KianaServerError? {
        guard let io = error as? IOError else { return nil }
        switch io.errnoCode {
        case EADDRINUSE:
            return KianaServerError(
                .listen, "cannot listen on \(config.host):\(config.port): the port is already in use (another node? choose one with --port)")
        case EADDRNOTAVAIL, EACCES:
            return KianaServerError(.listen, "cannot listen on \(config.host):\(config.port): \(io.description)")
        default:
            return nil
        }
    }
}
