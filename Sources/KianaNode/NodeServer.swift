import Foundation
import KianaStore
import KianaAI
import KianaCore
import KianaNet
import KianaServer
import NIOCore
import Logging
import ServiceLifecycle
import Synchronization

/// Runs a node: opens (or creates) the data directory and runs every long-lived service in one
/// ServiceGroup (link listener, dialer, discovery, HTTP) until SIGINT or SIGTERM, then shuts
/// down gracefully (mDNS goodbye, links closed, HTTP drained).
public enum NodeServer {
    /// Called once HTTP and the link listener listen: the node, the HTTP port, the P2P port.
    public typealias Ready = @Sendable (Node, Int, Int) -> Void

    /// Runs with settings resolved by `ServeSettings.resolve`.
    public static func run(
        directory: DataDirectory, settings: ServeSettings, modelDirectory: String? = nil, logger: Logger,
        onReady: @escaping Ready = { _, _, _ in }
    ) async throws {
        try await run(
            directory: directory, http: settings.http, network: settings.network, backend: try BackendConfig(settings.config).validated(),
            preloadModels: settings.config.text("models.preload") == "on", modelDirectory: modelDirectory, voice: VoiceSettings(settings.config),
            logger: logger, onReady: onReady)
    }

    public static func run(
        directory: DataDirectory, http: HTTPConfig, network netConfig: NetworkConfig = NetworkConfig(), backend: BackendConfig? = nil,
        preloadModels: Bool = false, modelDirectory: String? = nil, voice: VoiceSettings? = nil, logger: Logger,
        onReady: @escaping Ready = { _, _, _ in }
    ) async throws {
        // One node per data directory, held until this process ends; taken before anything is
        // written, so a second node changes nothing (not node.json, not the control token).
        let lock = try directory.lockForServing()
        directory.removeStaleTemporaries()
        let http = try budgeted(http, network: netConfig, logger: logger)
        defer { withExtendedLifetime(lock) {} }
        // A key rotation another device holds: the new keys take over now. One still waiting
        // for that keeps the old key, so this node can pass the rotation on.
        if directory.hasIdentity, FileManager.default.fileExists(atPath: directory.nextKeysPath) {
            do {
                if try KeyRotation.promoteIfRotated(directory: directory) {
                    logger.notice("key rotation finished: this device now uses its new key")
                } else {
                    logger.warning("a key rotation waits for another device to hold it: keep this node linked, then run `kiana device rotate` again")
                }
            } catch {
                logger.error("a key rotation could not be finished; the node keeps its current key", metadata: ["error": .string(ErrorLine.text(for: error))])
            }
        }
        // The start-up check runs on a read-only connection before anything opens the file for
        // writing (a writer's open alone touches it): a damaged ledger is left exactly as it is.
        // Verification reads the whole chain and checks signatures: off the cooperative pool.
        var check: StartupCheck?
        if directory.hasIdentity, FileManager.default.fileExists(atPath: directory.databasePath) {
            if let refusal = Node.damageRefusal(directory) { throw refusal }
            let probe: Node?
            do {
                probe = try Node.open(directory: directory, forReading: true)
            } catch {
                // Keys without a ledger: `openOrInitialize` below says what to do. Anything else stops here.
                guard (error as? KianaNodeError)?.code == .notInitialized else {
                    if (error as? any KianaError)?.code == .corrupt { directory.markDamaged(ErrorLine.text(for: error)) }
                    throw error
                }
                probe = nil
            }
            if let probe { check = try await blocking { try probe.startupCheck() } }
        }
        let (node, created) = try Node.openOrInitialize(directory: directory)
        if created { logger.notice("created a new network", metadata: ["dataDir": .string(directory.path)]) }
        // A ledger created just now (or keys without one until now) is checked here.
        if check == nil { check = try await blocking { try node.startupCheck() } }
        guard let check else { throw KianaNodeError(.internal, "the ledger was not checked") }
        try? node.store.recordVerified(check.mark)
        if check.markMismatch {
            logger.warning("stored blocks below the verified mark changed since they were verified; all were verified again", metadata: ["markHeight": .stringConvertible(check.previouslyVerified ?? 0)])
        }
        logger.info("ledger checked", metadata: ["height": .stringConvertible(check.height), "newlyVerified": .stringConvertible(check.newlyVerified)])
        // The peer layer signs nothing: sealing entries a reorg returned to the pending pool is the node's.
        // Signing stuck writes again (decision 111) is looked for only when the head or the
        // pending pool changed since the last look: its queries are not for every tick.
        let lookedAt = Mutex<String?>(nil)
        let counters = SyncCounters()
        let seal: @Sendable () async -> Void = {
            guard
                let run = try? await blocking({ () throws -> LedgerStore.SealRun in
                    let mark = "\(Hex.encode(try node.store.head()?.hash ?? []))/\(try node.store.pendingCount())"
                    let changed = lookedAt.withLock { $0 != mark }
                    let run = try node.sealPendingIfAuthority(resign: changed)
                    // Only a look that succeeded counts (a busy database is looked at again).
                    if changed { lookedAt.withLock { $0 = mark } }
                    return run
                })
            else { return }
            if run.resigned + run.retired > 0 {
                counters.update {
                    $0.resigned += run.resigned
                    $0.retired += run.retired
                }
            }
            if run.resigned > 0 {
                // This device's key had used these sequence numbers for other entries (decision 111).
                logger.notice(
                    "re-signed writes whose sequence numbers this device had already used elsewhere; was this data directory restored from an older copy, or does another copy run with the same keys?",
                    metadata: ["entries": .stringConvertible(run.resigned)])
            }
            if run.retired > 0 {
                logger.info("retired stuck entries whose content landed under another sequence number", metadata: ["entries": .stringConvertible(run.retired)])
            }
            if run.blocks > 0 {
                logger.debug("sealed pending entries", metadata: ["blocks": .stringConvertible(run.blocks), "entries": .stringConvertible(run.entries)])
            }
        }
        let network = PeerNetwork(
            store: node.store, identity: node.identity, config: netConfig, logger: logger,
            hooks: .init(afterImport: seal, tick: seal), counters: counters)
        let token = try directory.writeControlToken()
        let ports = ReadyPorts()
        let announce: @Sendable () -> Void = {
            guard let (h, p) = ports.both() else { return }
            directory.writeRuntime(
                NodeRuntime(http: "http://\(Self.localHost(http.host)):\(h)", p2pHost: netConfig.host, p2pPort: p, pid: Int(getpid())))
            onReady(node, h, p)
        }
        // One model host: the embedder is loaded once for both the indexer and answers.
        let models = ModelHost(modelDirectory: modelDirectory ?? directory.path + "/models", config: try backend ?? BackendConfig.load(directory: directory))
        let voiceSettings = try voice ?? VoiceSettings(KianaConfig.resolve(directory: directory))
        let service = NodeService(node: node, models: models, network: network, voice: Voice(settings: voiceSettings))
        let app = try KianaHTTP.application(config: http, node: service, control: ControlSurface(token: token), logger: logger) { port in
            ports.setHTTP(port)
            announce()
        }
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [
            .init(
                service: network.listener { port in
                    ports.setP2P(port)
                    announce()
                }),
            .init(service: network.dialer),
            .init(service: network.announcer),
        ]
        if netConfig.discovery {
            services.append(
                .init(
                    service: network.discovery(interface: netConfig.discoveryInterface, name: netConfig.name),
                    successTerminationBehavior: .ignore, failureTerminationBehavior: .ignore))
        }
        services.append(
            .init(
                service: IndexingService(node: node, models: models, logger: logger),
                successTerminationBehavior: .ignore, failureTerminationBehavior: .ignore))
        if preloadModels {
            services.append(.init(service: ModelWarmup(models: models, logger: logger), successTerminationBehavior: .ignore, failureTerminationBehavior: .ignore))
        }
        services.append(.init(service: app))
        var groupConfig = ServiceGroupConfiguration(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        // A service still shutting down after 15 s is cancelled (systemd's TimeoutStopSec is 30 s).
        groupConfig.maximumGracefulShutdownDuration = .seconds(15)
        let group = ServiceGroup(configuration: groupConfig)
        defer { directory.removeRuntime() }
        do {
            try await group.run()
        } catch let e as KianaNetError {
            throw KianaNodeError(.network, e.message, cause: e)
        } catch {
            if let friendly = KianaServerError.listening(error, config: http) { throw friendly }
            throw error
        }
        logger.notice("node stopped")
    }
}

extension NodeServer {
    /// Where a process on this machine reaches a listener bound to `host`: a wildcard listener
    /// on loopback, any other address as it is (IPv6 in brackets).
    public static func localHost(_ host: String) -> String {
        // (A listener on :: takes IPv4 too, and 127.0.0.1 exists where ::1 may not.)
        if ["0.0.0.0", "", "*", "::", "[::]"].contains(host) { return "127.0.0.1" }
        return host.contains(":") && !host.hasPrefix("[") ? "[\(host)]" : host
    }

    /// Raises the open-file limit to the hard limit and divides it (`DescriptorBudget`); HTTP's
    /// cap becomes its share when that is smaller than configured. Refuses to start when the
    /// limit leaves HTTP too little.
    static func budgeted(_ http: HTTPConfig, network: NetworkConfig, logger: Logger) throws(KianaNodeError) -> HTTPConfig {
        let raised = DescriptorBudget.raiseLimit()
        guard
            let budget = DescriptorBudget.divide(
                limit: raised.now, softLimitAtStart: raised.before, hardLimit: raised.hard, link: network.link,
                httpConfigured: http.limits.maxConnections)
        else {
            throw KianaNodeError(
                .invalidInput,
                "the open-file limit (\(raised.now), hard \(raised.hard)) is too small for a node, which needs \(DescriptorBudget.minimumLimit(link: network.link)) or more: raise it (`ulimit -n 4096`, or LimitNOFILE= in the service unit)")
        }
        var http = http
        if budget.httpCap < http.limits.maxConnections {
            logger.warning(
                "HTTP connections capped by the open-file limit",
                metadata: ["configured": .stringConvertible(http.limits.maxConnections), "cap": .stringConvertible(budget.httpCap)])
            http.limits.maxConnections = budget.httpCap
            http.limits.trustedReserve = min(http.limits.trustedReserve, budget.httpCap / 4)
        }
        http.budget = budget
        logger.info(
            "descriptor budget",
            metadata: [
                "limit": .stringConvertible(budget.limit), "softLimitAtStart": .stringConvertible(budget.softLimitAtStart),
                "http": .stringConvertible(budget.httpCap), "p2p": .stringConvertible(budget.p2p),
            ])
        return http
    }
}

/// Ports reported by the two listeners, so readiness is announced once both are up.
final class ReadyPorts: Sendable {
    struct State {
        var http: Int?
        var p2p: Int?
        var announced = false
    }
    private let state = Mutex(State())
    func setHTTP(_ p: Int) { state.withLock { $0.http = p } }
    func setP2P(_ p: Int) { state.withLock { $0.p2p = p } }
    /// Both ports, the first time both are known.
    func both() -> (Int, Int)? {
        state.withLock { s in
            guard !s.announced, let http = s.http, let p2p = s.p2p else { return nil }
            s.announced = true
            return (http, p2p)
        }
    }
}
