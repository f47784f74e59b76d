import Foundation
import HTTPTypes
import Hummingbird

/// /api/v1/ledger…: status, blocks (newest first), one block with its entries, entries,
/// inclusion proofs and whole-ledger verification.
struct LedgerController<Context: RequestContext>: Sendable {
    let node: any NodeAPI

    var routes: RouteCollection<Context> {
        let r = RouteCollection(context: Context.self)
        r.get("ledger", use: status)
        r.get("ledger/blocks", use: blocks)
        r.get("ledger/blocks/:height", use: block)
        r.get("ledger/entries/:id", use: entry)
        r.get("ledger/proof/:id", use: proof)
        r.post("ledger/verify", use: verify)
        return r
    }

    @Sendable func status(_ req: Request, _ ctx: Context) async throws -> LedgerStatusDTO {
        try await node.ledgerStatus()
    }

    /// Newest first: `before` is exclusive (default: after the head), `limit` at most 100.
    @Sendable func blocks(_ req: Request, _ ctx: Context) async throws -> BlockPageDTO {
        let top = Int(try await node.head()?.height ?? 0)
        let before = try Query.int(req, "before", default: top + 1, range: 0...Int(Int32.max))
        let limit = try Query.int(req, "limit", default: 20, range: 1...100)
        let through = min(before, top + 1) - 1
        guard through >= 0 else { return BlockPageDTO(blocks: [], height: UInt64(top)) }
        let from = max(0, through - limit + 1)
        let blocks = try await node.blocks(from: UInt64(from), through: UInt64(through)).reversed().map { BlockDTO($0) }
        return BlockPageDTO(blocks: blocks, height: UInt64(top))
    }

    @Sendable func block(_ req: Request, _ ctx: Context) async throws -> BlockDTO {
        guard let h = UInt64(try ctx.parameters.require("height")) else {
            throw HTTPError(.badRequest, message: "height must be a non-negative integer")
        }
        guard let b = try await node.blocks(from: h, through: h).first else { throw HTTPError(.notFound, message: "no block at height \(h)") }
        return BlockDTO(b, withEntries: true)
    }

    @Sendable func entry(_ req: Request, _ ctx: Context) async throws -> EntryDTO {
        try await node.entry(try ctx.parameters.require("id"))
    }

    @Sendable func proof(_ req: Request, _ ctx: Context) async throws -> ProofDTO {
        try await node.proof(try ctx.parameters.require("id"))
    }

    @Sendable func verify(_ req: Request, _ ctx: Context) async throws -> VerifyDTO {
        try await node.verify()
    }
}

/// /api/v1/device: this device, its models and its peers.
struct DeviceController<Context: RequestContext>: Sendable {
    let node: any NodeAPI
    let listeners: ListenerStatus

    var routes: RouteCollection<Context> {
        let r = RouteCollection(context: Context.self)
        r.get("device", use: device)
        return r
    }

    @Sendable func device(_ req: Request, _ ctx: Context) async throws -> DeviceDTO {
        var d = try await node.device()
        d.connections = listeners.snapshot(p2p: await node.admissionStats())
        return d
    }
}

/// /health, /ready and /metrics: liveness, readiness, Prometheus text.
struct HealthController<Context: RequestContext>: Sendable {
    let node: any NodeAPI
    let metrics: Metrics
    let listeners: ListenerStatus

    var routes: RouteCollection<Context> {
        let r = RouteCollection(context: Context.self)
        r.get("health", use: health)
        r.get("ready", use: ready)
        r.get("metrics", use: render)
        return r
    }

    @Sendable func health(_ req: Request, _ ctx: Context) async throws -> HealthDTO {
        try await node.health()
    }

    @Sendable func ready(_ req: Request, _ ctx: Context) async throws -> EditedResponse<ReadyDTO> {
        let r = await node.readiness()
        if r.ready { return EditedResponse(status: .ok, response: r) }
        return EditedResponse(
            status: .serviceUnavailable, headers: [.retryAfter: String(APIErrorMiddleware<Context>.retryAfterSeconds)], response: r)
    }

    @Sendable func render(_ req: Request, _ ctx: Context) async throws -> Response {
        let s = await node.metricsSnapshot()
        let admission = await node.admissionStats()
        let text = metrics.render(
            s, sync: await node.syncStats(), admission: admission, connections: listeners.snapshot(p2p: admission))
        return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4"], body: .init(byteBuffer: ByteBuffer(string: text)))
    }
}
