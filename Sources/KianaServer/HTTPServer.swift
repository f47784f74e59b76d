import Hummingbird
import KianaCore
import KianaStore
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

    public init(host: String = "127.0.0.1", port: Int = 8000, token: String? = nil) {
        self.host = host
        self.port = port
        self.token = token
    }

    public var isLoopback: Bool { Loopback.isLoopbackHost(host) }
}

/// Builds the node's HTTP application. Until the HTTP issue lands it serves a status page and
/// `/health`; the full API, web UI and compatible endpoints come later.
public enum KianaHTTP {
    public static func application(
        config: HTTPConfig,
        store: LedgerStore,
        deviceID: DeviceID,
        control: ControlSurface? = nil,
        assistant: (any AssistantAPI)? = nil,
        knowledge: (any KnowledgeAPI)? = nil,
        events: EventStreams = EventStreams(),
        logger: Logger,
        onRunning: @escaping @Sendable (Int) async -> Void = { _ in }
    ) throws(KianaServerError) -> some ApplicationProtocol {
        if !config.isLoopback && (config.token ?? "").isEmpty {
            throw KianaServerError(.unauthorized, "listening on \(config.host) (not loopback) needs a token: set KIANA_TOKEN or --token")
        }
        let router = Router()
        let metrics = Metrics()
        router.add(middleware: MetricsMiddleware(metrics: metrics))
        router.add(middleware: APIErrorMiddleware())
        router.add(middleware: BrowserGuardMiddleware(checkHost: config.isLoopback))
        if let token = config.token, !token.isEmpty {
            router.add(middleware: BearerTokenMiddleware(token: token))
        }
        control?.add(to: router)
        if let assistant { CompatRoutes(assistant: assistant).add(to: router) }
        if let knowledge {
            RestRoutes(knowledge: knowledge, store: store, metrics: metrics, network: control?.network, events: events).add(to: router)
        }
        router.get("/health") { _, _ -> Response in
            let head = try? store.head()
            let body = """
                {"status":"ok","deviceId":"\(deviceID)","height":\(head.map { String($0.height) } ?? "null")}
                """
            return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: body)))
        }
        WebUI.add(to: router)
        return Application(
            router: router,
            configuration: .init(address: .hostname(config.host, port: config.port), serverName: "kiana"),
            onServerRunning: { channel in await onRunning(channel.localAddress?.port ?? config.port) },
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
        if request.method == .get, WebUI.files[request.uri.path] != nil { return try await next(request, context) }
        let given = request.headers[.authorization] ?? ""
        let expected = "Bearer " + token
        guard Self.equal(Array(given.utf8), Array(expected.utf8)) else {
            throw HTTPError(.unauthorized, message: "a bearer token is required")
        }
        return try await next(request, context)
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
            return KianaServerError(.listen, "cannot listen on \(config.host):\(config.port): the port is already in use (another node? choose one with --port)")
        case EADDRNOTAVAIL, EACCES:
            return KianaServerError(.listen, "cannot listen on \(config.host):\(config.port): \(io.description)")
        default:
            return nil
        }
    }
}
