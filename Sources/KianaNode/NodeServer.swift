import Foundation
import KianaCore
import KianaServer
import Logging
import ServiceLifecycle

/// Runs a node: opens (or creates) the data directory and runs every long-lived service in one
/// ServiceGroup until SIGINT or SIGTERM, then shuts down gracefully.
public enum NodeServer {
    public static func run(directory: DataDirectory, http: HTTPConfig, logger: Logger,
                           onReady: @escaping @Sendable (Node, Int) -> Void = { _, _ in }) async throws {
        let (node, created) = try Node.openOrInitialize(directory: directory)
        if created {
            logger.notice("created a new network", metadata: ["dataDir": .string(directory.path)])
        }
        let app = try KianaHTTP.application(config: http, store: node.store, deviceID: node.identity.deviceID, logger: logger) { port in
            onReady(node, port)
        }
        let group = ServiceGroup(configuration: .init(
            services: [.init(service: app)],
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger))
        do {
            try await group.run()
        } catch {
            if let friendly = KianaServerError.listening(error, config: http) { throw friendly }
            throw error
        }
        logger.notice("node stopped")
    }
}
