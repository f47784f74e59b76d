import Foundation
import KianaAI
import KianaCore

/// `kiana bench voice`: 20 fixed English sentences (Resources/voice-sentences.txt) spoken by each
/// installed TTS engine and heard back by PocketSphinx, in the same run:
/// - word error rate per engine pair (Levenshtein over words, `WordErrors`), for KI_ana's
///   recognizer (libpocketsphinx 0.8 in process) and, on the very same 16 kHz audio, for the
///   reference recognizer (PyPI pocketsphinx 5, its own bundled model);
/// - real-time factor (seconds of work ÷ seconds of audio) of each TTS engine through KI_ana
///   beside the engine called directly (espeak-ng's CLI, Piper's Python API), and of each
///   recognizer, each as a ratio.
public struct VoiceBench: Sendable {
    public var repeats: Int

    public init(repeats: Int = 1) { self.repeats = max(1, repeats) }

    public static func sentences() throws -> [String] {
        guard let url = Bundle.module.url(forResource: "voice-sentences", withExtension: "txt"),
            let text = try? String(contentsOf: url, encoding: .utf8)
        else { throw KianaAIError(.notFound, "voice-sentences.txt is missing from this build") }
        return text.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    }

    struct EngineRun {
        var name: String
        var label: String
        var audioSeconds = 0.0
        var synthSeconds: [Double] = []
        var recognizeSeconds = 0.0
        var ours = WordErrors()
        var reference = WordErrors()
        var referenceSeconds = 0.0
        var directSeconds: Double?
        var worst: (String, String)?
    }

    public func run(progress: (String) -> Void) throws -> String {
        let sentences = try Self.sentences()
        let voice = Voice(settings: VoiceSettings(limits: AudioLimits(maxBytes: 1 << 30, maxSeconds: 3600)), maxJobs: 1)
        let status = voice.status()
        guard let recognizer = PocketSphinxRecognizer.installed() else {
            throw KianaAIError(.toolMissing, "PocketSphinx is not installed (./scripts/setup.sh voice)")
        }
        var engines: [EngineRun] = []
        for e in status.engines where e.kind == "speech" && e.installed {
            engines.append(EngineRun(name: e.name, label: e.name == "piper" ? "piper (en_US-joe-medium)" : "espeak-ng (en-us)"))
        }
        guard !engines.isEmpty else { throw KianaAIError(.toolMissing, "no speech engine is installed (./scripts/setup.sh voice)") }
        guard let script = BenchSupport.script("voice_reference.py") else { throw KianaAIError(.notFound, "scripts/voice_reference.py not found") }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("kiana-voice-bench-\(getpid())")
        try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }

        var hypotheses: [String: [String]] = [:]
        for k in engines.indices {
            let name = engines[k].name
            // First use starts the engine (Piper loads its network): not timed.
            _ = try voice.speech("Ready.", language: "en", engine: name)
            var heard: [String] = []
            for (n, sentence) in sentences.enumerated() {
                progress("\(name): sentence \(n + 1)/\(sentences.count)")
                var best = Double.infinity
                var audio = PCMAudio(sampleRate: 16_000, samples: [])
                for _ in 0..<repeats {
                    var a = PCMAudio(sampleRate: 16_000, samples: [])
                    let t = try BenchSupport.time { a = try voice.speech(sentence, language: "en", engine: name).0 }
                    best = min(best, t)
                    audio = a
                }
                engines[k].synthSeconds.append(best)
                engines[k].audioSeconds += audio.seconds
                let at16k = audio.resampled(to: 16_000)
                try Data(WAV.encode(at16k)).write(to: dir.appendingPathComponent(String(format: "%@-%02d.wav", name, n)))
                var text = ""
                let t = try BenchSupport.time { text = try recognizer.transcribe(at16k) }
                engines[k].recognizeSeconds += t
                let errors = WordErrors.between(reference: sentence, hypothesis: text)
                engines[k].ours = engines[k].ours + errors
                heard.append(text)
            }
            hypotheses[name] = heard
        }

        progress("reference: PyPI pocketsphinx on the same audio; espeak-ng and Piper called directly")
        let ref = try BenchSupport.python([script, Bundle.module.url(forResource: "voice-sentences", withExtension: "txt")!.path, dir.path])
        let stt = ref["stt"] as? [String: [String: Any]] ?? [:]
        let tts = ref["tts"] as? [String: [Double]] ?? [:]
        for k in engines.indices {
            let name = engines[k].name
            for (n, sentence) in sentences.enumerated() {
                guard let r = stt[String(format: "%@-%02d.wav", name, n)] else { continue }
                engines[k].reference = engines[k].reference + WordErrors.between(reference: sentence, hypothesis: r["text"] as? String ?? "")
                engines[k].referenceSeconds += r["seconds"] as? Double ?? 0
            }
            if let direct = tts[name], direct.count == sentences.count { engines[k].directSeconds = direct.reduce(0, +) }
        }
        return render(engines, sentences: sentences, hypotheses: hypotheses)
    }

    func render(_ engines: [EngineRun], sentences: [String], hypotheses: [String: [String]]) -> String {
        let words = sentences.reduce(0) { $0 + WordErrors.words($1).count }
        var out = "\(sentences.count) sentences, \(words) words; best of \(repeats) per synthesis\n\n"
        out += "Text to speech (RTF = seconds of work ÷ seconds of audio; direct = the engine without KI_ana)\n"
        out += pad("engine", 26) + lpad("audio s", 9) + lpad("RTF", 8) + lpad("direct RTF", 12) + lpad("ratio", 8) + "\n"
        for e in engines {
            let rtf = e.synthSeconds.reduce(0, +) / e.audioSeconds
            let direct = e.directSeconds.map { $0 / e.audioSeconds }
            out += pad(e.label, 26) + lpad(f(e.audioSeconds, 1), 9) + lpad(f(rtf, 3), 8) + lpad(direct.map { f($0, 3) } ?? "-", 12)
                + lpad(direct.map { f(rtf / $0, 2) + "×" } ?? "-", 8) + "\n"
        }
        out += "\nSpeech to text on that audio (WER: S+D+I ÷ reference words)\n"
        out += pad("pair", 40) + lpad("WER", 8) + lpad("S/D/I", 10) + lpad("RTF", 8) + lpad("ref WER", 9) + lpad("ref RTF", 9) + lpad("RTF ratio", 11) + "\n"
        for e in engines {
            let rtf = e.recognizeSeconds / e.audioSeconds
            let refRTF = e.referenceSeconds / e.audioSeconds
            out += pad("\(e.label) → pocketsphinx", 40) + lpad(pct(e.ours.rate), 8)
                + lpad("\(e.ours.substitutions)/\(e.ours.deletions)/\(e.ours.insertions)", 10) + lpad(f(rtf, 3), 8)
                + lpad(pct(e.reference.rate), 9) + lpad(f(refRTF, 3), 9) + lpad(refRTF > 0 ? f(rtf / refRTF, 2) + "×" : "-", 11) + "\n"
        }
        out += "\nours: libpocketsphinx 0.8 (Debian, in process); ref: PyPI pocketsphinx 5 (bundled model), same 16 kHz audio\n"
        for e in engines {
            guard let heard = hypotheses[e.name] else { continue }
            // The three sentences heard worst, so the figure can be judged.
            let worst = zip(sentences, heard).map { ($0, $1, WordErrors.between(reference: $0, hypothesis: $1).rate) }.sorted { $0.2 > $1.2 }.prefix(3)
            out += "\(e.label), heard worst:\n"
            for w in worst { out += "  \(pct(w.2))  “\(w.0)” → “\(w.1)”\n" }
        }
        return out
    }

    func f(_ x: Double, _ digits: Int) -> String { String(format: "%.\(digits)f", x) }
    func pct(_ x: Double) -> String { String(format: "%.1f%%", x * 100) }
    func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s + " " : s + String(repeating: " ", count: n - s.count) }
    func lpad(_ s: String, _ n: Int) -> String { s.count >= n ? " " + s : String(repeating: " ", count: n - s.count) + s }
}
