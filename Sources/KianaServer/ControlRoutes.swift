import Foundation
import HTTPTypes
import Hummingbird
import KianaCore
import KianaNet
import NIOCore

/// The node's control surface for the local CLI (`kiana pair`, `kiana peers`): every route
/// needs the control token the node writes to its data directory (0600) at start, even on
/// loopback, because confirming a pairing writes a membership vote.
public struct ControlSurface: Sendable {
    public var token: String
    public var network: PeerNetwork

    public init(token: String, network: PeerNetwork) {
        self.token = token
        self.network = network
    }

    public static let header = HTTPField.Name("X-Kiana-Control-Token")!

    struct OpenPairing: Decodable { var seconds: Int? }
    struct Opened: ResponseEncodable { var open: Bool; var seconds: Int; var port: Int? }
    struct Confirm: Decodable { var device: String?; var code: String }
    struct Confirmed: ResponseEncodable {
        var accepted: Bool
        var device: String
        var key: String
        var member: Bool
        var authorities: Int
        var votesFor: Int
    }
    struct AddPeer: Decodable { var address: String }
    struct Added: ResponseEncodable { var address: String; var added: Bool }
    struct Peers: ResponseEncodable { var peers: [PeerStatus] }
    struct Pending: ResponseEncodable { var open: Bool; var requests: [PairingRequest] }

    func add<Context: RequestContext>(to router: Router<Context>) {
        let network = self.network
        let group = router.group("control").add(middleware: ControlTokenMiddleware(token: token))
        group.get("peers") { _, _ in Peers(peers: await network.statusWithRTT()) }
        group.post("peers") { request, context -> Added in
            let body = try await request.decode(as: AddPeer.self, context: context)
            do throws(KianaNetError) {
                _ = try PeerNetwork.parse(body.address)
            } catch {
                throw HTTPError(.badRequest, message: error.message)
            }
            let added = try network.store.addPeerAddress(body.address, now: UInt64(Date().timeIntervalSince1970 * 1000))
            return Added(address: body.address, added: added)
        }
        group.post("pair/open") { request, context -> Opened in
            let body = try await request.decode(as: OpenPairing.self, context: context)
            let seconds = body.seconds ?? 120
            guard (1...3600).contains(seconds) else { throw HTTPError(.badRequest, message: "seconds must be 1...3600") }
            await network.openPairing(seconds: seconds)
            return Opened(open: true, seconds: seconds, port: await network.listeningPort)
        }
        group.get("pair/pending") { _, _ in Pending(open: await network.pairingOpen, requests: await network.pendingPairings()) }
        group.post("pair/confirm") { request, context -> Confirmed in
            let body = try await request.decode(as: Confirm.self, context: context)
            let outcome: (request: PairingRequest, accepted: Bool)
            do throws(KianaNetError) {
                outcome = try await network.confirmPairing(device: body.device, code: body.code)
            } catch {
                throw HTTPError(.conflict, message: error.message)
            }
            let key = Hex.decode(outcome.request.key) ?? []
            let m = try? network.store.membership()
            return Confirmed(accepted: outcome.accepted, device: outcome.request.device, key: outcome.request.key,
                             member: m?.authorities.contains(key) ?? false, authorities: m?.authorities.count ?? 0,
                             votesFor: m?.tally[key]?.count ?? 0)
        }
        group.post("pair/close") { _, _ -> HTTPResponse.Status in
            await network.closePairing()
            return .noContent
        }
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
