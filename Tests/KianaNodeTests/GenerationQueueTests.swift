import Foundation
@testable import KianaNode
import KianaTestSupport
import Testing

/// The queue in front of the embedded model: one at a time, a bounded wait list, refusal beyond
/// it, and a waiter whose client left (its task cancelled) leaves the list.
@Suite struct GenerationQueueTests {
    @Test func oneAtATimeBoundedWaitAndCancelledWaitersLeave() async throws {
        let q = GenerationQueue(limit: 1, waitingLimit: 2)
        let order = Locked<[String]>([])
        let release = AsyncStream<Void>.makeStream()
        // A holds the model until released.
        let a = Task {
            try await q.run {
                order.update { $0.append("a") }
                for await _ in release.stream { break }
            }
        }
        while order.get.isEmpty { try await Task.sleep(for: .milliseconds(5)) }
        let b = Task { try await q.run { order.update { $0.append("b") } } }
        let c = Task { try await q.run { order.update { $0.append("c") } } }
        try await Task.sleep(for: .milliseconds(100))
        #expect(!q.hasRoom)
        // Full: a fourth request is refused at once with `busy`.
        await #expect(throws: KianaNodeError.self) { try await q.run { order.update { $0.append("d") } } }
        // B's client goes away: it leaves the queue without running, which makes room.
        b.cancel()
        await #expect(throws: CancellationError.self) { try await b.value }
        #expect(q.hasRoom)
        release.continuation.yield()
        try await a.value
        try await c.value
        #expect(order.get == ["a", "c"])
        #expect(q.hasRoom)
    }
}
