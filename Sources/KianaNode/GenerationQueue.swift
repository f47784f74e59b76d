import Foundation

/// Runs at most `limit` generations at once; up to `waitingLimit` more wait in order, and
/// beyond that a request is refused at once with `busy` (HTTP 503) instead of piling up. A
/// waiting request whose task is cancelled (its client went away) leaves the queue.
final class GenerationQueue: @unchecked Sendable {
    let limit: Int
    let waitingLimit: Int
    private let lock = NSLock()
    private var running = 0
    private var waiting: [(id: UInt64, continuation: CheckedContinuation<Void, any Error>)] = []
    private var nextID: UInt64 = 0

    init(limit: Int, waitingLimit: Int) {
        self.limit = limit
        self.waitingLimit = waitingLimit
    }

    /// Whether a request arriving now would run or wait (not be refused).
    var hasRoom: Bool { lock.withLock { running < limit || waiting.count < waitingLimit } }

    func run<T: Sendable>(_ body: @Sendable () async throws -> T) async throws -> T {
        try await enter()
        defer { leave() }
        return try await body()
    }

    private func enter() async throws {
        let id: UInt64? = try lock.withLock {
            if running < limit { running += 1; return nil }
            guard waiting.count < waitingLimit else {
                throw KianaNodeError(.busy, "the language model is busy with \(waiting.count + running) requests; try again shortly")
            }
            nextID += 1
            return nextID
        }
        guard let id else { return }
        // `running` is handed over by `leave` when this waiter is resumed normally.
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
                lock.withLock {
                    if Task.isCancelled { c.resume(throwing: CancellationError()) } else { waiting.append((id, c)) }
                }
            }
        } onCancel: {
            let c = lock.withLock { () -> CheckedContinuation<Void, any Error>? in
                guard let i = waiting.firstIndex(where: { $0.id == id }) else { return nil }
                return waiting.remove(at: i).continuation
            }
            c?.resume(throwing: CancellationError())
        }
    }

    private func leave() {
        let next = lock.withLock { () -> CheckedContinuation<Void, any Error>? in
            if waiting.isEmpty { running -= 1; return nil }
            return waiting.removeFirst().continuation
        }
        next?.resume()
    }
}
