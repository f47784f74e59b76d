import Foundation
import Hummingbird
import KianaCore
import KianaNet
import KianaStore
import NIOCore
import Synchronization
import HTTPTypes
import ServiceLifecycle

/// Server-Sent Events for live updates (`GET /api/v1/events`): `block` for every new block,
/// `knowledge` for every knowledge entry in it, `head` when the head changes without growing
/// (a fork resolved), `peers` when the peer list changes, comments as keep-alives.
///
/// Each stream watches the store itself (a cheap head query a few times a second), so writes
/// from any source are seen: the API, a peer's sync, the CLI on the same data directory.
/// Event IDs are block heights; a client that reconnects with `Last-Event-ID` gets what it missed
/// (heights above it, 100 blocks per tick). When blocks it was sent are replaced by a fork, a
/// `head` event names the fork point and the new branch's blocks follow.
/// Streams end when the server shuts down gracefully. At most `limit` streams at once.
public final class EventStreams: Sendable {
    let limit: Int
    let interval: Duration
    let keepAlive: Duration
    let open = Mutex(0)

    public init(limit: Int = 32, interval: Duration = .milliseconds(250), keepAlive: Duration = .seconds(15)) {
        self.limit = limit
        self.interval = interval
        self.keepAlive = keepAlive
    }

    /// Holds one of the `limit` stream slots; gives it back when the response (and with it this
    /// object) is gone, however the response ended, even if its body never started.
    final class Slot: Sendable {
        let owner: EventStreams
        init(_ owner: EventStreams) { self.owner = owner }
        deinit { owner.open.withLock { $0 -= 1 } }
    }

    /// Blocks sent per tick at most (a client resuming far back catches up over several ticks).
    static let batch: UInt64 = 100

    func stream(node: any NodeAPI, lastEventID: String?, named: String = "Last-Event-ID") async throws -> Response {
        let start = try await node.head()
        var from = Int(start?.height ?? 0)
        // The hash `hello` names is the block at the height it names (the client's resume point).
        var fromHash = start.map { Hex.encode($0.hash) } ?? ""
        if let id = lastEventID {
            guard let h = Int(id), h >= 0 else { throw HTTPError(.badRequest, message: "\(named) must be a block height (a whole number, 0 or more)") }
            if h < from {
                from = h
                fromHash = (try? await node.blocks(from: UInt64(h), through: UInt64(h)).first?.hashHex) ?? ""
            }
        }
        let limit = self.limit
        let enter = open.withLock { open -> Bool in
            guard open < limit else { return false }
            open += 1
            return true
        }
        guard enter else { throw HTTPError(.serviceUnavailable, message: "too many event streams are open (\(limit))") }
        let slot = Slot(self)
        let interval = self.interval
        let keepAlive = self.keepAlive
        let resumeFrom = from
        let resumeHash = fromHash
        return Streaming.events { emit in
            withExtendedLifetime(slot) {}
            guard emit("retry: 2000\n" + JSONText.event("hello", Hello(height: resumeFrom, head: resumeHash))) else { return }
            try? await cancelWhenGracefulShutdown {
                // What this client has been sent: height → block hash, for the recent past, so a
                // fork (a block it saw replaced) is noticed and the new branch sent from the fork.
                var sent: [Int: String] = [:]
                var last = resumeFrom
                // The resume block's hash was read for `hello` (the head's, or the block's at the
                // height the client gave).
                if !resumeHash.isEmpty { sent[resumeFrom] = resumeHash }
                var peers = ""
                var quiet = ContinuousClock.now
                while !Task.isCancelled {
                    var out = ""
                    if let head = try? await node.head(), sent[Int(head.height)] != Hex.encode(head.hash) || Int(head.height) > last {
                        // Walk back to the newest height whose block this client has (fork point).
                        var fork = min(last, Int(head.height))
                        if let known = sent[fork], let b = try? await node.blocks(from: UInt64(fork), through: UInt64(fork)).first, b.hashHex != known {
                            while fork > 0, let known = sent[fork - 1],
                                let b = try? await node.blocks(from: UInt64(fork - 1), through: UInt64(fork - 1)).first, b.hashHex != known
                            { fork -= 1 }
                            fork -= 1
                            out += JSONText.event("head", HeadMoved(height: Int(head.height), head: Hex.encode(head.hash), forkedAt: fork))
                        }
                        let through = min(head.height, UInt64(fork) + Self.batch)
                        if fork < Int(head.height), let blocks = try? await node.blocks(from: UInt64(fork + 1), through: through) {
                            for b in blocks {
                                out += Self.events(b)
                                sent[Int(b.height)] = b.hashHex
                            }
                            last = Int(through)
                            sent = sent.filter { $0.key > last - 256 }
                        }
                        // On a read error nothing moves: the next tick tries again.
                    }
                    let now = JSONText.encode(await node.peers(rtt: false))
                    if now != peers {
                        out += "event: peers\ndata: " + now + "\n\n"
                        peers = now
                    }
                    if out.isEmpty && ContinuousClock.now - quiet >= keepAlive { out = ": keep-alive\n\n" }
                    if !out.isEmpty {
                        guard emit(out) else { return }
                        quiet = .now
                    }
                    try await Task.sleep(for: interval)
                }
            }
        }
    }

    struct Hello: Codable {
        var height: Int
        var head: String
    }
    struct HeadMoved: Codable {
        var height: Int
        var head: String
        var forkedAt: Int
    }
    struct KnowledgeEvent: Codable {
        var entry: String
        var height: Int
        var op: String
        var item: String
        var title: String?
    }

    static func events(_ b: Block) -> String {
        var out = JSONText.event("block", BlockDTO(b), id: String(b.height))
        for e in b.entries {
            guard let op = try? KnowledgeOp(kind: e.kind, payload: e.payload) else { continue }
            let event: KnowledgeEvent
            switch op {
            case .put(let id, let f):
                event = KnowledgeEvent(entry: Hex.encode(e.id), height: Int(b.height), op: "put", item: id.description, title: f.title)
            case .delete(let id):
                event = KnowledgeEvent(entry: Hex.encode(e.id), height: Int(b.height), op: "delete", item: id.description, title: nil)
            }
            out += JSONText.event("knowledge", event)
        }
        return out
    }
}

/// /api/v1/events: the live event stream.
struct EventsController<Context: RequestContext>: Sendable {
    let node: any NodeAPI
    let events: EventStreams

    var routes: RouteCollection<Context> {
        let r = RouteCollection(context: Context.self)
        r.get("events", use: stream)
        return r
    }

    @Sendable func stream(_ req: Request, _ ctx: Context) async throws -> Response {
        let header = req.headers[HTTPField.Name("Last-Event-ID")!]
        return try await events.stream(node: node, lastEventID: header ?? Query.string(req, "since"), named: header != nil ? "Last-Event-ID" : "since")
    }
}
