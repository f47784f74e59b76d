import Foundation
import HTTPTypes
import Hummingbird
import KianaAI

/// /api/v1/ask (grounded answers, streamed as SSE or one JSON object) and /api/v1/conversations.
struct AskController<Context: RequestContext>: Sendable {
    let node: any NodeAPI

    var routes: RouteCollection<Context> {
        let r = RouteCollection(context: Context.self)
        r.post("ask", use: ask)
        r.get("conversations", use: conversations)
        r.get("conversations/:id", use: conversation)
        r.delete("conversations/:id", use: deleteConversation)
        return r
    }

    @Sendable func ask(_ req: Request, _ ctx: Context) async throws -> Response {
        try Compat.admit(node.acceptsGeneration())
        let body = try await RequestBodies.decode(AskRequestDTO.self, from: req, limit: RequestBodies.defaultLimit)
        guard let q = body.question, !q.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else {
            throw HTTPError(.badRequest, message: "question is required")
        }
        // The node's own checks, before a stream starts (a 400, not an error event in a 200).
        _ = try Grounding.checkedQuestion(q, conversation: body.conversation)
        let maxTokens = try Compat.positive(body.max_tokens, "max_tokens")
        let sampling = try Compat.sampling(temperature: body.temperature, topP: body.top_p, seed: body.seed)
        let node = self.node
        let conversation = body.conversation
        // Checked before the stream starts, so a wrong ID is a 404, not an error event in a 200.
        if let conversation, try await node.conversation(conversation) == nil {
            throw HTTPError(.notFound, message: "no conversation \(conversation)")
        }
        if body.stream ?? true {
            return Streaming.events { emit in
                let (r, conv) = try await node.ask(q, conversation: conversation, maxTokens: maxTokens, sampling: sampling) { piece in
                    emit(JSONText.event("token", TokenDTO(text: piece)))
                }
                _ = emit(JSONText.event("done", Self.answer(r, conv)))
            }
        }
        let (r, conv) = try await node.ask(q, conversation: conversation, maxTokens: maxTokens, sampling: sampling) { _ in true }
        return try Self.answer(r, conv).response(from: req, context: ctx)
    }

    static func answer(_ r: AssistantReply, _ conversation: String) -> AnswerDTO {
        AnswerDTO(
            answer: r.text, conversation: conversation, citations: r.citations, support: r.support, abstained: r.abstained,
            finish_reason: Compat.finishReason(r.stopReason))
    }

    @Sendable func conversations(_ req: Request, _ ctx: Context) async throws -> ConversationsDTO {
        ConversationsDTO(conversations: try await node.conversations())
    }

    /// Deletes a conversation and what was asked and answered in it: 204, or 404 if there is none.
    @Sendable func deleteConversation(_ req: Request, _ ctx: Context) async throws -> Response {
        let id = try ctx.parameters.require("id")
        guard try await node.deleteConversation(id) else { throw HTTPError(.notFound, message: "no conversation \(id)") }
        return Response(status: .noContent)
    }

    @Sendable func conversation(_ req: Request, _ ctx: Context) async throws -> ConversationMessagesDTO {
        let id = try ctx.parameters.require("id")
        guard let messages = try await node.conversation(id) else { throw HTTPError(.notFound, message: "no conversation \(id)") }
        return ConversationMessagesDTO(id: id, messages: messages)
    }
}
