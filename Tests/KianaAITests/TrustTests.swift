import Foundation
import PropertyBased
import Testing

@testable import KianaAI

/// The answer pipeline's pure parts: language, sentences, number groups, the draft check, the
/// evidence ranking and the final answer. The failures the checks must catch are the ones a
/// new user saw from the 135M model (issue "Answers you can trust").
@Suite struct TrustTests {
    static let sources = [
        GroundingSource(id: "a", title: nil, text: "The spare key is under the blue flower pot next to the back door.", source: nil),
        GroundingSource(id: "b", title: nil, text: "Lena's passport expires on 12 June 2026.", source: nil),
        GroundingSource(id: "c", title: "Pizza dough", text: "I use 250 g of flour, 160 ml of water and 5 g of dry yeast.", source: nil),
        GroundingSource(id: "d", title: nil, text: "Die Biotonne wird jeden Dienstag geleert, die gelbe Tonne alle zwei Wochen am Freitag.", source: nil),
        GroundingSource(id: "e", title: nil, text: "The dentist Dr. Weber can be reached at 0761 387 2290.", source: nil),
        GroundingSource(id: "f", title: "Coffee machine", text: "When the coffee machine shows C-12 it needs descaling.", source: nil),
    ]

    @Test(arguments: [
        ("Wann wird die Biotonne geleert?", Language.de), ("When is the bin emptied?", .en),
        ("Wie ist die Festnetznummer meiner Eltern?", .de), ("What is my parents' landline number?", .en),
        ("Wer hat einen Ersatzschlüssel?", .de), ("Where is the spare key?", .en), ("Seit wann ist Mama in Rente?", .de),
    ])
    func language(_ text: String, _ expected: Language) {
        #expect(Language.detect(text) == expected)
    }

    @Test func sentences() {
        #expect(Sentences.split("Mama ist seit dem 3. März in Rente. Papa war Ingenieur.") == ["Mama ist seit dem 3. März in Rente.", "Papa war Ingenieur."])
        #expect(Sentences.split("Call Dr. Weber at 0761 387 2290. He is nice!") == ["Call Dr. Weber at 0761 387 2290.", "He is nice!"])
        #expect(Sentences.split("Version 2.5 ist da, z. B. hier. Dann weiter.") == ["Version 2.5 ist da, z. B. hier.", "Dann weiter."])
        #expect(Sentences.split("List:\n- one\n- two") == ["List:", "- one", "- two"])
        #expect(Sentences.split("") == [])
    }

    @Test func numberGroups() {
        #expect(Words.numberGroups("Call 0761 387 2290, or on 12.06.2026 at 7:30.") == ["07613872290", "12062026", "730"])
        #expect(Words.numberGroups("code E24 and 5813") == ["24", "5813"])
    }

    @Test(arguments: [
        ("keypad", "keypads", true), ("opens", "open", true), ("ersatzschlüssel", "ersatzschlüssels", true),
        ("basement", "based", false), ("2026", "2027", false), ("flour", "flower", false), ("gelehrrt", "geleert", false),
        ("emptied", "empty", true),
    ])
    func sameWord(_ a: String, _ b: String, _ same: Bool) {
        #expect(Words.sameWord(a, b) == same)
    }

    /// Every failure the issue lists is caught; faithful copies pass.
    @Test(arguments: [
        ("Where is the spare key?", "The spare key is under the blue flower pot next to the back door.", true),
        ("Where is the spare key?", "The spare key is under the blue flower pot next to the back door, which is located in the basement of the home.", false),
        ("When does Lena's passport expire?", "Lena's passport expires on 12 June 2026.", true),
        ("When does Lena's passport expire?", "Lena's passport expires on 12 June 2027.", false),
        ("How much flour goes into the pizza dough?", "You need 250 g of flour.", false),  // "need" is in no source
        ("How much flour goes into the pizza dough?", "The pizza dough uses 250 g of flour.", true),
        ("How much flour goes into the pizza dough?", "The pizza dough uses 18 grams of flour.", false),
        ("What is the dentist's phone number?", "The dentist's phone number is [1].", false),
        ("What is the password for the guest WiFi?", "The password for the guest WiFi is [A].", false),
        ("What is the dentist's phone number?", "The answer is 3.", false),
        ("What is the dentist's phone number?", "The dentist Dr. Weber can be reached at 0761 387 2290. [5]", true),
        ("What is the dentist's phone number?", "The dentist's phone number is 0761 387 2290.", true),
        ("What is the name of my cat?", "The name of your cat is Luna.", false),
        ("Wann wird die Biotonne geleert?", "Die Biotonne wird jeden Dienstag geleert.", true),
        ("Wann wird die Biotonne geleert?", "Die Biotonne wird geleert.", false),  // only repeats the question
        ("What is the code of the coffee machine?", "The coffee machine shows C-12.", true),
        ("What is the code of the coffee machine?", "The coffee machine shows 12.", false),  // a code cut short
        ("What is the password of the guest wifi?", "The password of the guest wifi is 160.", false),  // a number from elsewhere
        ("What is the vet's phone number?", "The vet's phone number is 0761 387 2290.", false),  // the dentist's number
        ("What is the dentist's phone number?", "The dentist's phone number is 0761.", false),  // part of a phone number
        ("When does the passport expire?", "The passport expires in 2026.", true),  // the year of a date
        ("When does Max's passport expire?", "Max's passport expires on 12 June 2026.", false),  // Lena's date
        ("Which code does the dishwasher show?", "The dishwasher shows C-12.", false),  // the coffee machine's code
        ("What is the dentist's email address?", "The dentist's email address is 0761 387 2290.", false),  // a phone number
    ])
    func verify(_ question: String, _ sentence: String, _ supported: Bool) {
        let v = Trust.verify(sentence: sentence, question: question, sources: Self.sources)
        #expect(v.supported == supported, "\(v)")
    }

    @Test func verdictNamesTheSource() {
        let v = Trust.verify(sentence: "Lena's passport expires on 12 June 2026.", question: "When?", sources: Self.sources)
        #expect(v.sources == [2])
        // A sentence drawing on two sources cites both.
        let two = Trust.verify(
            sentence: "The spare key is under the blue flower pot and the dentist is Dr. Weber.", question: "Key and dentist?", sources: Self.sources)
        #expect(two.supported && Set(two.sources) == [1, 5], "\(two)")
    }

    @Test func stripMarkers() {
        #expect(Trust.stripMarkers("The code is 5813 [1].") == "The code is 5813.")
        #expect(Trust.stripMarkers("It is [Source 2, 3] here [A]") == "It is here")
    }

    @Test func answerTypes() {
        #expect(AnswerType.of("When is the bin emptied?") == .time)
        #expect(AnswerType.of("Wann wird die Biotonne geleert?") == .time)
        #expect(AnswerType.of("How much flour do I need?") == .number)
        #expect(AnswerType.of("Where is the spare key?") == nil)
        #expect(AnswerType.time.matches("every Tuesday"))
        #expect(!AnswerType.number.matches("under the flower pot"))
    }

    /// Without an embedder the ranking is by question-word overlap: the sentence that names
    /// the subject and holds the asked-for number wins.
    @Test func evidenceRanking() {
        let ranked = Trust.evidence(question: "How much flour goes into the pizza dough?", sources: Self.sources)
        #expect(ranked.first?.source == 3, "\(ranked.prefix(2))")
        #expect(ranked.first?.typeMatch == true)
        #expect(Trust.shouldAbstain([], settings: TrustSettings()))
        #expect(Trust.shouldAbstain(ranked, unknownTerms: ["hamster"]))
    }

    /// "wifi" asked, "Wi-Fi" taught (or the other way round for the source's title): the
    /// hyphenated word counts as said, in the sentence and in the whole source.
    @Test(arguments: ["Where is the wifi password?", "Where is the Wi-Fi password?", "Where is the WiFi password?"])
    func aHyphenatedWordIsTheJoinedWord(_ q: String) {
        let router = GroundingSource(
            id: "r", title: "router.md › Router",
            text: "To reset the router, hold the reset button for 10 seconds. The Wi-Fi password is printed on the sticker under the router.", source: nil)
        let ranked = Trust.evidence(question: q, sources: [router])
        #expect(ranked.first?.text == "The Wi-Fi password is printed on the sticker under the router.", "\(ranked)")
        #expect(ranked.first?.overlap == 1 && ranked.first?.sourceOverlap == 1, "\(ranked)")
    }

    @Test func finalAnswerKeepsSupportedSentencesAndCites() {
        let q = "When does Lena's passport expire?"
        let ranked = Trust.evidence(question: q, sources: Self.sources)
        let ok = Trust.finalAnswer(draft: "Lena's passport expires on 12 June 2026. It is red.", question: q, sources: Self.sources, evidence: ranked)
        #expect(ok.answer == "Lena's passport expires on 12 June 2026. [2]", "\(ok.answer)")
        #expect(ok.cited == [2] && !ok.quoted)
        #expect(ok.support.first?.text == "Lena's passport expires on 12 June 2026.")
        // A draft that changes the year is dropped; the source sentence is quoted instead.
        let bad = Trust.finalAnswer(draft: "Lena's passport expires on 12 June 2027.", question: q, sources: Self.sources, evidence: ranked)
        #expect(bad.answer == "Lena's passport expires on 12 June 2026. [2]" && bad.quoted, "\(bad.answer)")
        // A number was asked for and the draft has none: quoted.
        let vague = Trust.finalAnswer(
            draft: "The dentist is Dr. Weber.", question: "What is the dentist's phone number?", sources: Self.sources,
            evidence: Trust.evidence(question: "What is the dentist's phone number?", sources: Self.sources))
        #expect(vague.answer.contains("0761 387 2290") && vague.quoted, "\(vague.answer)")
    }

    @Test func twoFactsAreBothShown() {
        let q = "How much flour goes into the pizza dough and where is the spare key?"
        let ranked = Trust.evidence(question: q, sources: Self.sources)
        let rankings = Trust.evidence(questions: [q] + Trust.parts(q), sources: Self.sources)
        let needed = Trust.needed(ranked, question: q, partRankings: Array(rankings.dropFirst()))
        let r = Trust.finalAnswer(draft: "The pizza dough uses 250 g of flour.", question: q, sources: Self.sources, evidence: ranked, needed: needed)
        #expect(r.answer.contains("250 g") && r.answer.contains("flower pot"), "\(r.answer)")
        #expect(Set(r.cited) == [1, 3])
    }

    @Test(arguments: [
        ("What are the IP addresses of nimbus-02 and of cirrus-db?", ["What are the IP addresses of nimbus-02", "What are the IP addresses of cirrus-db"]),
        ("When is Finn's birthday and where is his party this year?", ["When is Finn's birthday", "where is his party this year"]),
        ("What are the street addresses of my brother Jan and my sister Katrin?", ["What are the street addresses of my brother Jan", "What are the street addresses of my sister Katrin"]),
        ("Where is the spare key?", []), ("Salt and pepper?", []),
    ])
    func questionParts(_ q: String, _ parts: [String]) {
        #expect(Trust.parts(q) == parts)
    }

    @Test func abstentionSpeaksTheQuestionsLanguage() {
        #expect(Trust.abstention(.en).hasPrefix("I don't know"))
        #expect(Trust.abstention(.de).hasPrefix("Das weiß ich noch nicht"))
    }

    /// Laws: splitting into sentences loses and invents no character (whitespace aside), and a
    /// source sentence copied word for word always passes the check against its source.
    @Test func splittingKeepsEveryCharacter() async {
        let pieces = ["The key", " is under", " the pot.", " Dr. Weber", " am 3. März", "!", "?", "\n", "\n\n", "\r\n", " C-12", " 0761 387 2290", ". ", "- item", " z. B.", "ä"]
        await propertyCheck(count: 300, input: Gen.int(in: 0...(pieces.count - 1)).array(of: 0...30)) { picks in
            let text = picks.map { pieces[$0] }.joined()
            let split = Sentences.split(text)
            #expect(split.joined().filter { !$0.isWhitespace } == text.filter { !$0.isWhitespace }, "\(text.debugDescription)")
            #expect(split.allSatisfy { !$0.isEmpty && $0 == $0.trimmingCharacters(in: .whitespacesAndNewlines) })
        }
    }

    @Test func aCopiedSourceSentenceIsSupported() {
        for source in Self.sources {
            for sentence in Sentences.split(source.text) {
                let v = Trust.verify(sentence: sentence, question: "Tell me.", sources: Self.sources)
                #expect(v.supported, "\(sentence): \(v)")
            }
        }
    }

    /// A run-on text without punctuation is scored in windows, so the part that answers is found
    /// and shown, not the first 600 characters.
    @Test func longTextsAreSearchedInWindows() {
        let filler = Array(repeating: "lorem ipsum dolor sit amet consectetur", count: 2000).joined(separator: " ")
        let text = filler + " the water meter number is WZ 55 1234 and it hangs in the basement " + filler
        let source = GroundingSource(id: "w", title: nil, text: text, source: nil)
        let ranked = Trust.evidence(question: "What is the water meter number?", sources: [source])
        #expect(ranked.first?.text.contains("WZ 55 1234") == true, "\(ranked.first?.text.prefix(80) ?? "")")
        #expect(ranked.allSatisfy { $0.text.count <= Trust.maxSentenceCharacters + 2 })
    }

    /// A sentence about a neighbour of what was asked is recognised: the question names the
    /// thing with a word the source lacks, the sentence names it
    /// with one the question lacks.
    @Test(arguments: [
        ("How long does black tea steep?", "Green tea steeps for 2 minutes at 80 degrees.", nil, nil, "black tea|Green tea"),
        ("What is the garage door code?", "The front door code is 4812.", nil, nil, "garage door|front door"),
        ("When is Ben's birthday?", "Anna's birthday is on 14 March.", nil, nil, "Ben’s birthday|Anna’s birthday"),
        ("What is the flight number of the return flight?", "The outbound flight to Lisbon is TP 1335.", nil, nil, "return flight|outbound flight"),
        // the title names it
        ("How long does black tea steep?", "Steep it for 2 minutes.", "Green tea", nil, "black tea|Green tea"),
        // the whole phrase up to the thing named, names as written
        ("Where is the second car key?", "The spare car key is in the drawer.", nil, nil, "second car key|spare car key"),
        ("When is Sean Murphy's birthday?", "Sean O'Brien's birthday is on 3 May.", nil, nil, "Murphy’s birthday|O'Brien’s birthday"),
        ("Wo steht Lenas Fahrrad?", "Max' Fahrrad steht im Keller.", nil, nil, "Lenas Fahrrad|Max' Fahrrad"),
        // a paraphrase is named too (the answer is given, with what its note is about)
        ("What is the main door code?", "The front door code is 4812.", nil, nil, "main door|front door"),
        // the same thing, a paraphrase, or a word that names no thing: no neighbour
        ("How long does green tea steep?", "Green tea steeps for 2 minutes at 80 degrees.", nil, nil, nil),
        ("How long was the database read-only during INC-2291?", "Postmortem INC-2291: read-only for 47 minutes.", nil, nil, nil),
        ("Where are the replacement brushes?", "Replace the main brush every six months.", nil, nil, nil),
        ("What is Lena's phone number?", "Lena's mobile number is 0171 555 0101.", nil, nil, nil),
        ("How long does a normal dishwasher run take?", "The Eco 50 program takes 3 hours 40 minutes.", nil, nil, nil),
        ("What's the Wi-Fi password?", "WiFi password: sunflower42.", nil, nil, nil),
        ("What is Lena's e-mail address?", "Lena's email address is lena@example.org.", nil, nil, nil),
        ("What air pressure do the front tyres need?", "Octavia tyre pressures: 2.4 bar front.", nil, nil, nil),
        ("Wie lange muss roter Tee ziehen?", "Roten Tee lässt man 5 Minuten ziehen.", nil, nil, nil),
        ("When does the chemist open on Saturday?", "The pharmacy opens at 9 on Saturdays.", nil, nil, nil),
        ("Why does the printer not print?", "If nothing prints, the toner is empty.", nil, nil, nil),
        ("Wie viele Stunden habe ich im Mai gearbeitet?", "Im April habe ich 20 Stunden gearbeitet.", nil, nil, nil),
        // the source speaks of both
        ("How long does black tea steep?", "Green tea steeps for 2 minutes.", nil, "Green tea steeps for 2 minutes. Black tea steeps for 4 minutes.", nil),
    ] as [(String, String, String?, String?, String?)])
    func neighbours(_ question: String, _ sentence: String, _ title: String?, _ text: String?, _ expected: String?) {
        let source = GroundingSource(id: "s", title: title, text: text ?? sentence, source: nil)
        let n = Trust.neighbour(question: question, sentence: sentence, source: source)
        #expect(n.map { "\($0.asked)|\($0.found)" } == expected, "\(question) / \(sentence)")
    }

    /// A kind of fact that names an event comes only from a source: "birthday" from the question
    /// does not make a note on football practice a birthday.
    @Test func anEventIsNotLicensedByTheQuestion() {
        let football = [GroundingSource(id: "x", title: nil, text: "Ben's football practice is on Wednesdays at 5pm.", source: nil)]
        #expect(!Trust.verify(sentence: "Ben's birthday is on Wednesday at 5pm.", question: "When is Ben's birthday?", sources: football).supported)
        let birthdays = [GroundingSource(id: "y", title: nil, text: "Birthdays to remember: Lena 14 March, Finn 2 September.", source: nil)]
        #expect(Trust.verify(sentence: "Lena's birthday is 14 March.", question: "When is Lena's birthday?", sources: birthdays).supported)
        // a format word still frames a fact the source gives
        let dentist = [GroundingSource(id: "z", title: nil, text: "The dentist Dr. Weber can be reached at 0761 387 2290.", source: nil)]
        #expect(Trust.verify(sentence: "The dentist's phone number is 0761 387 2290.", question: "What is the dentist's phone number?", sources: dentist).supported)
    }

    /// A kind of fact that is not a format (an address, a model, a dose) comes only from a
    /// source: the question's "address" does not make the practice's phone number an address.
    @Test(arguments: [
        ("What is the dentist's address?", "The dentist's address is 030 555 0192.", "Our dentist is Dr. Keller; the dental practice's phone number is 030 555 0192.", false),
        ("What is the dentist's address?", "The dentist's address is 12 Elm Street.", "The dentist's address is 12 Elm Street.", true),
        ("What model is the printer?", "The printer model is HP 305.", "The printer uses HP 305 ink cartridges.", false),
        ("What model is the printer?", "The printer is an HP 305.", "The printer is an HP 305 model.", true),
        ("What dose of cetirizine does Anna take?", "Anna takes a dose of 5 mg of cetirizine.", "Anna takes 5 mg of cetirizine for her hay fever.", false),
        ("What dose of cetirizine does Anna take?", "Anna takes 5 mg of cetirizine.", "Anna takes 5 mg of cetirizine for her hay fever.", true),
        ("Wie ist die Adresse von Oma Hilde?", "Die Adresse von Oma Hilde ist 089 123 4567.", "Die Telefonnummer von Oma Hilde ist 089 123 4567.", false),
        // a format word still frames what the source gives
        ("What is the shed's code?", "The shed's code is 0719.", "The shed padlock combination is 0719.", true),
        ("What is the hostname of the bastion?", "The hostname of the bastion is bastion.helix.internal.", "Log in through the bastion at bastion.helix.internal.", true),
    ])
    func aLabelIsNotLicensedByTheQuestion(question: String, sentence: String, source: String, supported: Bool) {
        let sources = [GroundingSource(id: "s", title: nil, text: source, source: nil)]
        #expect(Trust.verify(sentence: sentence, question: question, sources: sources).supported == supported)
    }

    /// Every sentence behind an answer is in its support, also two of one source: a drafted
    /// sentence and a needed sentence the draft left out, quoted.
    @Test func supportHoldsEverySentenceBehindTheAnswer() {
        let plumber = [
            GroundingSource(id: "p", title: nil, text: "Our plumber is Tom Riley; he fixed the sink in May. His number is 0161 496 0773.", source: nil)
        ]
        let ranked = Trust.evidence(question: "Who is our plumber?", sources: plumber)
        let sentences = ranked.map(\.text)
        #expect(sentences.count == 2)
        let r = Trust.finalAnswer(draft: "Our plumber is Tom Riley.", question: "Who is our plumber?", sources: plumber, evidence: ranked, needed: ranked)
        #expect(r.answer.contains("Tom Riley") && r.answer.contains("0161 496 0773"), "\(r.answer)")
        #expect(Set(r.support.map(\.text)) == Set(sentences), "\(r.support.map(\.text))")
    }

    /// A date or a time is not the number asked for: the draft "The flight number is 12 July."
    /// gives way to the source sentence; a duration, an amount, a year or a "when" keep theirs.
    @Test(arguments: [
        ("What is the flight number of the outbound flight to Lisbon?", "The flight number is 12 July.", true),
        ("What is the door code?", "The code changes on 3.4.2025 at 09:40.", true),
        ("How much does the tea cost?", "It costs 5pm.", true),
        ("What is the flight number of the outbound flight to Lisbon?", "The flight number is TP 1335.", false),
        ("How long does green tea steep?", "Green tea steeps for 2 minutes.", false),
        ("When does the flight leave?", "It leaves on 12 July at 09:40.", false),
        ("What year did we buy the car?", "We bought it in March 2019.", false),
        ("What is the phone number of the vet?", "Call 0761 387 2290 after 5pm.", false),
    ])
    func aTimeIsNotTheNumberAskedFor(_ question: String, _ sentence: String, _ onlyTimes: Bool) {
        #expect(Trust.givesOnlyTimes(sentence, question: question) == onlyTimes)
    }

    @Test func aDateDraftedForAFlightNumberGivesWayToTheSource() {
        let lisbon = [GroundingSource(id: "l", title: nil, text: "The outbound flight to Lisbon is TP 1335 on 12 July, departing at 09:40.", source: nil)]
        let q = "What is the flight number of the outbound flight to Lisbon?"
        let ranked = Trust.evidence(question: q, sources: lisbon)
        let r = Trust.finalAnswer(draft: "The flight number is 12 July.", question: q, sources: lisbon, evidence: ranked)
        #expect(r.answer.contains("TP 1335") && r.quoted, "\(r.answer)")
    }
}
