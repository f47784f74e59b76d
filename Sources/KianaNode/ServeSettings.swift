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
    /// Lines for the person starting the node (e.g. that clients need the token).
    public var notes: [String] = []

    public static func resolve(
        _ flags: Flags, directory: DataDirectory,
        environment env: [String: String] = ProcessInfo.processInfo.environment
    ) throws(KianaNodeError) -> ServeSettings {
        func int(_ flag: Int?, _ key: String, _ fallback: Int) throws(KianaNodeError) -> Int {
            if let flag { return flag }
            guard let text = env[key], !text.isEmpty else { return fallback }
            guard let v = Int(text) else { throw KianaNodeError(.invalidInput, "\(key) must be a number, not \(text)") }
            return v
        }
        var http = HTTPConfig(
            host: flags.host ?? env["KIANA_HOST"] ?? "127.0.0.1",
            port: try int(flags.port, "KIANA_PORT", 8000),
            token: flags.token ?? env["KIANA_TOKEN"].flatMap { $0.isEmpty ? nil : $0 })
        var net = NetworkConfig()
        net.host = flags.p2pHost ?? env["KIANA_P2P_HOST"] ?? "0.0.0.0"
        net.port = try int(flags.p2pPort, "KIANA_P2P_PORT", 8470)
        net.discoveryInterface = flags.discoveryInterface ?? env["KIANA_DISCOVERY_INTERFACE"]
        // Sync limits (docs/decisions.md 89): how long a member whose blocks were refused stays cut
        // off, and how far past its stated head a peer may stream.
        let cutOff = try int(nil, "KIANA_PEER_CUTOFF_SECONDS", 60)
        guard (1...86_400).contains(cutOff) else { throw KianaNodeError(.invalidInput, "KIANA_PEER_CUTOFF_SECONDS must be 1...86400") }
        net.cutOffBackoff = .seconds(cutOff)
        let growth = try int(nil, "KIANA_SYNC_MAX_GROWTH", 10_000)
        guard (1...10_000_000).contains(growth) else { throw KianaNodeError(.invalidInput, "KIANA_SYNC_MAX_GROWTH must be 1...10000000") }
        net.sync.maxGrowth = UInt64(growth)
        net.name = flags.name
        guard (0...65535).contains(http.port), (0...65535).contains(net.port) else {
            throw KianaNodeError(.invalidInput, "ports must be between 0 and 65535")
        }
        let discovery = (flags.discovery ?? env["KIANA_DISCOVERY"] ?? "on").lowercased()
        guard ["on", "off"].contains(discovery) else { throw KianaNodeError(.invalidInput, "--discovery must be on or off") }
        net.discovery = discovery == "on"
        let levelText = env["KIANA_LOG_LEVEL"] ?? "notice"
        guard let level = Logger.Level(rawValue: levelText) else {
            throw KianaNodeError(.invalidInput, "KIANA_LOG_LEVEL must be one of trace, debug, info, notice, warning, error, critical")
        }
        var notes: [String] = []
        if !http.isLoopback && http.token == nil {
            // Off loopback the node's own API token (made by init, shown by `kiana token`) is required.
            http.token = try directory.apiToken()
            notes.append("listening on \(http.host): clients need `Authorization: Bearer <token>`; `kiana token` prints it")
        }
        return ServeSettings(http: http, network: net, logLevel: level, notes: notes)
    }
}
