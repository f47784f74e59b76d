import Foundation
import HTTPTypes
import Hummingbird
import KianaCore

/// /api/v1/knowledge and /api/v1/search: list, read, teach, edit, forget, search.
struct KnowledgeController<Context: RequestContext>: Sendable {
    let node: any NodeAPI

    var routes: RouteCollection<Context> {
        let r = RouteCollection(context: Context.self)
        r.get("knowledge", use: list)
        r.get("knowledge/:id", use: get)
        r.post("knowledge", use: create)
        r.put("knowledge/:id", use: update)
        r.delete("knowledge/:id", use: forget)
        r.get("search", use: search)
        return r
    }

    @Sendable func list(_ req: Request, _ ctx: Context) async throws -> ItemPageDTO {
        let limit = try Query.int(req, "limit", default: 100, range: 1...1000)
        let offset = try Query.int(req, "offset", default: 0, range: 0...Int(Int32.max))
        return try await node.items(limit: limit, offset: offset)
    }

    /// The item, with its version as `ETag` (the entry that last changed it), which a PUT may
    /// send back as `If-Match` so that a change made meanwhile is not overwritten.
    @Sendable func get(_ req: Request, _ ctx: Context) async throws -> Response {
        try Self.versioned(try await node.item(try ctx.parameters.require("id")), req, ctx)
    }

    /// `item` as the response, its version (the entry that last changed it) as the ETag.
    static func versioned(_ item: ItemDTO, _ req: Request, _ ctx: Context) throws -> Response {
        var response = try item.response(from: req, context: ctx)
        if let entry = item.entry { response.headers[.eTag] = "\"\(entry)\"" }
        return response
    }

    /// The versions an `If-Match` header allows: nil for none or `*` (any version).
    static func ifMatch(_ req: Request) throws -> [String]? {
        guard let value = req.headers[.ifMatch]?.trimmingCharacters(in: .whitespaces), !value.isEmpty, value != "*" else { return nil }
        return try value.split(separator: ",").compactMap { part in
            let tag = part.trimmingCharacters(in: .whitespaces)
            // A weak tag (a proxy that compressed the answer weakens it) never matches strongly (RFC 9110 §13.1.1).
            let weak = tag.hasPrefix("W/")
            let quoted = weak ? String(tag.dropFirst(2)) : tag
            guard quoted.count >= 2, quoted.hasPrefix("\""), quoted.hasSuffix("\"") else {
                throw HTTPError(.badRequest, message: "If-Match must be a quoted ETag, as GET returned it (or *)")
            }
            return weak ? "" : String(quoted.dropFirst().dropLast())
        }
    }

    @Sendable func create(_ req: Request, _ ctx: Context) async throws -> EditedResponse<CreatedDTO> {
        let body = try await RequestBodies.decode(NewItemDTO.self, from: req, limit: RequestBodies.defaultLimit)
        guard let text = body.text, !text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else {
            throw HTTPError(.badRequest, message: "text is required")
        }
        try node.validate(title: body.title, text: text, tags: body.tags, source: body.source)
        let id = try await node.remember(text: text, title: body.title, tags: body.tags ?? [], source: body.source)
        return EditedResponse(status: .created, response: CreatedDTO(id: id))
    }

    /// The item after the edit, with its new version as `ETag` (for the next If-Match).
    @Sendable func update(_ req: Request, _ ctx: Context) async throws -> Response {
        let id = try ctx.parameters.require("id")
        let body = try await RequestBodies.decode(ItemChangeDTO.self, from: req, limit: RequestBodies.defaultLimit)
        try node.validate(title: body.title, text: body.text, tags: body.tags, source: nil)
        return try Self.versioned(
            try await node.update(id: id, text: body.text, title: body.title, tags: body.tags, basedOn: try Self.ifMatch(req)), req, ctx)
    }

    @Sendable func forget(_ req: Request, _ ctx: Context) async throws -> ForgottenDTO {
        ForgottenDTO(forgotten: try await node.forget(id: try ctx.parameters.require("id")))
    }

    @Sendable func search(_ req: Request, _ ctx: Context) async throws -> SearchResultsDTO {
        guard let q = Query.string(req, "q"), !q.trimmingCharacters(in: .whitespaces).isEmpty else {
            throw HTTPError(.badRequest, message: "q is required")
        }
        let k = try Query.int(req, "k", default: 10, range: 1...100)
        let hits = try await node.search(
            q, k: k, mode: Query.string(req, "mode") ?? "hybrid",
            tag: Query.string(req, "tag"), source: Query.string(req, "source"))
        return SearchResultsDTO(hits: hits)
    }
}
