import Foundation
import KianaAI
import KianaStore

/// What an answer is decided from: the retrieved sources, their sentences scored as evidence
/// (best first) and the question's words the knowledge base does not know.
public struct Evidence: Sendable {
    public var sources: [GroundingSource]
    public var ranked: [EvidenceSentence]
    /// The sentences a complete answer needs (one per part of a two-part question).
    public var needed: [EvidenceSentence]
    public var unknownTerms: [String]
}

extension Node {
    /// The sources retrieved for a question and every sentence of them scored as evidence, best
    /// first (`Trust.evidence`).
    public func evidence(
        _ q: String, retriever: Retriever?, count: Int, settings: TrustSettings, question: String? = nil
    ) async throws -> Evidence {
        // parts of the question itself, not of a follow-up's context
        let parts = Trust.parts(question ?? q)
        var sources = try await retrieveSources(q, retriever: retriever, count: count)
        // each part of a two-part question brings its own best sources
        for part in parts {
            for s in try await retrieveSources(part, retriever: retriever, count: 2) where !sources.contains(where: { $0.id == s.id }) {
                sources.append(s)
            }
        }
        let embedder = retriever?.embedder
        let node = self
        let all = sources
        return try await blocking {
            let rankings = Trust.evidence(
                questions: [q] + parts, sources: all, settings: settings, answerType: AnswerType.of(q),
                embed: embedder.map { e in { e.embed($0) } })
            let needed = Trust.needed(rankings[0], question: q, partRankings: Array(rankings.dropFirst()), settings: settings)
            // The index splits "Wi-Fi" into wi and fi: a word the retrieved sources say joined
            // ("wifi") is not unknown (decision 115).
            let said = all.reduce(into: Set<String>()) { $0.formUnion(Trust.termWords(($1.title ?? "") + "\n" + $1.text)) }
            let unknown = try node.searchStore.unknownTerms(Trust.subjectWords(q)).filter { !said.contains($0) }
            return Evidence(
                sources: all, ranked: rankings[0], needed: needed, unknownTerms: unknown)
        }
    }

    /// A grounded answer the owner can trust (docs/decisions.md, "Answers you can trust"):
    /// retrieve; score every source sentence as evidence; abstain without a model call when the
    /// best evidence is too weak; otherwise show the model only the best evidence sentences with
    /// a prompt in the question's language, draft greedily, keep the drafted sentences whose
    /// numbers and words the sources really say, and quote the best source sentence when none
    /// holds up. The checked answer goes to `onText` once, whole. The result has no
    /// conversation yet (`Node.ask` stores the turn).
    func trustedAnswer(
        _ q: String, context: String? = nil, backend: any ChatBackend, retriever: Retriever?, options: AskOptions,
        onText: @escaping @Sendable (String) -> Bool
    ) async throws -> AskResult {
        let settings = options.trust
        let language = Language.detect(q)
        let found = try await evidence(
            context.map { String($0.prefix(2000)) + " " + q } ?? q, retriever: retriever, count: options.sources, settings: settings, question: q)
        let (sources, ranked) = (found.sources, found.ranked)
        if Trust.shouldAbstain(ranked, unknownTerms: found.unknownTerms, withVectors: retriever != nil, settings: settings) {
            let text = Trust.abstention(language)
            _ = onText(text)
            var r = AskResult(answer: text, citations: [], sources: sources, conversationId: "", reply: nil)
            r.abstained = true
            return r
        }
        // The prompt must leave room for the draft: fewer evidence sentences, else a clear error.
        let answerTokens = min(options.maxTokens, settings.answerTokens)
        var evidence = Trust.chosen(ranked, needed: found.needed, settings: settings)
        var messages = Trust.prompt(question: q, evidence: evidence, language: language)
        func cost(_ m: [ChatMessage]) -> Int { m.reduce(0) { $0 + backend.countTokens($1.content) + 8 } }
        while cost(messages) + answerTokens > backend.contextSize && evidence.count > 1 {
            evidence.removeLast()
            messages = Trust.prompt(question: q, evidence: evidence, language: language)
        }
        guard cost(messages) + answerTokens <= backend.contextSize else {
            throw KianaNodeError(
                .contextFull,
                "the question with its evidence (\(cost(messages)) tokens) does not fit the model's context of \(backend.contextSize) tokens with \(answerTokens) left for the answer; shorten the question or use a larger --context"
            )
        }
        var request = ChatRequest(messages: messages)
        request.maxTokens = answerTokens
        request.sampling = .greedy
        request.stop = ["\n"]
        let reply = try await backend.chat(request) { _ in true }
        var final = Trust.finalAnswer(draft: reply.text, question: q, sources: sources, evidence: ranked, needed: found.needed)
        // What is delivered decides how it ended: a draft cut at the limit and kept is "length";
        // a quoted source sentence is whole. The caller's token limit holds for what is
        // delivered too (a quote can be longer than the draft it replaced): cut at a word.
        var delivered = reply
        delivered.stopReason = reply.stopReason == .length && !final.quoted ? .length : .endOfGeneration
        // An answer from a note about a neighbour of what was asked ("green tea" for "black tea")
        // says so first (decision 115). The answer rests on its best-scored supporting sentence
        // (another may only complete it: "… at the music school" beside the school asked for).
        // The note counts toward the limit; a limit too small for the note and a few words of
        // the answer gets the answer alone (the fact matters more).
        var note: String?
        if !final.answer.isEmpty, let e = final.support.max(by: { $0.score < $1.score }),
            let n = Trust.neighbour(question: q, sentence: e.text, source: sources[e.source - 1])
        {
            let text = Trust.neighbourNote(n, language: language)
            if backend.countTokens(text) + Self.noteRoom <= options.maxTokens { note = text }
        }
        let budget = options.maxTokens - (note.map { backend.countTokens($0 + " ") } ?? 0)
        if backend.countTokens(final.answer) > budget {
            final.answer = Self.prefix(final.answer, tokens: budget, count: backend.countTokens)
            delivered.stopReason = .length
        }
        if let note { final.answer = note + " " + final.answer }
        _ = onText(final.answer)
        let support = final.support.map { SupportingSentence(number: $0.source, id: sources[$0.source - 1].id, text: $0.text) }
        let citations = final.cited.map { n in
            let s = sources[n - 1]
            let snippet = final.support.first { $0.source == n }?.text ?? String(s.text.prefix(160))
            return Citation(number: n, id: s.id, title: s.title, source: s.source, snippet: snippet)
        }
        var r = AskResult(answer: final.answer, citations: citations, sources: sources, conversationId: "", reply: delivered)
        r.support = support
        r.quoted = final.quoted
        r.note = note
        r.draft = reply.text
        return r
    }

    /// Tokens of the answer a neighbour note must leave room for under the caller's limit.
    static let noteRoom = 12

    /// The longest prefix of `text`, cut after a whole word, that `count` puts at `tokens` or
    /// fewer (the first word's characters when not even one word fits).
    static func prefix(_ text: String, tokens: Int, count: (String) -> Int) -> String {
        let words = text.split(separator: " ", omittingEmptySubsequences: false)
        var lo = 0
        var hi = words.count
        // The most whole words that fit: binary search (the count grows with the prefix).
        while lo < hi {
            let mid = (lo + hi + 1) / 2
            if count(words.prefix(mid).joined(separator: " ")) <= tokens { lo = mid } else { hi = mid - 1 }
        }
        if lo > 0 { return words.prefix(lo).joined(separator: " ") }
        var chars = Array(words.first ?? "")
        while !chars.isEmpty && count(String(chars)) > max(tokens, 1) { chars.removeLast() }
        return String(chars)
    }
}
