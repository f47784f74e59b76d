import Foundation

/// How the next token is chosen. `temperature == 0` (or `greedy`) takes the most likely token.
public struct SamplingOptions: Sendable, Equatable, Codable {
    public var temperature: Float = 0.7
    public var topK: Int = 40
    public var topP: Float = 0.95
    public var minP: Float = 0.05
    /// Logits of tokens among the last `repeatLastN` are divided (if positive) or multiplied
    /// (if negative) by this, as llama.cpp does. 1 turns it off.
    public var repeatPenalty: Float = 1.1
    public var repeatLastN: Int = 64
    /// Fixed seed for reproducible sampling; nil draws one.
    public var seed: UInt64?

    public init() {}
    public static var greedy: SamplingOptions {
        var s = SamplingOptions()
        s.temperature = 0
        s.repeatPenalty = 1
        return s
    }
    public var isGreedy: Bool { temperature <= 0 }

    /// Checks ranges; the message names the bad option.
    public func validate() throws(KianaAIError) {
        func bad(_ m: String) -> KianaAIError { KianaAIError(.invalidInput, m) }
        guard temperature >= 0, temperature <= 10, temperature.isFinite else { throw bad("temperature must be between 0 and 10") }
        guard topK >= 0 else { throw bad("top-k must be 0 (off) or positive") }
        guard topP > 0, topP <= 1 else { throw bad("top-p must be in (0, 1]") }
        guard minP >= 0, minP < 1 else { throw bad("min-p must be in [0, 1)") }
        guard repeatPenalty > 0, repeatPenalty <= 10 else { throw bad("repeat penalty must be in (0, 10]") }
        guard repeatLastN >= 0 else { throw bad("repeat-last-n must not be negative") }
    }
}

/// Chooses tokens from logits: repetition penalty, then greedy or
/// top-k → top-p → min-p → temperature → a draw from the seeded generator.
public struct Sampler: Sendable {
    public var options: SamplingOptions
    var rng: SplitMix64

    public init(_ options: SamplingOptions) {
        self.options = options
        rng = SplitMix64(seed: options.seed ?? UInt64.random(in: 0...UInt64.max))
    }

    public mutating func sample(_ logits: [Float], recent: ArraySlice<Int32>) -> Int32 {
        var l = logits
        if options.repeatPenalty != 1 {
            for t in Set(recent.suffix(options.repeatLastN)) where t >= 0 && Int(t) < l.count {
                let v = l[Int(t)]
                l[Int(t)] = v > 0 ? v / options.repeatPenalty : v * options.repeatPenalty
            }
        }
        if options.isGreedy {
            var best = 0
            for i in 1..<l.count where l[i] > l[best] { best = i }
            return Int32(best)
        }
        // Candidates sorted by logit (top-k first, so the sort is small).
        let k = options.topK > 0 ? min(options.topK, l.count) : l.count
        let idx: [Int]
        if k < l.count {
            // The k largest in O(n log k) with the index's bounded heap (ties keep the lower
            // index, as a stable sort would), not a sort of the whole vocabulary per token.
            var heap = BoundedHeap(capacity: k)
            for i in l.indices { heap.offer(i, l[i]) }
            idx = heap.sortedDescending().map(\.label)
        } else {
            idx = Array(0..<l.count).sorted { l[$0] > l[$1] }
        }
        let mx = l[idx[0]]
        var p = idx.map { Foundation.exp((l[$0] - mx) / max(options.temperature, 1e-6)) }
        var sum = p.reduce(0, +)
        // top-p: the smallest prefix whose mass reaches p.
        var keep = p.count
        if options.topP < 1 {
            var acc: Float = 0
            for i in 0..<p.count {
                acc += p[i] / sum
                if acc >= options.topP {
                    keep = i + 1
                    break
                }
            }
        }
        // min-p: drop tokens less likely than min-p × the most likely.
        if options.minP > 0 {
            let floor = p[0] * options.minP
            keep = min(keep, max(1, p.prefix(keep).firstIndex { $0 < floor } ?? keep))
        }
        p = Array(p.prefix(keep))
        sum = p.reduce(0, +)
        let r = Float(Double(rng.next() >> 11) / Double(1 << 53)) * sum
        var acc: Float = 0
        for i in 0..<p.count {
            acc += p[i]
            if r < acc { return Int32(idx[i]) }
        }
        return Int32(idx[p.count - 1])
    }
}

/// Limits and stop conditions of one generation.
public struct GenerationOptions: Sendable {
    public var maxTokens: Int = 512
    public var sampling = SamplingOptions()
    /// Generation ends before the first occurrence of any of these strings.
    public var stop: [String] = []
    public init() {}
}

/// Why generation ended.
public enum StopReason: String, Sendable, Codable {
    /// An end-of-generation token.
    case endOfGeneration = "stop"
    /// A stop string.
    case stopString = "stop_string"
    /// The token limit.
    case length
    /// The context window is full.
    case contextFull = "context_full"
    /// The caller asked to stop.
    case cancelled
}

public struct GenerationResult: Sendable {
    public var text: String
    public var tokens: [Int32]
    public var promptTokens: Int
    /// Prompt tokens that were already in the cache and not recomputed.
    public var reusedTokens: Int
    public var stopReason: StopReason
    public var promptSeconds: Double
    public var generationSeconds: Double
    public var promptTokensPerSecond: Double { Double(promptTokens - reusedTokens) / max(promptSeconds, 1e-9) }
    public var tokensPerSecond: Double { Double(tokens.count) / max(generationSeconds, 1e-9) }
}

extension LlamaSession {
    /// Completes `prompt` (token ids) and streams text to `onText`, which returns false to stop.
    /// A cached prefix shared with the previous prompt is reused. A prompt longer than the
    /// context is an error: nothing of it is dropped silently.
    public func generate(
        prompt: [Int32], options: GenerationOptions,
        onText: (String) -> Bool = { _ in true }
    ) throws(KianaAIError) -> GenerationResult {
        try options.sampling.validate()
        guard !prompt.isEmpty else { throw KianaAIError(.invalidInput, "the prompt is empty") }
        guard prompt.count < contextSize else {
            throw KianaAIError(
                .contextFull, "the prompt has \(prompt.count) tokens; the context holds \(contextSize) (use a larger --context or a shorter prompt)")
        }
        var common = 0
        while common < min(tokens.count, prompt.count - 1), tokens[common] == prompt[common] { common += 1 }
        truncate(to: common)
        let t0 = DispatchTime.now().uptimeNanoseconds
        try eval(Array(prompt[common...]))
        let t1 = DispatchTime.now().uptimeNanoseconds
        var sampler = Sampler(options.sampling)
        var decoder = BPETokenizer.StreamDecoder(model.tokenizer)
        var generated: [Int32] = []
        var text = ""
        // Counted in Unicode scalars: a token that joins onto the last character (a combining
        // mark, "\u{200D}" and an emoji, "\n" after "\r") adds no Character but must be passed on.
        var emitted = 0
        var reason = StopReason.length
        let eog = model.tokenizer.endOfGeneration
        let maxStop = options.stop.map(\.count).max() ?? 0

        /// Emits text that can no longer turn into a stop string; returns false when told to stop.
        func flush(upTo end: Int) -> Bool {
            guard end > emitted else { return true }
            let scalars = text.unicodeScalars
            let s = scalars.index(scalars.startIndex, offsetBy: emitted)
            let e = scalars.index(scalars.startIndex, offsetBy: end)
            emitted = end
            return onText(String(scalars[s..<e]))
        }

        loop: while generated.count < options.maxTokens {
            let next = sampler.sample(logits, recent: (prompt + generated)[...])
            if eog.contains(next) {
                reason = .endOfGeneration
                break
            }
            generated.append(next)
            text += decoder.push(next)
            if maxStop > 0 {
                for s in options.stop where !s.isEmpty {
                    if let r = text.range(of: s) {
                        text = String(text[..<r.lowerBound])
                        reason = .stopString
                        break loop
                    }
                }
                // Hold back a tail that could still become a stop string (in scalars, as flushed).
                let scalars = Array(text.unicodeScalars)
                var hold = 0
                for s in options.stop where !s.isEmpty {
                    let stop = Array(s.unicodeScalars)
                    for n in stride(from: min(stop.count - 1, scalars.count), to: 0, by: -1) where stop.prefix(n).elementsEqual(scalars.suffix(n)) {
                        hold = max(hold, n)
                        break
                    }
                }
                if !flush(upTo: scalars.count - hold) {
                    reason = .cancelled
                    break
                }
            } else if !flush(upTo: text.unicodeScalars.count) {
                reason = .cancelled
                break
            }
            if tokens.count >= contextSize {
                reason = .contextFull
                break
            }
            try eval([next])
        }
        if reason != .stopString && reason != .cancelled { text += decoder.flush() }
        if reason != .cancelled { _ = flush(upTo: text.unicodeScalars.count) }
        let t2 = DispatchTime.now().uptimeNanoseconds
        return GenerationResult(
            text: text, tokens: generated, promptTokens: prompt.count, reusedTokens: common,
            stopReason: reason, promptSeconds: Double(t1 - t0) / 1e9, generationSeconds: Double(t2 - t1) / 1e9)
    }
}
