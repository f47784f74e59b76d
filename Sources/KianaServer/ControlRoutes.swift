import Foundation
import HTTPTypes
import Hummingbird
import KianaCore
import KianaNet

/// The node's control surface for the local CLI (`kiana pair`, `kiana peers`): every route
/// needs the control token the node writes to its data directory (0600) at start, even on
/// loopback, because confirming a pairing writes a membership vote.
public struct ControlSurface: Sendable {
    public var token: String

    public init(token: String) {
        self.token = token
    }

    public static let header = HTTPField.Name("X-Kiana-Control-Token")!
}

/// /control/…: peers, adding a peer by address, and the pairing window.
struct ControlController<Context: RequestContext>: Sendable {
    let node: any NodeAPI
    let token: String
    let listeners: ListenerStatus

    struct OpenPairing: Decodable { var seconds: Int? }
    struct Opened: ResponseEncodable {
        var open: Bool
        var seconds: Int
        var port: Int?
    }
    struct Confirm: Decodable {
        var device: String?
        var code: String
    }
    struct Confirmed: ResponseEncodable {
        var accepted: Bool
        var device: String
        var key: String
        var member: Bool
        var authorities: Int
        var votesFor: Int
        var voted: Bool
    }
    struct AddPeer: Decodable { var address: String }
    struct Added: ResponseEncodable {
        var address: String
        var added: Bool
    }
    struct Peers: ResponseEncodable { var peers: [PeerStatus] }
    struct Sync: ResponseEncodable { var sync: SyncStatus }
    struct Pending: ResponseEncodable {
        var open: Bool
        var requests: [PairingRequest]
    }

    var routes: RouteCollection<Context> {
        let r = RouteCollection(context: Context.self).add(middleware: ControlTokenMiddleware(token: token))
        r.get("peers") { _, _ in Peers(peers: await node.peers(rtt: true)) }
        r.get("sync") { _, _ in Sync(sync: try await node.syncStatus()) }
        r.get("connections") { _, _ in listeners.snapshot(p2p: await node.admissionStats()) }
        // /ready for the local CLI (`kiana ready`), found through node.json whatever port and
        // API token the node was started with.
        r.get("ready") { _, _ -> EditedResponse<ReadyDTO> in
            let ready = await node.readiness()
            return EditedResponse(status: ready.ready ? .ok : .serviceUnavailable, response: ready)
        }
        // The CLI wrote to the ledger of this data directory: announce its head at once.
        r.post("changed") { _, _ -> HTTPResponse.Status in
            await node.ledgerChangedElsewhere()
            return .noContent
        }
        r.post("peers") { request, _ -> Added in
            let body = try await RequestBodies.decode(AddPeer.self, from: request, limit: RequestBodies.defaultLimit)
            return Added(address: body.address, added: try await node.addPeer(address: body.address))
        }
        r.post("pair/open") { request, _ -> Opened in
            let body = try await RequestBodies.decode(OpenPairing.self, from: request, limit: RequestBodies.defaultLimit)
            let seconds = body.seconds ?? 120
            guard (1...3600).contains(seconds) else { throw HTTPError(.badRequest, message: "seconds must be 1...3600") }
            return Opened(open: true, seconds: seconds, port: try await node.openPairing(seconds: seconds))
        }
        r.get("pair/pending") { _, _ in
            let p = await node.pendingPairings()
            return Pending(open: p.open, requests: p.requests)
        }
        r.post("pair/confirm") { request, _ -> Confirmed in
            let body = try await RequestBodies.decode(Confirm.self, from: request, limit: RequestBodies.defaultLimit)
            let o = try await node.confirmPairing(device: body.device, code: body.code)
            return Confirmed(
                accepted: o.accepted, device: o.request.device, key: o.request.key, member: o.member,
                authorities: o.authorities, votesFor: o.votesFor, voted: o.voted)
        }
        r.post("pair/close") { _, _ -> HTTPResponse.Status in
            await node.closePairing()
            return .noContent
        }
        return r
    }
}

/// Checks the control token header (constant-time).
struct ControlTokenMiddleware<Context: RequestContext>: RouterMiddleware {
    let token: String

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let given = request.headers[ControlSurface.header] ?? ""
        guard BearerTokenMiddleware<Context>.equal(Array(given.utf8), Array(token.utf8)) else {
            throw HTTPError(.unauthorized, message: "the control token is required")
        }
        return try await next(request, context)
    }
}
