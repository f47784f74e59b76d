import Synchronization

/// The batches a pull has fetched and checked but not yet stored (decision 110): one task puts
/// batches in as they arrive, the other takes everything waiting at once and stores it in one
/// transaction. Bounded by entries (the store's unit of work) and by uncompressed bytes,
/// counting both the batches waiting and the set being stored (released when the consumer comes
/// back for more), so a store that is slower than the link makes the fetching side wait
/// (back-pressure), never buffer without bound. A batch larger than the bounds on its own
/// passes when nothing else is held.
///
/// Single producer, single consumer; the consumer calls `take` again only once it has stored
/// what it took. The producer ends the pipe with `finish`; an error it finishes with reaches
/// the consumer after every batch put before it, so what arrived intact is stored before the
/// failure is reported.
final class BatchPipe: Sendable {
    let maxEntries: Int
    let maxBytes: Int

    private struct State {
        var items: [SyncBatch] = []
        /// Held: the batches waiting plus the set the consumer is storing.
        var entries = 0
        var bytes = 0
        var storing = (entries: 0, bytes: 0)
        var finished = false
        var failure: (any Error)?
        var cancelled = false
        /// The producer waiting for room, with the batch it brings.
        var producer: (batch: SyncBatch, resume: CheckedContinuation<Void, any Error>)?
        /// The consumer waiting for batches.
        var consumer: CheckedContinuation<[SyncBatch]?, any Error>?

        func hasRoom(for batch: SyncBatch, maxEntries: Int, maxBytes: Int) -> Bool {
            entries == 0 || (entries + batch.entryCount <= maxEntries && bytes + batch.rawBytes <= maxBytes)
        }
    }
    private let state = Mutex(State())

    init(maxEntries: Int, maxBytes: Int) {
        self.maxEntries = max(1, maxEntries)
        self.maxBytes = max(1, maxBytes)
    }

    /// Adds a batch, waiting while the pipe is full. Throws `CancellationError` when the
    /// calling task is cancelled while it waits (the batch is then not added).
    func put(_ batch: SyncBatch) async throws {
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
                enum Next { case added, handed([SyncBatch], CheckedContinuation<[SyncBatch]?, any Error>), wait, cancelled }
                let next: Next = state.withLock { s in
                    if s.cancelled || Task.isCancelled { return .cancelled }
                    guard s.hasRoom(for: batch, maxEntries: maxEntries, maxBytes: maxBytes) else {
                        s.producer = (batch, c)
                        return .wait
                    }
                    Self.append(batch, to: &s)
                    guard let consumer = s.consumer else { return .added }
                    s.consumer = nil
                    return .handed(Self.takeAll(&s), consumer)
                }
                switch next {
                case .added: c.resume()
                case .handed(let items, let consumer):
                    consumer.resume(returning: items)
                    c.resume()
                case .wait: break
                case .cancelled: c.resume(throwing: CancellationError())
                }
            }
        } onCancel: {
            let waiting = state.withLock { s in
                s.cancelled = true
                defer { s.producer = nil }
                return s.producer?.resume
            }
            waiting?.resume(throwing: CancellationError())
        }
    }

    /// Ends the pipe (once; later calls change nothing): the consumer gets what is in it, then
    /// `failure` (if any) or the end.
    func finish(_ failure: (any Error)? = nil) {
        let waiting: CheckedContinuation<[SyncBatch]?, any Error>? = state.withLock { s in
            guard !s.finished else { return nil }
            s.finished = true
            s.failure = failure
            defer { s.consumer = nil }
            return s.consumer
        }
        guard let waiting else { return }
        if let failure { waiting.resume(throwing: failure) } else { waiting.resume(returning: nil) }
    }

    /// Marks the set taken last as stored, then takes every batch waiting, in order, waiting
    /// for one when the pipe is empty; nil once the producer finished and everything was
    /// taken; throws the producer's failure then.
    func take() async throws -> [SyncBatch]? {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<[SyncBatch]?, any Error>) in
            enum Next { case batches([SyncBatch], CheckedContinuation<Void, any Error>?), end((any Error)?), wait }
            let next: Next = state.withLock { s in
                s.entries -= s.storing.entries
                s.bytes -= s.storing.bytes
                s.storing = (0, 0)
                // The room just made may let a waiting producer's batch in.
                var admitted: CheckedContinuation<Void, any Error>?
                if let waiting = s.producer, s.hasRoom(for: waiting.batch, maxEntries: maxEntries, maxBytes: maxBytes) {
                    s.producer = nil
                    Self.append(waiting.batch, to: &s)
                    admitted = waiting.resume
                }
                if !s.items.isEmpty {
                    return .batches(Self.takeAll(&s), admitted)
                }
                if s.finished { return .end(s.failure) }
                s.consumer = c
                return .wait
            }
            switch next {
            case .batches(let items, let producer):
                producer?.resume()
                c.resume(returning: items)
            case .end(let failure?): c.resume(throwing: failure)
            case .end(nil): c.resume(returning: nil)
            case .wait: break
            }
        }
    }

    /// Whether the producer is waiting for room, and whether the consumer is waiting for a
    /// batch (for tests that must see one parked).
    var waiting: (producer: Bool, consumer: Bool) {
        state.withLock { ($0.producer != nil, $0.consumer != nil) }
    }

    private static func append(_ batch: SyncBatch, to s: inout State) {
        s.items.append(batch)
        s.entries += batch.entryCount
        s.bytes += batch.rawBytes
    }

    /// Moves everything waiting to the set being stored (which is then all that is held).
    private static func takeAll(_ s: inout State) -> [SyncBatch] {
        let items = s.items
        s.items = []
        s.storing = (s.entries, s.bytes)
        return items
    }
}
