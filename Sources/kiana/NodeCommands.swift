import ArgumentParser
import Foundation
import KianaCore
import KianaNode
import Logging

struct Init: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Create this device's keys and a new network with it as the only authority.")
    @OptionGroup var data: DataOptions
    @Option(help: "A name for the network.") var name: String?

    func run() throws {
        try perform {
            // One init at a time, and none beside a node, a join or a restore in the directory.
            let directory = try data.directory
            try Node.checkNetworkName(name)
            let lock = try directory.lockForServing()
            let node = try withExtendedLifetime(lock) { try Node.initialize(directory: directory, name: name) }
            say("Initialized a new KI_ana network in \(node.directory.path)")
            say("Device ID:  \(node.identity.deviceID)")
            say("Network ID: \(Hex.encode(try node.network() ?? []))")
        }
    }
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the node (web UI on http://127.0.0.1:8000) until Ctrl-C.")
    @OptionGroup var data: DataOptions
    @Option(help: "Address to listen on (default $KIANA_HOST or 127.0.0.1).") var host: String?
    @Option(help: "Port to listen on, 0 for any free port (default $KIANA_PORT or 8000).") var port: Int?
    @Option(help: "Bearer token required of clients (default $KIANA_TOKEN); needed off loopback.") var token: String?
    @Option(name: .customLong("p2p-host"), help: "Address the device link listener binds (default $KIANA_P2P_HOST or 0.0.0.0).") var p2pHost: String?
    @Option(name: .customLong("p2p-port"), help: "Port for device links, 0 for any free port (default $KIANA_P2P_PORT or 8470).") var p2pPort: Int?
    @Option(help: "Multicast DNS discovery: on or off (default $KIANA_DISCOVERY or on).") var discovery: String?
    @Option(name: .customLong("discovery-interface"), help: "Limit discovery to this network interface.") var discoveryInterface: String?
    @Option(help: "A name for this device, shown to peers (default $KIANA_DEVICE_NAME).") var name: String?
    @Option(help: "Lowest level logged: trace, debug, info, notice, warning, error, critical (default $KIANA_LOG_LEVEL or notice).") var logLevel: String?
    @Option(help: "Log lines as logfmt or json (default $KIANA_LOG_FORMAT or logfmt).") var logFormat: String?
    @Option(help: "Where item vectors are searched: builtin or chroma (default $KIANA_VECTOR_BACKEND or builtin).") var vectorBackend: String?
    @Option(help: "The Chroma server when --vector-backend is chroma (default $KIANA_VECTOR_URL or http://127.0.0.1:8200).") var vectorUrl: String?
    @Option(help: "Seconds a member whose blocks were refused stays cut off (default $KIANA_PEER_CUTOFF_SECONDS or 60).") var peerCutoffSeconds: Int?
    @Option(help: "Blocks past its stated head a peer may stream (default $KIANA_SYNC_MAX_GROWTH or 10000).") var syncMaxGrowth: Int?
    @Option(help: "Load the models at start so /ready is true at once: on or off (default $KIANA_MODELS_PRELOAD or off).") var preloadModels: String?
    @OptionGroup var httpLimits: HTTPLimitFlags
    @OptionGroup var voice: VoiceFlags
    @Option(help: "The longest recording transcribed, in seconds (default $KIANA_VOICE_MAX_SECONDS or 120).") var voiceMaxSeconds: Int?
    @OptionGroup var model: ModelOptions
    @OptionGroup var backend: BackendFlags

    func run() async throws {
        try await performAsync {
            let directory = try data.directory
            let flags = ServeSettings.Flags(
                host: host, port: port, token: token, p2pHost: p2pHost, p2pPort: p2pPort,
                discovery: discovery, discoveryInterface: discoveryInterface, name: name)
            var extra = backend.given
            extra["log.level"] = logLevel
            extra["log.format"] = logFormat
            extra["sync.cutoffSeconds"] = peerCutoffSeconds.map(String.init)
            extra["sync.maxGrowth"] = syncMaxGrowth.map(String.init)
            extra["models.preload"] = preloadModels
            extra["models.dir"] = model.modelDir
            extra["vector.backend"] = vectorBackend
            extra["vector.url"] = vectorUrl
            extra.merge(voice.given) { a, _ in a }
            extra.merge(httpLimits.given) { a, _ in a }
            extra["voice.maxSeconds"] = voiceMaxSeconds.map(String.init)
            let settings = try ServeSettings.resolve(flags, extra: extra, directory: directory)
            // Retrieval reads vector.* where it opens the index (KianaConfig: environment, then
            // config.json); a flag given here is passed on as the variable it outranks.
            for (key, variable) in [("vector.backend", "KIANA_VECTOR_BACKEND"), ("vector.url", "KIANA_VECTOR_URL")] {
                if extra[key] != nil, let v = settings.config.text(key) { setenv(variable, v, 1) }
            }
            StructuredLogHandler.install(format: settings.logFormat, level: settings.logLevel)
            var logger = Logger(label: "kiana")
            logger.logLevel = settings.logLevel
            if settings.logFormat == .json { Output.errorLogger.withLock { $0 = logger } }
            // Shown whatever the level: how the settings were taken (a token required off loopback).
            var noticeLogger = logger
            noticeLogger.logLevel = min(logger.logLevel, .notice)
            for note in settings.notes { noticeLogger.notice("settings note", metadata: ["note": .string(note)]) }
            // An IPv6 address is bracketed in a URL.
            let shownHost = settings.http.host.contains(":") ? "[\(settings.http.host)]" : settings.http.host
            try await NodeServer.run(
                directory: directory, settings: settings, modelDirectory: LocalModels.directory(settings.config, dataDirectory: directory), logger: logger
            ) { node, port, p2p in
                say("KI_ana node \(node.identity.deviceID) serving http://\(shownHost):\(port), device links on port \(p2p) (Ctrl-C stops)")
                // Under systemd (Type=notify): ready once both listeners listen.
                SystemdUnit.notify("READY=1\nSTATUS=serving http://\(shownHost):\(port)")
            }
        }
    }
}

struct Token: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the API token that clients off loopback send as `Authorization: Bearer <token>`.")
    @OptionGroup var data: DataOptions

    func run() throws {
        try perform {
            let directory = try data.directory
            guard directory.hasIdentity else { throw KianaNodeError(.notInitialized, "\(directory.path) is not initialized; run `kiana init`") }
            // The token in effect: a configured one (flag-less here: KIANA_TOKEN or config.json's
            // http.token) replaces the data directory's api.token.
            let config = try KianaConfig.resolve(directory: directory)
            if let configured = config.values["http.token"] {
                Output.note("kiana: the token comes from \(configured.source == .environment ? "KIANA_TOKEN" : "config.json (http.token)"), not api.token")
                say(configured.text)
            } else {
                say(try directory.apiToken())
            }
        }
    }
}

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show device ID, network ID, ledger head, counts and whether the ledger verified.")
    @OptionGroup var data: DataOptions
    @OptionGroup var output: OutputOptions

    func run() throws {
        try perform {
            let node = try Node.open(directory: data.directory, forReading: true)
            var status = try node.status()
            // A node serving this directory adds what only it knows: its connections and descriptors.
            status.connections = try? NodeControl.connect(data.directory).connections()
            try output.emit(status) { s in
                say("Device ID:   \(s.device)")
                say("Identity:    \(s.identityKey)")
                say("Network ID:  \(s.network)")
                if let head = s.head { say("Head:        height \(head.height), hash \(head.hash)") }
                say("Blocks:      \(s.blocks)")
                say("Entries:     \(s.entries)")
                say("Knowledge:   \(s.items) items (\(s.forgottenItems) forgotten)")
                say("Pending:     \(s.pending)")
                for (device, count) in s.stuck.sorted(by: { $0.key < $1.key }) {
                    let mine = device == s.device
                    if count.writes > 0 {
                        say(
                            mine
                                ? "Stuck:       \(count.writes) of this device's writes reuse sequence numbers; the running node signs them again"
                                : "Stuck:       \(count.writes) writes by \(device) reuse sequence numbers; they land once that device (running this version) signs them again")
                    }
                    if count.votes > 0 {
                        say(
                            mine
                                ? "Stuck:       \(count.votes) of this device's votes reuse sequence numbers and cannot be sealed: cast them again"
                                : "Stuck:       \(count.votes) votes by \(device) reuse sequence numbers and cannot be sealed: that device must cast them again")
                    }
                }
                if s.signedAgain > 0 {
                    say("Signed again: \(s.signedAgain) of this device's writes reused sequence numbers (restored from an older copy?) and were signed again")
                }
                say("Authorities: \(s.authorities.joined(separator: ", "))")
                if s.votes.isEmpty {
                    say("Votes:       none pending")
                } else {
                    for v in s.votes { say("Vote:        \(v.action) \(v.device) (by \(v.by))") }
                }
                if let damage = s.damage {
                    say("Ledger:      DAMAGED: \(damage)")
                    say("             " + Node.recoveryAdvice)
                } else {
                    say("Ledger:      " + (s.verifiedHeight.map { "verified up to height \($0)" } ?? "not verified yet (`kiana ledger verify`)"))
                }
                say("Data dir:    \(s.dataDirectory)\(s.readOnly ? " (read-only)" : "")")
                if let c = s.connections {
                    let h = c.http
                    say(
                        "HTTP:        \(h.open) connections (\(h.active) active, \(h.idle) idle, \(h.awaitingHead) awaiting a head; cap \(h.cap), \(h.perSourceCap) per address); "
                            + "since start \(h.refused) refused, \(h.evictedIdle + h.evictedAwaitingHead) closed for room, "
                            + "\(h.headTimeouts + h.bodyTimeouts + h.writeStalls + h.idleClosed) closed at a deadline, "
                            + "\(h.lingerClosed) closed after an early answer (their body still coming)")
                    if let p = c.p2p { say("P2P:         \(p.open) inbound connections\(p.share.map { " (share \($0) descriptors)" } ?? ""); \(p.refused) refused since start") }
                    let d = c.descriptors
                    var line = "Descriptors: \(d.inUse.map(String.init) ?? "?") in use of \(d.limit.map(String.init) ?? "?")"
                    if let b = d.budget {
                        line += " (HTTP \(b.httpCap), P2P \(b.p2p), SQLite \(b.sqlite), models \(b.models), ingestion \(b.ingestion), process \(b.process), headroom \(b.headroom))"
                    }
                    say(line)
                }
            }
        }
    }
}

/// Deadlines and caps of the HTTP listener (`http.*` settings; docs/decisions.md 102).
struct HTTPLimitFlags: ParsableArguments {
    @Option(name: .customLong("http-head-timeout"), help: "Seconds a connection has to send its request head (default $KIANA_HTTP_HEAD_TIMEOUT or 10).")
    var headTimeout: Int?
    @Option(name: .customLong("http-idle-timeout"), help: "Seconds a kept-alive connection may wait for its next request (default $KIANA_HTTP_IDLE_TIMEOUT or 60).")
    var idleTimeout: Int?
    @Option(name: .customLong("http-min-body-rate"), help: "Bytes/s a request body must arrive at; slower gets 408 (default $KIANA_HTTP_MIN_BODY_RATE or 500).")
    var minBodyRate: Int?
    @Option(
        name: .customLong("http-write-stall-timeout"),
        help: "Seconds a response may wait for a client that reads nothing (default $KIANA_HTTP_WRITE_STALL_TIMEOUT or 30).")
    var writeStall: Int?
    @Option(name: .customLong("http-max-connections"), help: "HTTP connections open at once at most (default $KIANA_HTTP_MAX_CONNECTIONS or 1024).")
    var maxConnections: Int?
    @Option(name: .customLong("http-max-per-source"), help: "HTTP connections from one address at most (default $KIANA_HTTP_MAX_PER_SOURCE or 64).")
    var maxPerSource: Int?

    var given: [String: String] {
        var g: [String: String] = [:]
        g["http.headTimeoutSeconds"] = headTimeout.map(String.init)
        g["http.idleTimeoutSeconds"] = idleTimeout.map(String.init)
        g["http.minBodyRate"] = minBodyRate.map(String.init)
        g["http.writeStallSeconds"] = writeStall.map(String.init)
        g["http.maxConnections"] = maxConnections.map(String.init)
        g["http.maxPerSource"] = maxPerSource.map(String.init)
        return g
    }
}
