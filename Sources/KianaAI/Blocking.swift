import Foundation

/// Runs CPU-bound or blocking work (embedding, generation) on a Dispatch thread and awaits it,
/// so Swift's cooperative pool (two threads on two cores) stays free for I/O.
public func blocking<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { c in
        DispatchQueue.global(qos: .utility).async { c.resume(with: Result { try body() }) }
    }
}
