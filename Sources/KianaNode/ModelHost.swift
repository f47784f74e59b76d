import Foundation
import Logging
import ServiceLifecycle
import KianaStore
import KianaAI
import Synchronization

/// The node's loaded models, shared by everything that needs them (answers, search, the
/// indexing service): the embedder and the language-model backend are each loaded once, on
/// first use (node start stays light), then kept.
public final class ModelHost: Sendable {
    public let modelDirectory: String
    public let config: BackendConfig
    struct Loaded {
        var backend: (any ChatBackend)?
        var embedder: Embedder?
    }
    private let loaded = Mutex(Loaded())
    /// Serialises loading, so two first requests do not both load 90 MB.
    private let loading = AsyncLock()

    public init(modelDirectory: String, config: BackendConfig) {
        self.modelDirectory = modelDirectory
        self.config = config
    }

    /// The embedder, loaded (and checked) on first use.
    public func embedder() async throws -> Embedder {
        if let e = loaded.withLock({ $0.embedder }) { return e }
        return try await loading.run {
            if let e = loaded.withLock({ $0.embedder }) { return e }
            let dir = modelDirectory
            let e = try await blocking { try Node.loadEmbedder(modelDirectory: dir) }
            loaded.withLock { $0.embedder = e }
            return e
        }
    }

    /// The chat backend (embedded model, Ollama or an OpenAI-compatible server).
    public func backend() async throws -> any ChatBackend {
        if let b = loaded.withLock({ $0.backend }) { return b }
        return try await loading.run {
            if let b = loaded.withLock({ $0.backend }) { return b }
            let config = self.config
            let dir = modelDirectory
            let b = try await blocking { try config.make(modelDirectory: dir) }
            loaded.withLock { $0.backend = b }
            return b
        }
    }

    /// True once both models are loaded.
    /// True once the language model backend is loaded.
    public var backendLoaded: Bool { loaded.withLock { $0.backend != nil } }
    public var allLoaded: Bool { loaded.withLock { $0.backend != nil && $0.embedder != nil } }
}

/// A lock for async code: one body at a time, in arrival order, without blocking a thread.
final class AsyncLock: Sendable {
    private struct State {
        var held = false
        var waiting: [CheckedContinuation<Void, Never>] = []
    }
    private let state = Mutex(State())

    func run<T: Sendable>(_ body: () async throws -> T) async throws -> T {
        await acquire()
        defer { release() }
        return try await body()
    }

    private func acquire() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now = state.withLock { s -> Bool in
                if s.held {
                    s.waiting.append(c)
                    return false
                }
                s.held = true
                return true
            }
            if now { c.resume() }
        }
    }

    private func release() {
        let next = state.withLock { s -> CheckedContinuation<Void, Never>? in
            if s.waiting.isEmpty {
                s.held = false
                return nil
            }
            return s.waiting.removeFirst()
        }
        next?.resume()
    }
}

/// Loads both models right after start (`models.preload`), so /ready turns true without a first
/// question: for services and containers whose health check waits on /ready. Failures (a model
/// missing) are logged; the node keeps serving and loads on first use as without it.
struct ModelWarmup: Service, CustomStringConvertible {
    var description: String { "ModelWarmup" }

    let models: ModelHost
    let logger: Logger

    func run() async throws {
        await cancelWhenGracefulShutdown {
            do {
                _ = try await models.embedder()
                _ = try await models.backend()
                logger.notice("models loaded")
            } catch {
                logger.warning("models could not be preloaded", metadata: ["error": .string(ErrorLine.text(for: error))])
            }
        }
    }
}
