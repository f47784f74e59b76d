import Foundation
import Hummingbird
import KianaCore
import KianaNet
import KianaStore
import NIOCore
import ServiceLifecycle

/// Server-Sent Events for live updates (`GET /api/v1/events`): `block` for every new block,
/// `knowledge` for every knowledge entry in it, `head` when the head changes without growing
/// (a fork resolved), `peers` when the peer list changes, comments as keep-alives.
///
/// Each stream watches the store itself (a cheap head query a few times a second), so writes
/// from any source are seen: the API, a peer's sync, the CLI on the same data directory.
/// Event IDs are block heights; a client that reconnects with `Last-Event-ID` gets what it missed.
/// Streams end when the server shuts down gracefully. At most `limit` streams at once.
public final class EventStreams: @unchecked Sendable {
    let limit: Int
    let interval: Duration
    let keepAlive: Duration
    private let lock = NSLock()
    private var open = 0

    public init(limit: Int = 32, interval: Duration = .milliseconds(250), keepAlive: Duration = .seconds(15)) {
        self.limit = limit
        self.interval = interval
        self.keepAlive = keepAlive
    }

    func stream(store: LedgerStore, network: PeerNetwork?, lastEventID: String?) throws -> Response {
        let start = try store.head()
        var last = Int(start?.height ?? 0)
        if let id = lastEventID {
            guard let h = Int(id), h >= 0 else { throw HTTPError(.badRequest, message: "Last-Event-ID must be a block height") }
            last = min(h, last)
        }
        let enter = lock.withLock { () -> Bool in
            guard open < limit else { return false }
            open += 1
            return true
        }
        guard enter else { throw HTTPError(.serviceUnavailable, message: "too many event streams are open (\(limit))") }
        let interval = self.interval, keepAlive = self.keepAlive, from = last
        return CompatRoutes.stream(contentType: "text/event-stream") { [self] emit in
            defer { lock.withLock { open -= 1 } }
            let startHash = start.map { Hex.encode($0.hash) } ?? ""
            guard emit("retry: 2000\nevent: hello\ndata: " + CompatRoutes.text(["height": from, "head": startHash]) + "\n\n") else { return }
            try? await cancelWhenGracefulShutdown {
                var last = from
                var headHash = from < Int(start?.height ?? 0) ? "" : startHash   // resuming: send what was missed
                var peers = ""
                var quiet = ContinuousClock.now
                while !Task.isCancelled {
                    var out = ""
                    if let head = try? store.head(), Hex.encode(head.hash) != headHash {
                        if Int(head.height) > last, let blocks = try? store.blocks(from: UInt64(last + 1), through: head.height) {
                            for b in blocks { out += Self.events(b) }
                            last = Int(head.height)
                        } else {
                            out += "event: head\ndata: " + CompatRoutes.text(["height": Int(head.height), "head": Hex.encode(head.hash)]) + "\n\n"
                            last = Int(head.height)
                        }
                        headHash = Hex.encode(head.hash)
                    }
                    if let network {
                        let now = CompatRoutes.text(await network.status().map(RestRoutes.peer))
                        if now != peers { out += "event: peers\ndata: " + now + "\n\n"; peers = now }
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

    static func events(_ b: Block) -> String {
        var out = "id: \(b.height)\nevent: block\ndata: " + CompatRoutes.text(LedgerJSON.header(b)) + "\n\n"
        for e in b.entries {
            guard let op = try? KnowledgeOp(kind: e.kind, payload: e.payload) else { continue }
            var o: [String: any Sendable] = ["entry": Hex.encode(e.id), "height": Int(b.height)]
            switch op {
            case .put(let id, let f):
                o["op"] = "put"; o["item"] = id.description; o["title"] = f.title
            case .delete(let id):
                o["op"] = "delete"; o["item"] = id.description
            }
            out += "event: knowledge\ndata: " + CompatRoutes.text(o) + "\n\n"
        }
        return out
    }
}
