import KianaCore
@testable import KianaNet
import KianaTestSupport
import Synchronization
import Testing

final class Count: Sendable {
    let value = Mutex(0)
}

/// The pipe between a pull's fetching task and its storing task (decision 110).
@Suite struct BatchPipeTests {
    /// A block of one entry.
    static let block: Block = {
        let id = DeviceIdentity.generate()
        let genesis = Block.genesis(identity: id, time: 1_764_288_000_000)
        let entry = Entry(signedBy: id, network: genesis.hash, sequence: 1, hlc: HLC(wall: 1_764_288_000_001), kind: .knowledgePut, payload: .map([:]))
        return Block.seal(entries: [entry], parent: genesis.header, parentHash: genesis.hash, time: 1_764_288_000_001, identity: id)
    }()

    /// A batch of `count` one-entry blocks (the same block; the pipe only counts entries) and
    /// `bytes` raw bytes.
    static func batch(_ count: Int, bytes: Int = 100, more: Bool = true) -> SyncBatch {
        SyncBatch(
            blocks: Array(repeating: Self.block, count: count), more: more, rawBytes: bytes, compressedBytes: bytes / 2,
            checked: Array(repeating: true, count: count))
    }

    @Test func theConsumerTakesEverythingWaitingInOrder() async throws {
        let pipe = BatchPipe(maxEntries: 100, maxBytes: 1 << 20)
        for n in [3, 5, 7] { try await pipe.put(Self.batch(n, bytes: n)) }
        pipe.finish()
        let first = try #require(try await pipe.take())
        #expect(first.map(\.rawBytes) == [3, 5, 7])
        #expect(try await pipe.take() == nil, "finished and empty: the end")
        #expect(try await pipe.take() == nil)
    }

    @Test("The producer waits while the pipe is full, by entries or by bytes", arguments: [(10, 1 << 20, 6, 100), (1000, 250, 1, 200)])
    func theProducerWaitsWhileFull(_ maxEntries: Int, _ maxBytes: Int, _ count: Int, _ bytes: Int) async throws {
        let pipe = BatchPipe(maxEntries: maxEntries, maxBytes: maxBytes)
        try await pipe.put(Self.batch(count, bytes: bytes))
        // Taken, so being stored: it still counts against the bounds.
        #expect(try await pipe.take()?.count == 1)
        let put = Count()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                for _ in 0..<2 {
                    try await pipe.put(Self.batch(count, bytes: bytes))
                    put.value.withLock { $0 += 1 }
                }
                pipe.finish()
            }
            #expect(await eventually(10, every: .milliseconds(5)) { pipe.waiting.producer }, "the next batch waits while the last set is stored")
            #expect(put.value.withLock { $0 } == 0)
            // Coming back for more means the set was stored: the waiting batch goes in and is
            // taken, and the one after it waits in its turn.
            #expect(try await pipe.take()?.count == 1)
            #expect(await eventually(10, every: .milliseconds(5)) { pipe.waiting.producer })
            #expect(put.value.withLock { $0 } == 1)
            #expect(try await pipe.take()?.count == 1)
            #expect(try await pipe.take() == nil)
            try await group.waitForAll()
        }
    }

    @Test func aBatchLargerThanTheBoundsPassesAlone() async throws {
        let pipe = BatchPipe(maxEntries: 5, maxBytes: 10)
        try await pipe.put(Self.batch(50, bytes: 1000))
        pipe.finish()
        #expect(try await pipe.take()?.first?.blocks.count == 50)
    }

    @Test func aFailureArrivesAfterTheBatchesBeforeIt() async throws {
        let pipe = BatchPipe(maxEntries: 100, maxBytes: 1 << 20)
        try await pipe.put(Self.batch(4))
        pipe.finish(KianaNetError(.closed, "link dropped"))
        #expect(try await pipe.take()?.count == 1, "what arrived intact comes first")
        await #expect { _ = try await pipe.take() } throws: { ($0 as? KianaNetError)?.code == .closed }
    }

    @Test func aConsumerWaitingIsWokenByABatchOrByTheEnd() async throws {
        let pipe = BatchPipe(maxEntries: 100, maxBytes: 1 << 20)
        async let taken = pipe.take()
        #expect(await eventually(10, every: .milliseconds(5)) { pipe.waiting.consumer })
        try await pipe.put(Self.batch(2))
        #expect(try await taken?.first?.blocks.count == 2)
        async let end = pipe.take()
        #expect(await eventually(10, every: .milliseconds(5)) { pipe.waiting.consumer })
        pipe.finish(KianaNetError(.timeout, "peer went quiet"))
        pipe.finish()  // a second finish changes nothing
        do {
            _ = try await end
            Issue.record("the end with a failure throws it")
        } catch { #expect((error as? KianaNetError)?.code == .timeout) }
    }

    @Test func aProducerWaitingForRoomStopsWhenCancelled() async throws {
        let pipe = BatchPipe(maxEntries: 1, maxBytes: 1 << 20)
        try await pipe.put(Self.batch(1))
        let waiting = Task { try await pipe.put(Self.batch(1)) }
        #expect(await eventually(10, every: .milliseconds(5)) { pipe.waiting.producer })
        waiting.cancel()
        await #expect(throws: CancellationError.self) { try await waiting.value }
        // The cancelled batch never went in; later puts are refused too.
        #expect(try await pipe.take()?.count == 1)
        await #expect(throws: CancellationError.self) { try await pipe.put(Self.batch(1)) }
    }
}
