import Foundation
import KianaCore
import PropertyBased
import Testing

@testable import KianaAI

/// The pure parts of voice: WAV reading and writing, resampling, word error rate, the sentence
/// stream that lets speech start early, and the checks on a speech request.
struct VoiceAudioTests {
    // MARK: WAV

    /// A WAV file built by hand: `fmt` fields, then the given data bytes, with optional chunks.
    static func wav(
        tag: UInt16 = 1, channels: UInt16 = 1, rate: UInt32 = 16_000, bits: UInt16 = 16, data: [UInt8], extensible: Bool = false,
        before: [UInt8] = [], dataSize: UInt32? = nil
    ) -> [UInt8] {
        func u16(_ v: UInt16) -> [UInt8] { [UInt8(v & 0xFF), UInt8(v >> 8)] }
        func u32(_ v: UInt32) -> [UInt8] { [UInt8(v & 0xFF), UInt8(v >> 8 & 0xFF), UInt8(v >> 16 & 0xFF), UInt8(v >> 24)] }
        let block = channels * bits / 8
        var fmt = u16(extensible ? 0xFFFE : tag) + u16(channels) + u32(rate) + u32(rate * UInt32(block)) + u16(block) + u16(bits)
        if extensible { fmt += u16(22) + u16(bits) + u32(0) + u16(tag) + [0, 0, 0, 0, 0x10, 0, 0x80, 0, 0, 0xAA, 0, 0x38, 0x9B, 0x71] }
        var body = Array("WAVE".utf8) + before + Array("fmt ".utf8) + u32(UInt32(fmt.count)) + fmt
        body += Array("data".utf8) + u32(dataSize ?? UInt32(data.count)) + data
        return Array("RIFF".utf8) + u32(UInt32(body.count)) + body
    }

    static let samples = Gen.int(in: -32768...32767).array(of: 1...2000)

    @Test func encodeThenDecodeGivesTheSamplesBack() async {
        await propertyCheck(count: 100, input: Self.samples, Gen.int(in: 8_000...48_000)) { values, rate in
            let audio = PCMAudio(sampleRate: rate, samples: values.map { Int16($0) })
            let bytes = WAV.encode(audio)
            #expect(bytes.count == 44 + 2 * values.count)
            #expect((try? WAV.decode(bytes)) == audio)
        }
    }

    @Test func everyCommonSampleFormatIsReadAndMixedToMono() throws {
        // 8-bit is unsigned: 0x80 is silence, 0xFF nearly full scale.
        #expect(try WAV.decode(Self.wav(bits: 8, data: [0x80, 0xFF, 0x00])).samples == [0, 32512, -32768])
        // 24-bit little-endian: 0x400000 is half scale.
        #expect(try WAV.decode(Self.wav(bits: 24, data: [0, 0, 0x40, 0, 0, 0xC0])).samples == [16384, -16384])
        // 32-bit integer.
        #expect(try WAV.decode(Self.wav(bits: 32, data: [0, 0, 0, 0x40])).samples == [16384])
        // IEEE float, 32 and 64 bit; out-of-range and NaN are clamped to the scale, not trapped on.
        let half = Float(0.5).bitPattern
        let nan = Float.nan.bitPattern
        let f32 = [half, nan, Float(7).bitPattern].flatMap { v in (0..<4).map { UInt8(v >> (8 * $0) & 0xFF) } }
        #expect(try WAV.decode(Self.wav(tag: 3, bits: 32, data: f32)).samples == [16384, 0, 32767])
        let d = Double(-0.25).bitPattern
        #expect(try WAV.decode(Self.wav(tag: 3, bits: 64, data: (0..<8).map { UInt8(d >> (8 * UInt64($0)) & 0xFF) })).samples == [-8192])
        // Stereo is averaged; WAVE_FORMAT_EXTENSIBLE with a PCM sub-format reads as PCM.
        let stereo: [UInt8] = [0x00, 0x40, 0x00, 0x00, 0x00, 0xC0, 0x00, 0xC0]  // (16384, 0), (-16384, -16384)
        #expect(try WAV.decode(Self.wav(channels: 2, data: stereo, extensible: true)).samples == [8192, -16384])
    }

    @Test func chunksItDoesNotNeedAreSkippedAndAStreamedLengthRunsToTheEnd() throws {
        // A LIST chunk of odd length (padded to even) before fmt.
        let list = Array("LIST".utf8) + [3, 0, 0, 0] + [1, 2, 3, 0]
        #expect(try WAV.decode(Self.wav(data: [1, 0, 2, 0], before: list)).samples == [1, 2])
        // Streamed WAV: the data size is unknown (0xFFFFFFFF) or 0.
        #expect(try WAV.decode(Self.wav(data: [1, 0, 2, 0, 3, 0], dataSize: 0xFFFF_FFFF)).samples == [1, 2, 3])
        #expect(try WAV.decode(Self.wav(data: [1, 0, 2, 0], dataSize: 0)).samples == [1, 2])
        // What `WAV.header(dataBytes: nil)` writes is read back the same way.
        var streamed = WAV.header(sampleRate: 22_050, dataBytes: nil)
        WAV.appendSamples([5, -5, 7], to: &streamed)
        #expect(try WAV.decode(streamed) == PCMAudio(sampleRate: 22_050, samples: [5, -5, 7]))
    }

    static let refused: [(String, [UInt8], AudioLimits, ErrorCode)] = [
        ("not a WAV file", Array("ID3\u{3}hello this is an mp3".utf8), AudioLimits(), .unsupportedMediaType),
        ("empty", [], AudioLimits(), .unsupportedMediaType),
        ("zero-length data", wav(data: []), AudioLimits(), .invalidInput),
        ("4 kHz", wav(rate: 4_000, data: [0, 0]), AudioLimits(), .invalidInput),
        ("192 kHz", wav(rate: 192_000, data: [0, 0]), AudioLimits(), .invalidInput),
        ("ADPCM (compressed)", wav(tag: 2, bits: 4, data: [0, 0]), AudioLimits(), .unsupportedMediaType),
        ("12-bit PCM", wav(bits: 12, data: [0, 0]), AudioLimits(), .unsupportedMediaType),
        ("no channels", wav(channels: 0, data: [0, 0]), AudioLimits(), .invalidInput),
        ("a chunk past the end", Array(wav(data: [0, 0], before: Array("JUNK".utf8) + [0xFF, 0xFF, 0, 0]).prefix(60)), AudioLimits(), .malformedEncoding),
        ("no fmt chunk", Array("RIFF".utf8) + [12, 0, 0, 0] + Array("WAVEdata".utf8) + [2, 0, 0, 0, 0, 0], AudioLimits(), .malformedEncoding),
        ("3 s over a 2 s limit", wav(data: [UInt8](repeating: 0, count: 96_000)), AudioLimits(maxSeconds: 2), .tooLarge),
        ("bytes over the limit", wav(data: [UInt8](repeating: 0, count: 2_000)), AudioLimits(maxBytes: 1_000), .tooLarge),
    ]

    @Test("Bad recordings are refused with a clear code", arguments: 0..<refused.count)
    func badRecordingsAreRefused(_ i: Int) {
        let (name, bytes, limits, code) = Self.refused[i]
        do {
            _ = try WAV.decode(bytes, limits: limits)
            Issue.record("\(name) was accepted")
        } catch {
            #expect(error.code == code, "\(name): \(error.message)")
            #expect(!error.message.isEmpty)
        }
    }

    @Test func anOddChunkWithoutItsPadByteIsStillRead() throws {
        // LIST of 3 bytes and no pad byte, then fmt: read as written, not misaligned by one.
        let list = Array("LIST".utf8) + [3, 0, 0, 0] + [1, 2, 3]
        #expect(try WAV.decode(Self.wav(data: [9, 0], before: list)).samples == [9])
    }

    @Test func truncatedAndRandomBytesNeverCrash() {
        var rng = SystemRandomNumberGenerator()
        let good = Self.wav(channels: 2, rate: 44_100, bits: 24, data: (0..<600).map { _ in UInt8.random(in: 0...255, using: &rng) })
        for cut in 0..<good.count { _ = try? WAV.decode(Array(good.prefix(cut))) }
        for _ in 0..<500 {
            var b = good
            for _ in 0..<4 { b[Int.random(in: 0..<b.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng) }
            _ = try? WAV.decode(b)
        }
    }

    // MARK: resampling

    static func sine(_ hz: Double, rate: Int, seconds: Double, amplitude: Double = 10_000) -> [Int16] {
        (0..<Int(Double(rate) * seconds)).map { Int16(amplitude * sin(2 * .pi * hz * Double($0) / Double(rate))) }
    }

    static func rms(_ x: ArraySlice<Int16>) -> Double { (x.reduce(0.0) { $0 + Double($1) * Double($1) } / Double(x.count)).squareRoot() }

    static func crossings(_ x: ArraySlice<Int16>) -> Int { zip(x, x.dropFirst()).filter { ($0 < 0) != ($1 < 0) }.count }

    @Test("Speech-band tones keep their pitch and level", arguments: [(48_000, 16_000), (44_100, 16_000), (22_050, 16_000), (8_000, 16_000), (16_000, 24_000)])
    func toneSurvives(_ from: Int, _ to: Int) {
        let out = Resampler.resample(Self.sine(1_000, rate: from, seconds: 1), from: from, to: to)
        #expect(abs(out.count - to) <= 1)
        let middle = out[out.count / 10..<out.count * 9 / 10]
        // 1 kHz: 2000 zero crossings a second, 1600 in the middle 0.8 s.
        #expect(abs(Self.crossings(middle) - 1600) <= 4, "\(Self.crossings(middle))")
        #expect(abs(Self.rms(middle) - 10_000 / 2.0.squareRoot()) < 250, "\(Self.rms(middle))")
    }

    @Test func toneAboveTheNewNyquistIsFilteredNotAliased() {
        // 11 kHz at 48 kHz would fold to 5 kHz at 16 kHz without the low-pass filter.
        let out = Resampler.resample(Self.sine(11_000, rate: 48_000, seconds: 0.5), from: 48_000, to: 16_000)
        #expect(Self.rms(out[out.count / 10..<out.count * 9 / 10]) < 200)
    }

    // MARK: word error rate

    static let werCases: [(String, String, Int, Int, Int, Int)] = [
        // reference, hypothesis, S, D, I, N
        ("hello world", "hello duck", 1, 0, 0, 2),
        ("the bakery opens at seven", "the bakery opens at seven", 0, 0, 0, 5),
        ("The bakery opens at seven.", "the BAKERY, opens at seven", 0, 0, 0, 5),
        ("call my sister tomorrow morning", "all my sister my early morning", 2, 0, 1, 5),
        ("turn on the light", "", 0, 4, 0, 4),
        ("", "uh", 0, 0, 1, 0),
        ("what is the weather", "what the weather", 0, 1, 0, 4),
        ("don't stop", "dont stop", 1, 0, 0, 2),
    ]

    @Test("WER counts substitutions, deletions and insertions", arguments: 0..<werCases.count)
    func wordErrors(_ i: Int) {
        let (r, h, s, d, ins, n) = Self.werCases[i]
        let e = WordErrors.between(reference: r, hypothesis: h)
        #expect((e.substitutions, e.deletions, e.insertions, e.referenceWords) == (s, d, ins, n), "\(r) → \(h): \(e)")
    }

    @Test func werIsAMetricOnWordSequences() async {
        let words = Gen.int(in: 0...5).array(of: 0...12)
        await propertyCheck(count: 200, input: words, words) { a, b in
            let x = a.map { "w\($0)" }.joined(separator: " ")
            let y = b.map { "w\($0)" }.joined(separator: " ")
            let xy = WordErrors.between(reference: x, hypothesis: y)
            #expect(xy.errors == WordErrors.between(reference: y, hypothesis: x).errors)
            #expect(WordErrors.between(reference: x, hypothesis: x).errors == 0)
            #expect(xy.errors >= abs(a.count - b.count) && xy.errors <= max(a.count, b.count))
        }
    }

    // MARK: sentence stream

    @Test func sentencesAreReleasedAsSoonAsTheNextOneBegins() {
        var s = SentenceStream()
        var out: [String] = []
        for token in ["The bak", "ery opens", " at 7 a.m. on week", "days. It", " closes at noon", "! Dr. Ho", "lm", " runs it."] {
            out += s.add(token)
            // "a.m. on" is not an end; "days." is one only once "It" is seen.
            if token == " at 7 a.m. on week" { #expect(out == []) }
            if token == "days. It" { #expect(out == ["The bakery opens at 7 a.m. on weekdays."]) }
            if token == "! Dr. Ho" { #expect(out.count == 2) }
        }
        #expect(out == ["The bakery opens at 7 a.m. on weekdays.", "It closes at noon!"])
        out += s.finish()
        #expect(out.last == "Dr. Holm runs it.")
        #expect(s.finish() == [])
    }

    @Test func aLongRunWithoutAnEndIsCutAtAComma() {
        var s = SentenceStream(maxLength: 40)
        let out = s.add("first part of a very long list, second part of it, and a third one")
        #expect(!out.isEmpty && out.allSatisfy { $0.count <= 40 })
        #expect(out.first == "first part of a very long list,")
        #expect((out + s.finish()).joined(separator: " ").split(separator: " ").count == 15)
    }

    // MARK: request checks

    static let badRequests: [(String, String?, String?, Double?)] = [
        ("", nil, nil, nil),
        ("   \n", nil, nil, nil),
        (String(repeating: "a", count: 5000), nil, nil, nil),
        ("hi", "fr", nil, nil),
        ("hi\u{0}there", nil, nil, nil),
        ("bell\u{7}", nil, nil, nil),
        ("hi", nil, "-w/etc/passwd", nil),
        ("hi", nil, "../../etc", nil),
        ("hi", nil, "en us", nil),
        ("hi", nil, String(repeating: "e", count: 41), nil),
        ("hi", nil, nil, 0.1),
        ("hi", nil, nil, 9),
        ("hi", nil, nil, .nan),
    ]

    @Test("Speech requests are checked before any engine runs", arguments: 0..<badRequests.count)
    func badSpeechRequests(_ i: Int) {
        let (text, language, voice, speed) = Self.badRequests[i]
        let v = Voice()
        #expect(throws: KianaAIError.self) { try v.check(text: text, language: language, voice: voice, speed: speed) }
    }

    @Test func languageIsDetectedWhenNotGiven() throws {
        let v = Voice()
        #expect(try v.check(text: "Wann öffnet die Bäckerei?", language: nil, voice: nil, speed: nil).0 == .de)
        #expect(try v.check(text: "When does the bakery open?", language: "auto", voice: nil, speed: nil).0 == .en)
        #expect(try v.check(text: "Hallo", language: "en-GB", voice: "en-gb", speed: 1.5) == (.en, 1.5))
    }

    @Test func germanRecognitionIsRefusedClearly() {
        let v = Voice()
        #expect(throws: KianaAIError.self) { try v.transcribe(PCMAudio(sampleRate: 16_000, samples: [0]), language: "de") }
        #expect(throws: KianaAIError.self) { try v.transcribe(PCMAudio(sampleRate: 16_000, samples: []), language: "en") }
    }
}
