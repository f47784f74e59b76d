import Foundation
import Synchronization

/// Runs at most `limit` generations at once; up to `waitingLimit` more wait in order, and
/// beyond that a request is refused at once with `busy` (HTTP 503) instead of piling up. A
/// waiting request whose task is cancelled (its client went away) leaves the queue.
final class GenerationQueue: Sendable {
    let limit: Int
    let waitingLimit: Int
    struct State {
        var running = 0
        var waiting: [(id: UInt64, continuation: CheckedContinuation<Void, any Error>)] = []
        var nextID: UInt64 = 0
    }
    private let state = Mutex(State())

    init(limit: Int, waitingLimit: Int) {
        self.limit = limit
        self.waitingLimit = waitingLimit
    }

    /// Whether a request arriving now would run or wait (not be refused).
    var hasRoom: Bool {
        let (limit, waitingLimit) = (self.limit, self.waitingLimit)
        return state.withLock { $0.running < limit || $0.waiting.count < waitingLimit }
    }

    func run<T: Sendable>(_ body: @Sendable () async throws -> T) async throws -> T {
        try await enter()
        defer { leave() }
        return try await body()
    }

    private func enter() async throws {
        let (limit, waitingLimit) = (self.limit, self.waitingLimit)
        let id: UInt64? = try state.withLock { s in
            if s.running < limit {
                s.running += 1
                return nil
            }
            guard s.waiting.count < waitingLimit else {
                throw KianaNodeError(.busy, "the language model is busy with \(s.waiting.count + s.running) requests; try again shortly")
            }
            s.nextID += 1
            return s.nextID
        }
        guard let id else { return }
        // `running` is handed over by `leave` when this waiter is resumed normally.
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
                state.withLock { s in
                    if Task.isCancelled { c.resume(throwing: CancellationError()) } else { s.waiting.append((id, c)) }
                }
            }
        } onCancel: {
            let c = state.withLock { s -> CheckedContinuation<Void, any Error>? in
                guard let i = s.waiting.firstIndex(where: { $0.id == id }) else { return nil }
                return s.waiting.remove(at: i).continuation
            }
            c?.resume(throwing: CancellationError())
        }
    }

    private func leave() {
        let next = state.withLock { s -> CheckedContinuation<Void, any Error>? in
            if s.waiting.isEmpty {
                s.running -= 1
                return nil
            }
            return s.waiting.removeFirst().continuation
        }
        next?.resume()
    }
}
