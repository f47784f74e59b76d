import Foundation
import KianaNet
import KianaServer
import Logging

/// How `kiana serve` runs, resolved from flags > environment (`KIANA_*`) > defaults in one
/// place, so the CLI only parses.
public struct ServeSettings: Sendable {
    /// What was given on the command line; nil means "not given".
    public struct Flags: Sendable {
        public var host: String?
        public var port: Int?
        public var token: String?
        public var p2pHost: String?
        public var p2pPort: Int?
        public var discovery: String?
        public var discoveryInterface: String?
        public var name: String?
        public init(
            host: String? = nil, port: Int? = nil, token: String? = nil, p2pHost: String? = nil, p2pPort: Int? = nil,
            discovery: String? = nil, discoveryInterface: String? = nil, name: String? = nil
        ) {
            self.host = host
            self.port = port
            self.token = token
            self.p2pHost = p2pHost
            self.p2pPort = p2pPort
            self.discovery = discovery
            self.discoveryInterface = discoveryInterface
            self.name = name
        }
    }

    public var http: HTTPConfig
    public var network: NetworkConfig
    public var logLevel: Logger.Level
    public var logFormat: LogFormat
    /// Every setting as resolved (flag > environment > config.json > default).
    public var config: KianaConfig
    /// Lines for the person starting the node (e.g. that clients need the token).
    public var notes: [String] = []

    public static func resolve(
        _ flags: Flags, extra: [String: String] = [:], directory: DataDirectory,
        environment env: [String: String] = ProcessInfo.processInfo.environment
    ) throws(KianaNodeError) -> ServeSettings {
        var given = extra
        given["http.host"] = flags.host
        given["http.port"] = flags.port.map(String.init)
        given["http.token"] = flags.token
        given["p2p.host"] = flags.p2pHost
        given["p2p.port"] = flags.p2pPort.map(String.init)
        given["discovery.enabled"] = flags.discovery?.lowercased()
        given["discovery.interface"] = flags.discoveryInterface
        given["device.name"] = flags.name
        let config = try KianaConfig.resolve(flags: given, environment: env, directory: directory)
        var http = HTTPConfig(host: config.text("http.host") ?? "127.0.0.1", port: config.number("http.port") ?? 8000, token: config.text("http.token"))
        http.limits = HTTPLimits(config)
        var net = NetworkConfig()
        net.host = config.text("p2p.host") ?? "0.0.0.0"
        net.port = config.number("p2p.port") ?? 8470
        net.discoveryInterface = config.text("discovery.interface")
        // Sync limits (docs/decisions.md 89): how long a member whose blocks were refused stays cut
        // off, and how far past its stated head a peer may stream.
        net.cutOffBackoff = .seconds(config.number("sync.cutoffSeconds") ?? 60)
        net.sync.maxGrowth = UInt64(config.number("sync.maxGrowth") ?? 10_000)
        net.name = config.text("device.name")
        net.discovery = config.text("discovery.enabled") != "off"
        try checkListenHost(http.host, "http.host (--host)")
        try checkListenHost(net.host, "p2p.host (--p2p-host)")
        let level = config.text("log.level").flatMap(Logger.Level.init(rawValue:)) ?? .notice
        var notes: [String] = []
        if !http.isLoopback && http.token == nil {
            // Off loopback the node's own API token (made by init, shown by `kiana token`) is required.
            http.token = try directory.apiToken()
            notes.append("listening on \(http.host): clients need `Authorization: Bearer <token>`; `kiana token` prints it")
        }
        let format = config.text("log.format").flatMap(LogFormat.init(rawValue:)) ?? .logfmt
        return ServeSettings(http: http, network: net, logLevel: level, logFormat: format, config: config, notes: notes)
    }
}

extension ServeSettings {
    /// A listen address must resolve here, or the node fails later with the resolver's words.
    static func checkListenHost(_ host: String, _ setting: String) throws(KianaNodeError) {
        var hints = addrinfo()
        hints.ai_flags = AI_PASSIVE
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var found: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, nil, &hints, &found)
        if let found { freeaddrinfo(found) }
        guard rc == 0 else {
            throw KianaNodeError(
                .invalidInput,
                "\(setting): cannot listen on \"\(host)\" (\(String(cString: gai_strerror(rc)))): give an address of this machine such as 127.0.0.1, 0.0.0.0 or ::1")
        }
    }
}

extension HTTPLimits {
    /// The limits the `http.*` settings give (docs/decisions.md 102).
    public init(_ config: KianaConfig) {
        self.init()
        headTimeout = .seconds(config.number("http.headTimeoutSeconds") ?? 10)
        idleTimeout = .seconds(config.number("http.idleTimeoutSeconds") ?? 60)
        minBodyRate = config.number("http.minBodyRate") ?? 500
        writeStallTimeout = .seconds(config.number("http.writeStallSeconds") ?? 30)
        maxConnections = config.number("http.maxConnections") ?? 1024
        maxPerSource = config.number("http.maxPerSource") ?? 64
        trustedReserve = min(64, maxConnections / 4)
    }
}
