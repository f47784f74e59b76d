import Foundation
import Hummingbird
import NIOCore
import Synchronization

/// JSON for bodies and stream events: one encoder configuration for the whole surface.
enum JSONText {
    static func encoder() -> JSONEncoder {
        let e = JSONEncoder()
        // Sorted keys: the same value is the same text (the event stream compares texts to tell a
        // change; unsorted, the order of keys differed from one encoding to the next).
        e.outputFormatting = [.withoutEscapingSlashes, .sortedKeys]
        return e
    }

    /// `value` as one line of JSON.
    static func encode<T: Encodable>(_ value: T) -> String {
        (try? encoder().encode(value)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
    }

    /// A Server-Sent Event: `event: name` (unless nil), `data: <json>`, a blank line.
    static func event<T: Encodable>(_ name: String?, _ value: T, id: String? = nil) -> String {
        (id.map { "id: \($0)\n" } ?? "") + (name.map { "event: \($0)\n" } ?? "") + "data: " + encode(value) + "\n\n"
    }
}

/// Streamed responses (SSE and NDJSON).
enum Streaming {
    /// A streamed response: `produce` calls `emit` with each piece of text (from any thread);
    /// `emit` returns false once the client is gone, which stops generation. A failure after
    /// the headers were sent is written in the stream's own format by `failure`.
    static func response(
        contentType: String,
        failure: @escaping @Sendable (any Error) -> String,
        _ produce: @escaping @Sendable (@escaping @Sendable (String) -> Bool) async throws -> Void
    ) -> Response {
        bytes(headers: [.contentType: contentType, .cacheControl: "no-cache"], failure: { ByteBuffer(string: failure($0)) }) { emit in
            try await produce { emit(ByteBuffer(string: $0)) }
        }
    }

    /// The streamed response underneath: `produce` emits buffers from any thread, which are
    /// written in order; `emit` returns false once the client is gone (and the producer is
    /// cancelled). A failure after the headers were sent becomes the bytes `failure` gives, or,
    /// when it gives nil, cuts the transfer off without its last chunk, so the client sees a
    /// broken transfer rather than a short but complete one.
    static func bytes(
        headers: HTTPFields,
        failure: @escaping @Sendable (any Error) -> ByteBuffer?,
        _ produce: @escaping @Sendable (@escaping @Sendable (ByteBuffer) -> Bool) async throws -> Void
    ) -> Response {
        let closed = connectionClosed
        return Response(
            status: .ok, headers: headers,
            body: ResponseBody { writer in
                let (pieces, continuation) = AsyncStream<ByteBuffer>.makeStream(bufferingPolicy: .unbounded)
                let gone = ClientGone()
                let cutOff = ClientGone()
                // Bytes made but not yet written. A client that reads nothing is closed by the
                // connection's write-stall deadline; one that reads, but far slower than the
                // producer, is let go once this much waits for it (a whole 10-minute speech fits).
                let queued = QueuedBytes()
                let tooSlow = ClientGone()
                defer { _ = Self.allQueued.add(-queued.add(0)) }
                // A client that hung up is noticed at once, not at the next write: a quiet event
                // stream would otherwise hold its slot until its next keep-alive.
                closed?.whenComplete { _ in
                    gone.set()
                    continuation.finish()
                }
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask {
                        defer { continuation.finish() }
                        do {
                            try await produce { piece in
                                if gone.value { return false }
                                let n = piece.readableBytes
                                let mine = queued.add(n)
                                let all = Self.allQueued.add(n)
                                if mine > Self.maxQueuedBytes || all > Self.maxAllQueuedBytes {
                                    _ = queued.add(-n)
                                    _ = Self.allQueued.add(-n)
                                    tooSlow.set()
                                    gone.set()
                                    return false
                                }
                                continuation.yield(piece)
                                return true
                            }
                        } catch {
                            if let written = failure(error) { continuation.yield(written) } else { cutOff.set() }
                        }
                    }
                    for await piece in pieces {
                        _ = queued.add(-piece.readableBytes)
                        _ = Self.allQueued.add(-piece.readableBytes)
                        if gone.value {
                            group.cancelAll()
                            break
                        }
                        do { try await writer.write(piece) } catch {
                            gone.set()
                            group.cancelAll()  // a request still waiting for the model leaves the queue
                            break
                        }
                    }
                    if gone.value { group.cancelAll() }
                    try await group.waitForAll()
                }
                if cutOff.value { throw HTTPError(.internalServerError, message: "the stream failed after it began") }
                // Let go for reading too slowly: a broken transfer, not a short complete one.
                if tooSlow.value { throw HTTPError(.serviceUnavailable, message: "the client read too slowly") }
                try await writer.finish(nil)
            })
    }

    /// The close of the connection the current request came on (set by `ConnectionScopeMiddleware`).
    @TaskLocal static var connectionClosed: EventLoopFuture<Void>?

    /// The most bytes a stream holds for a slow client, and all streams together (docs/decisions.md 102).
    static let maxQueuedBytes = 32 << 20
    static let maxAllQueuedBytes = 256 << 20
    static let allQueued = QueuedBytes()

    /// An SSE stream whose failures become an `error` event with code, message and status.
    static func events(_ produce: @escaping @Sendable (@escaping @Sendable (String) -> Bool) async throws -> Void) -> Response {
        response(contentType: "text/event-stream", failure: errorEvent, produce)
    }

    /// The failure of a stream whose headers are sent: an `error` event with code and message.
    static func errorEvent(_ error: any Error) -> String {
        let (status, code, message) = APIErrorMiddleware<BasicRequestContext>.describe(error)
        return JSONText.event("error", StreamError(code: code, message: message, status: Int(status.code)))
    }

    struct StreamError: Codable {
        var code: String
        var message: String
        var status: Int
    }
}

/// True at most once per interval (progress events are throttled, the last one always sent).
final class Throttle: Sendable {
    private let interval: UInt64
    private let last = Mutex<UInt64>(0)
    init(seconds: Double) { interval = UInt64(seconds * 1e9) }
    func due() -> Bool {
        let now = DispatchTime.now().uptimeNanoseconds
        return last.withLock { last in
            guard now - last >= interval else { return false }
            last = now
            return true
        }
    }
}

/// Query parameters, checked.
enum Query {
    static func int(_ req: Request, _ name: String, default d: Int, range: ClosedRange<Int>) throws -> Int {
        guard let s = req.uri.queryParameters.get(name) else { return d }
        guard let v = Int(s), range.contains(v) else {
            throw HTTPError(.badRequest, message: "\(name) must be an integer in \(range.lowerBound)…\(range.upperBound)")
        }
        return v
    }

    static func string(_ req: Request, _ name: String) -> String? {
        req.uri.queryParameters.get(name).map { String($0) }
    }
}

/// Set once the client disconnects.
final class ClientGone: Sendable {
    private let gone = Mutex(false)
    var value: Bool { gone.withLock { $0 } }
    func set() { gone.withLock { $0 = true } }
}

/// Bytes a stream has made but not written yet.
final class QueuedBytes: Sendable {
    private let bytes = Mutex(0)
    /// Adds `n` (negative when written) and returns the new total.
    func add(_ n: Int) -> Int {
        bytes.withLock {
            $0 += n
            return $0
        }
    }
}
