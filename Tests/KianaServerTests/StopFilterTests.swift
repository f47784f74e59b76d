import PropertyBased
import Testing

@testable import KianaServer

/// Stop sequences cut generated text the same way whether it arrives whole or in pieces.
@Suite struct StopFilterTests {
    /// Scalars that combine into one character with their neighbours, too: a combining acute,
    /// a zero-width joiner between emoji, "\r" before "\n".
    static let alphabet: [Unicode.Scalar] = ["a", "b", ".", " ", "\u{301}", "\u{200D}", "👨", "\r", "\n"]

    static func text(_ numbers: [UInt64]) -> String {
        var v = String.UnicodeScalarView()
        v.append(contentsOf: numbers.map { alphabet[Int($0 % UInt64(alphabet.count))] })
        return String(v)
    }

    @Test("Fed in any pieces, the filter passes on exactly the text before the first stop sequence")
    func piecesMatchTheWholeText() async {
        await propertyCheck(
            count: 400, input: Gen.uint64(in: 0...UInt64.max).array(of: 0...60), Gen.uint64(in: 0...UInt64.max).array(of: 1...6),
            Gen.uint64(in: 0...UInt64.max).array(of: 1...20)
        ) { textSeed, stopSeed, splits in
            let text = Self.text(textSeed)
            // One or two sequences of 1-3 characters from the same alphabet.
            let stops = [Self.text(Array(stopSeed.prefix(3)))] + (stopSeed.count > 3 ? [Self.text(Array(stopSeed.dropFirst(3)))] : [])
            let expected = StopFilter.cut(text, at: stops)
            var filter = StopFilter(stops)
            // Split between scalars, so a piece may end inside a character.
            var out: [Unicode.Scalar] = []
            var rest = ArraySlice(Array(text.unicodeScalars))
            for s in splits where !rest.isEmpty {
                let n = Int(s % 5)
                out += filter.feed(StopFilter.string(rest.prefix(n))).unicodeScalars
                rest = rest.dropFirst(n)
            }
            out += filter.feed(StopFilter.string(rest)).unicodeScalars
            out += filter.finish().unicodeScalars
            #expect(out.elementsEqual(expected.text.unicodeScalars), "\(text.debugDescription) stop \(stops)")
            #expect(filter.stopped == expected.stopped)
        }
    }

    @Test func examples() {
        var f = StopFilter(["\n\n", "END"])
        #expect(f.feed("Hello") == "Hello")
        #expect(f.feed(" wor") == " wor")
        #expect(f.feed("ld\n") == "ld")  // "\n" may begin "\n\n": held
        #expect(f.feed("x E") == "\nx ")  // it did not; "E" may begin "END"
        #expect(f.feed("NDING") == "")
        #expect(f.stopped && f.finish() == "")
        var none = StopFilter([])
        #expect(none.feed("a\n\nb") == "a\n\nb" && none.finish() == "" && !none.stopped)
        #expect(StopFilter.cut("one two", at: ["two", " "]) == ("one", true))
        #expect(StopFilter.cut("one", at: ["x"]) == ("one", false))
        // The sequence that completes first wins, as a stream sees it.
        #expect(StopFilter.cut("xyz", at: ["xyz", "y"]) == ("x", true))
        var crlf = StopFilter(["\r\n"])
        #expect(crlf.feed("line\r") == "line" && crlf.feed("\nmore") == "" && crlf.stopped)
    }
}
