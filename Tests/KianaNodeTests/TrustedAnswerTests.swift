import Foundation
import KianaTestSupport
import Testing

/// Answers you can trust, end to end with the embedded model (`kiana ask --json`) on a fixture of
/// their own: numbers and dates copied exactly, abstention when nothing was taught, German
/// answered in German from a German note, and the supporting sentence under every answer.
@Suite(.needsModels) struct TrustedAnswerTests {
    static let facts = [
        "The dentist Dr. Weber can be reached at 0761 387 2290.",
        "Lena's passport expires on 12 June 2026.",
        "The spare key is under the blue flower pot next to the back door.",
        "For the pizza dough I use 250 g of flour, 160 ml of water and 5 g of dry yeast.",
        "Die Biotonne wird jeden Dienstag geleert, die gelbe Tonne alle zwei Wochen am Freitag.",
        "Unser Tierarzt ist Dr. Albers in der Talstraße 12, Telefon 0761 45 67 80.",
    ]

    func ask(_ d: String, _ question: String) async throws -> [String: Any] {
        let r = try await kiana(["ask", question, "--json", "--data-dir", d])
        #expect(r.status == 0, "\(r.err)")
        return (try? JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any]) ?? [:]
    }

    /// A fresh node taught `facts` (nil when the models are missing outside CI), and the
    /// items' IDs in order.
    func node(taught facts: [String]) async throws -> (TempDir, [String])? {
        guard Models.hasSmolLM && Models.hasMiniLM else {
            if Shared.isCI { Issue.record("the models are missing from \(Models.directory)") }
            return nil
        }
        let tmp = try TempDir()
        #expect(try await kiana(["init", "--data-dir", tmp.path]).status == 0)
        var ids: [String] = []
        for f in facts {
            let r = try await kiana(["remember", f, "--data-dir", tmp.path])
            #expect(r.status == 0, "\(r.err)")
            ids.append(r.out.split(whereSeparator: { !$0.isHexDigit }).first { $0.count == 32 }.map(String.init) ?? "")
        }
        return (tmp, ids)
    }

    @Test func copiesAbstainsAndAnswersInTheQuestionsLanguage() async throws {
        guard let (tmp, ids) = try await node(taught: Self.facts) else { return }
        defer { tmp.cleanup() }
        let d = tmp.path
        func cited(_ o: [String: Any]) -> [String] { (o["citations"] as? [[String: Any]] ?? []).compactMap { $0["id"] as? String } }
        func support(_ o: [String: Any]) -> [String] { (o["support"] as? [[String: Any]] ?? []).compactMap { $0["text"] as? String } }

        // A phone number and a date, copied exactly, cited, with the sentence behind them.
        for (question, fact, value) in [
            ("What is the dentist's phone number?", 0, "0761 387 2290"), ("When does Lena's passport expire?", 1, "12 June 2026"),
            ("How much flour goes into the pizza dough?", 3, "250 g"),
        ] {
            let o = try await ask(d, question)
            let answer = o["answer"] as? String ?? ""
            #expect(answer.contains(value), "\(question) → \(answer)")
            #expect(cited(o) == [ids[fact]], "\(question) → \(o)")
            #expect(support(o) == [Self.facts[fact]], "\(question) → \(o)")
            #expect(o["abstained"] as? Bool == false)
            // no other number than the source's
            let digits = answer.replacingOccurrences(of: #"\[\d+\]"#, with: "", options: .regularExpression).filter(\.isNumber)
            #expect(Self.facts[fact].filter(\.isNumber).contains(digits), "\(answer)")
        }

        // Nothing taught answers these: the fixed sentence in the question's language, no sources.
        for (question, start) in [
            ("What is the name of my cat?", "I don't know that yet"), ("When is the car inspection due?", "I don't know that yet"),
            ("Wie heißt unser Hamster?", "Das weiß ich noch nicht"),
        ] {
            let o = try await ask(d, question)
            #expect((o["answer"] as? String ?? "").hasPrefix(start), "\(question) → \(o)")
            #expect(o["abstained"] as? Bool == true && cited(o).isEmpty, "\(question) → \(o)")
        }

        // German question, German note: answered in German, from that note.
        let o = try await ask(d, "Wann wird die Biotonne geleert?")
        let answer = o["answer"] as? String ?? ""
        #expect(answer.contains("Dienstag"), "\(answer)")
        #expect(cited(o) == [ids[4]], "\(o)")
        let german = ["die", "wird", "der", "und", "ist", "am", "jeden"]
        #expect(answer.lowercased().split(separator: " ").contains { german.contains(String($0)) }, "not German: \(answer)")
        let vet = try await ask(d, "Wie ist die Telefonnummer vom Tierarzt?")
        #expect((vet["answer"] as? String ?? "").contains("0761 45 67 80"), "\(vet)")

        // The CLI shows the supporting sentence under the answer.
        let r = try await kiana(["ask", "When does Lena's passport expire?", "--data-dir", d])
        #expect(r.out.contains("Supported by:\n[1] “Lena's passport expires on 12 June 2026.”"), "\(r.out)")
    }

    /// A question about a neighbour of what was taught (black tea when only green tea's note
    /// exists, the garage door's code when only the front door's) is answered from the
    /// neighbour only after a note that says what that note is about; a paraphrase ("main
    /// door") gets the same note, and the taught facts themselves none.
    @Test func anAnswerFromANeighbourSaysWhatItIsAbout() async throws {
        let facts = [
            "Green tea steeps for 2 minutes at 80 degrees.", "The front door code is 4812.", "Anna's birthday is on 14 March.",
            "Ben's football practice is on Wednesdays at 5pm at Hill Park.", "Black coffee is made with 18 grams of beans.",
        ]
        guard let (tmp, _) = try await node(taught: facts) else { return }
        defer { tmp.cleanup() }
        let d = tmp.path
        for (question, note, value) in [
            ("How long does black tea steep?", "What I was taught is about “Green tea” (you asked about “black tea”): ", "2 minutes"),
            ("What is the garage door code?", "What I was taught is about “front door” (you asked about “garage door”): ", "4812"),
            ("What is the main door code?", "What I was taught is about “front door” (you asked about “main door”): ", "4812"),
        ] {
            let o = try await ask(d, question)
            let answer = o["answer"] as? String ?? ""
            #expect(o["abstained"] as? Bool == false && answer.hasPrefix(note) && answer.contains(value), "\(question) → \(o)")
        }
        // Anna's birthday is not said to be Ben's, nor is his football practice
        let ben = (try await ask(d, "When is Ben's birthday?"))["answer"] as? String ?? ""
        #expect(!ben.lowercased().contains("ben's birthday is") && !ben.lowercased().contains("birthday of ben"), "\(ben)")
        // a small answer limit keeps the fact, not the note
        let short = try await kiana(["ask", "How long does black tea steep?", "-n", "15", "--json", "--data-dir", d])
        let shortAnswer = ((try? JSONSerialization.jsonObject(with: Data(short.out.utf8))) as? [String: Any])?["answer"] as? String ?? ""
        #expect(shortAnswer.contains("2 minutes") && !shortAnswer.contains("What I was taught"), "\(short.out) \(short.err)")
        for (question, value) in [("How long does green tea steep?", "2 minutes"), ("What is the front door code?", "4812")] {
            let o = try await ask(d, question)
            let answer = o["answer"] as? String ?? ""
            #expect(o["abstained"] as? Bool == false && answer.contains(value) && !answer.contains("What I was taught"), "\(question) → \(o)")
        }
    }
}
