import Foundation
import KianaAI
import KianaCore
import KianaStore
import Logging
import ServiceLifecycle

/// Embeds knowledge items that have no vector yet, whichever way they arrived (written here,
/// synced from another device, imported), in batches, until graceful shutdown. Full-text
/// indexing needs no service: triggers keep it in the same transaction as the item. Without a
/// model the node keeps serving and says once that semantic search waits for the model.
struct IndexingService: Service, CustomStringConvertible {
    /// The name ServiceLifecycle logs: the default would dump the node (data directory, keys' public halves).
    var description: String { "IndexingService" }

    let node: Node
    let models: ModelHost
    let logger: Logger
    var idle: Duration = .seconds(1)
    var batch = 16

    func run() async throws {
        let store = node.searchStore
        // The model (≈ 90 MB, checksummed) is loaded only once there is something to embed, so
        // a node with nothing waiting starts fast and stays small.
        await cancelWhenGracefulShutdown {
            var embedder: Embedder?
            while !Task.isCancelled {
                do {
                    let batch = self.batch
                    let todo = try await blocking { try store.itemsNeedingVectors(model: Embedder.modelName, limit: batch) }
                    if todo.isEmpty {
                        try await Task.sleep(for: idle)
                        continue
                    }
                    if embedder == nil {
                        do {
                            embedder = try await models.embedder()
                        } catch is CancellationError {
                            return
                        } catch {
                            logger.warning("semantic indexing off: embedding model unavailable", metadata: ["reason": .string(Node.describe(error))])
                            return
                        }
                    }
                    guard let e = embedder else { return }
                    // Seconds of work per batch on a small machine: on a thread of its own, not
                    // on the shared pool that store reads (/health, search) need meanwhile.
                    // One thread, at background priority, one batch in the process at a time
                    // (`Indexing.embedExclusively`): the other core stays free for requests.
                    let one = e.withThreads(1)
                    let vectors = try await inBackground { Indexing.embedExclusively(one, todo.map(\.text)) }
                    let saved = try await blocking { try store.saveVectors(Array(zip(todo, vectors)), model: Embedder.modelName) }
                    logger.debug("embedded knowledge items", metadata: ["count": .stringConvertible(saved)])
                    if saved == 0 { try await Task.sleep(for: idle) }
                } catch is CancellationError {
                    return
                } catch {
                    logger.error("indexing failed; retrying", metadata: ["reason": .string(Node.describe(error))])
                    try? await Task.sleep(for: .seconds(5))
                }
            }
        }
    }
}
