import Foundation
import HTTPTypes
import Hummingbird

/// /api/v1/ingest: uploaded files become knowledge, with SSE progress.
struct IngestController<Context: RequestContext>: Sendable {
    let node: any NodeAPI
    /// Uploads for ingestion may be larger than other bodies.
    static var maxBody: Int { 32 << 20 }

    var routes: RouteCollection<Context> {
        let r = RouteCollection(context: Context.self)
        r.post("ingest", use: ingest)
        return r
    }

    @Sendable func ingest(_ req: Request, _ ctx: Context) async throws -> Response {
        // Refused before the (up to 32 MiB) body is read when another ingestion runs.
        if node.ingesting { throw HTTPError(.conflict, message: "another ingestion is running; try again when it has finished") }
        let body = try await RequestBodies.decode(IngestRequestDTO.self, from: req, limit: Self.maxBody)
        let (uploads, tags) = try uploads(body)
        let node = self.node
        // Before anything is read or streamed: a 409 the client can act on.
        if body.replace != true { try await node.refuseReplacingUploads(uploads) }
        guard body.stream ?? true else {
            return try await node.ingest(uploads: uploads, tags: tags, replace: body.replace == true) { _, _, _, _ in }.response(from: req, context: ctx)
        }
        return Streaming.events { emit in
            let throttle = Throttle(seconds: 0.1)
            let report = try await node.ingest(uploads: uploads, tags: tags, replace: body.replace == true) { phase, done, total, detail in
                guard done == total || throttle.due() else { return }
                _ = emit(
                    JSONText.event(
                        "progress",
                        IngestProgressDTO(
                            phase: phase, done: done, total: total,
                            file: (detail as NSString).lastPathComponent)))
            }
            _ = emit(JSONText.event("done", report))
        }
    }

    /// The files (name and bytes) and tags of an ingest request, checked.
    func uploads(_ body: IngestRequestDTO) throws -> ([(name: String, data: [UInt8])], [String]) {
        if body.paths != nil {
            throw HTTPError(.badRequest, message: "paths are not taken over HTTP: upload the files, or run `kiana ingest PATH` on the node")
        }
        guard let list = body.files, !list.isEmpty, list.count <= 256 else {
            throw HTTPError(.badRequest, message: "files must be an array of 1-256 {name, text|base64} objects")
        }
        var uploads: [(name: String, data: [UInt8])] = []
        for f in list {
            guard let raw = f.name else { throw HTTPError(.badRequest, message: "every file needs a name") }
            let name = try node.uploadName(raw)
            if let text = f.text {
                uploads.append((name, Array(text.utf8)))
            } else if let b64 = f.base64, let data = Data(base64Encoded: b64) {
                uploads.append((name, [UInt8](data)))
            } else {
                throw HTTPError(.badRequest, message: "\(name): give its content as text or as base64")
            }
        }
        let tags = body.tags ?? []
        try node.validate(title: nil, text: nil, tags: tags, source: nil)
        return (uploads, tags)
    }
}
