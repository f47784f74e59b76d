import Foundation
import Synchronization

/// The client's stop sequences (OpenAI `stop`, Ollama `options.stop`): generated text ends
/// before the first of them to complete, which is not returned, as the originals do. While
/// streaming, a tail that could still grow into a sequence is held back until it cannot.
/// Text is compared as Unicode scalars, so a piece that splits a character (a combining mark,
/// an emoji joined by U+200D, "\r" then "\n") matches as the whole text would.
struct StopFilter: Sendable {
    let sequences: [[Unicode.Scalar]]
    private var held: [Unicode.Scalar] = []
    /// True once a sequence appeared: nothing more is returned.
    private(set) var stopped = false

    init(_ sequences: [String]) { self.sequences = sequences.map { Array($0.unicodeScalars) }.filter { !$0.isEmpty } }

    /// Takes the next generated piece; returns what may be passed on now.
    mutating func feed(_ piece: String) -> String {
        guard !stopped else { return "" }
        held += piece.unicodeScalars
        if let cut = Self.firstMatch(held, sequences) {
            stopped = true
            defer { held = [] }
            return Self.string(held[..<cut])
        }
        let keep = Self.partialTail(held, sequences)
        defer { held = Array(held.suffix(keep)) }
        return Self.string(held.dropLast(keep))
    }

    /// At the end of generation: what was held back (a tail that never became a sequence).
    mutating func finish() -> String {
        defer { held = [] }
        return stopped ? "" : Self.string(held[...])
    }

    /// `text` cut before the first stop sequence to complete, and whether there was one.
    static func cut(_ text: String, at sequences: [String]) -> (text: String, stopped: Bool) {
        let scalars = Array(text.unicodeScalars)
        guard let i = firstMatch(scalars, sequences.map { Array($0.unicodeScalars) }.filter { !$0.isEmpty }) else { return (text, false) }
        return (string(scalars[..<i]), true)
    }

    /// The start of the occurrence that ends first (of those, the one that starts first): the
    /// one a stream sees complete first, so whole text and any split of it agree.
    static func firstMatch(_ text: [Unicode.Scalar], _ sequences: [[Unicode.Scalar]]) -> Int? {
        var best: (end: Int, start: Int)?
        for s in sequences where s.count <= text.count {
            for start in 0...(text.count - s.count) where text[start] == s[0] && text[start..<(start + s.count)].elementsEqual(s) {
                let end = start + s.count
                if best.map({ end < $0.end || (end == $0.end && start < $0.start) }) ?? true { best = (end, start) }
                break
            }
        }
        return best?.start
    }

    /// The length of the longest end of `text` that begins one of the sequences.
    static func partialTail(_ text: [Unicode.Scalar], _ sequences: [[Unicode.Scalar]]) -> Int {
        let longest = min(text.count, (sequences.map(\.count).max() ?? 1) - 1)
        guard longest > 0 else { return 0 }
        for k in stride(from: longest, through: 1, by: -1) {
            let tail = text.suffix(k)
            if sequences.contains(where: { $0.count > k && $0.prefix(k).elementsEqual(tail) }) { return k }
        }
        return 0
    }

    static func string(_ scalars: ArraySlice<Unicode.Scalar>) -> String {
        var v = String.UnicodeScalarView()
        v.append(contentsOf: scalars)
        return String(v)
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
