import Foundation
import Synchronization

/// The client's stop sequences (OpenAI `stop`, Ollama `options.stop`): generated text ends
/// before the first of them, which is not returned, as the originals do. While streaming, a
/// tail that could still grow into a sequence is held back until it cannot.
struct StopFilter: Sendable {
    let sequences: [String]
    private(set) var held = ""
    /// True once a sequence appeared: nothing more is returned.
    private(set) var stopped = false

    init(_ sequences: [String]) { self.sequences = sequences }

    /// Takes the next generated piece; returns what may be passed on now.
    mutating func feed(_ piece: String) -> String {
        guard !stopped else { return "" }
        held += piece
        guard !sequences.isEmpty else { defer { held = "" }; return held }
        if let cut = Self.firstMatch(held, sequences) {
            stopped = true
            defer { held = "" }
            return String(held[..<cut])
        }
        let keep = Self.partialTail(held, sequences)
        let split = held.index(held.endIndex, offsetBy: -keep)
        defer { held = String(held[split...]) }
        return String(held[..<split])
    }

    /// At the end of generation: what was held back (a tail that never became a sequence).
    mutating func finish() -> String {
        defer { held = "" }
        return stopped ? "" : held
    }

    /// `text` cut before the first stop sequence, and whether one was found.
    static func cut(_ text: String, at sequences: [String]) -> (text: String, stopped: Bool) {
        guard let i = firstMatch(text, sequences) else { return (text, false) }
        return (String(text[..<i]), true)
    }

    static func firstMatch(_ text: String, _ sequences: [String]) -> String.Index? {
        sequences.compactMap { text.range(of: $0, options: .literal)?.lowerBound }.min()
    }

    /// The length (in characters) of the longest end of `text` that begins one of the sequences.
    static func partialTail(_ text: String, _ sequences: [String]) -> Int {
        let longest = min(text.count, (sequences.map(\.count).max() ?? 1) - 1)
        guard longest > 0 else { return 0 }
        for k in stride(from: longest, through: 1, by: -1) {
            let tail = text.suffix(k)
            if sequences.contains(where: { $0.hasPrefix(tail) }) { return k }
        }
        return 0
    }
}

/// A `StopFilter` shared by a generation's callback (called one piece at a time) and the code
/// that ends the response.
final class StopStream: Sendable {
    private let filter: Mutex<StopFilter>

    init(_ sequences: [String]) { filter = Mutex(StopFilter(sequences)) }

    func feed(_ piece: String) -> String { filter.withLock { $0.feed(piece) } }
    func finish() -> String { filter.withLock { $0.finish() } }
    var stopped: Bool { filter.withLock { $0.stopped } }
}
