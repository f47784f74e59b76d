import Foundation
import KianaCore
import Synchronization

/// What the voice settings choose (`voice.*` in the node's configuration).
public struct VoiceSettings: Sendable {
    /// "auto" (Piper for English when installed, espeak-ng otherwise), "espeak" or "piper".
    public var engine: String
    /// Speaking rate relative to the engine's normal one (0.25…4, as OpenAI's `speed`).
    public var speed: Double
    /// An espeak-ng voice to use instead of the language's default (e.g. "en-gb", "de+f3").
    public var espeakVoice: String?
    /// A Piper voice (.onnx, its .onnx.json beside it) instead of the packaged en_US-joe-medium.
    public var piperModel: String?
    public var limits: AudioLimits
    /// The longest text spoken in one request.
    public var maxTextCharacters: Int

    public init(
        engine: String = "auto", speed: Double = 1, espeakVoice: String? = nil, piperModel: String? = nil, limits: AudioLimits = AudioLimits(),
        maxTextCharacters: Int = 4096
    ) {
        self.engine = engine
        self.speed = speed
        self.espeakVoice = espeakVoice
        self.piperModel = piperModel
        self.limits = limits
        self.maxTextCharacters = maxTextCharacters
    }

    public static let engines = ["auto", "espeak", "piper"]
}

/// What a spoken answer was made with.
public struct SpeechInfo: Sendable, Codable, Equatable {
    public var engine: String
    public var voice: String
    public var language: String
    public var sampleRate: Int

    public init(engine: String, voice: String, language: String, sampleRate: Int) {
        self.engine = engine
        self.voice = voice
        self.language = language
        self.sampleRate = sampleRate
    }
}

/// A transcription and what it cost.
public struct Transcript: Sendable, Codable, Equatable {
    public var text: String
    public var language: String
    public var engine: String
    /// Seconds of audio heard.
    public var duration: Double
    /// Seconds spent recognising.
    public var seconds: Double

    public init(text: String, language: String, engine: String, duration: Double, seconds: Double) {
        self.text = text
        self.language = language
        self.engine = engine
        self.duration = duration
        self.seconds = seconds
    }
}

/// Which engines this machine has.
public struct VoiceStatus: Sendable, Codable, Equatable {
    public struct Engine: Sendable, Codable, Equatable {
        public var name: String
        public var kind: String
        public var installed: Bool
        public var languages: [String]

        public init(name: String, kind: String, installed: Bool, languages: [String]) {
            self.name = name
            self.kind = kind
            self.installed = installed
            self.languages = languages
        }
    }
    public var engines: [Engine]
    public var defaultEngine: String
    public var speed: Double
    public var maxSeconds: Double
    public var maxBytes: Int
    /// What to run to install what is missing (nil when everything is there).
    public var install: String?

    public init(engines: [Engine], defaultEngine: String, speed: Double, maxSeconds: Double, maxBytes: Int, install: String?) {
        self.engines = engines
        self.defaultEngine = defaultEngine
        self.speed = speed
        self.maxSeconds = maxSeconds
        self.maxBytes = maxBytes
        self.install = install
    }
}

/// The node's voice: text to speech (espeak-ng, Piper) and speech to text (PocketSphinx),
/// chosen by settings and request, with input checked and work bounded (at most `maxJobs`
/// requests running or waiting; more are refused as busy). Engines are looked up once, on first
/// use, and kept.
public final class Voice: Sendable {
    public let settings: VoiceSettings
    public let maxJobs: Int
    let jobs = Mutex(0)
    /// Engines, looked up once under `lookup` (concurrent first requests must share one Piper).
    let found = Mutex<Engines?>(nil)
    let lookup = NSLock()
    /// Why Piper could not start, once it failed (a broken voice file does not mend itself).
    let piperFailure = Mutex<String?>(nil)

    struct Engines: @unchecked Sendable {
        var espeak: ESpeakSynthesizer?
        var piper: PiperSynthesizer?
        var sphinx: PocketSphinxRecognizer?
    }

    public init(settings: VoiceSettings = VoiceSettings(), maxJobs: Int = 4) {
        self.settings = settings
        self.maxJobs = maxJobs
    }

    static let installHint = "./scripts/setup.sh voice (or make voice)"

    var engines: Engines {
        if let e = found.withLock({ $0 }) { return e }
        lookup.lock()
        defer { lookup.unlock() }
        if let e = found.withLock({ $0 }) { return e }
        let e = Engines(
            espeak: ESpeakSynthesizer.installed(), piper: PiperSynthesizer.installed(model: settings.piperModel),
            sphinx: PocketSphinxRecognizer.installed())
        found.withLock { $0 = e }
        return e
    }

    public func status() -> VoiceStatus {
        let e = engines
        let list = [
            VoiceStatus.Engine(name: "espeak", kind: "speech", installed: e.espeak != nil, languages: ["en", "de"]),
            VoiceStatus.Engine(name: "piper", kind: "speech", installed: e.piper != nil && piperFailure.withLock({ $0 }) == nil, languages: ["en"]),
            VoiceStatus.Engine(name: "pocketsphinx", kind: "recognition", installed: e.sphinx != nil, languages: ["en"]),
        ]
        return VoiceStatus(
            engines: list, defaultEngine: settings.engine, speed: settings.speed, maxSeconds: settings.limits.maxSeconds,
            maxBytes: settings.limits.maxBytes, install: e.espeak == nil || e.sphinx == nil ? Self.installHint : nil)
    }

    /// A place among the `maxJobs` voice requests in flight, or `busy`. Taken before an upload
    /// is read or a response is started, given back when the work is done (or the slot dropped).
    public func reserve() throws(KianaAIError) -> VoiceSlot {
        let ok = jobs.withLock { n in
            guard n < maxJobs else { return false }
            n += 1
            return true
        }
        guard ok else { throw KianaAIError(.busy, "voice is busy with \(maxJobs) requests; try again shortly") }
        return VoiceSlot { [self] in jobs.withLock { $0 -= 1 } }
    }

    /// Runs `body` in `slot`, or in a slot of its own when none is given.
    func admitted<T>(_ slot: VoiceSlot?, _ body: () throws(KianaAIError) -> T) throws(KianaAIError) -> T {
        let own = slot == nil ? try reserve() : nil
        defer { own?.release() }
        return try body()
    }

    /// The synthesizer for a request: `engine` (nil: the setting), the text's language and
    /// whether an espeak-ng voice was named. Auto speaks English with Piper unless a voice is
    /// named or Piper cannot start (then espeak-ng).
    public func synthesizer(engine requested: String?, language: Language, voice: String? = nil) throws(KianaAIError) -> any SpeechSynthesizer {
        let engine = requested ?? settings.engine
        guard Self.validEngine(engine) else {
            throw KianaAIError(.invalidInput, "voice engine \(engine.prefix(20)) is unknown (auto, espeak or piper)")
        }
        let e = engines
        switch engine {
        case "piper":
            guard language == .en else { throw KianaAIError(.invalidInput, "the piper voice speaks English; German is spoken by espeak (engine auto or espeak)") }
            guard voice == nil else {
                throw KianaAIError(.invalidInput, "piper has one voice (voice.piperModel); voice names an espeak-ng voice (engine espeak or auto)")
            }
            guard let p = e.piper else { throw KianaAIError(.toolMissing, "the piper voice is not installed (\(Self.installHint))") }
            if let why = piperFailure.withLock({ $0 }) { throw KianaAIError(.modelMissing, why) }
            do {
                _ = try p.sampleRate()  // starts it: a broken voice is an error here, not a short answer
            } catch {
                remember(error)
                throw error
            }
            return p
        case "espeak":
            guard let s = e.espeak else { throw KianaAIError(.toolMissing, "espeak-ng is not installed (\(Self.installHint))") }
            return s
        default:
            if language == .en, voice == nil, let p = e.piper, piperFailure.withLock({ $0 }) == nil {
                do {
                    _ = try p.sampleRate()
                    return p
                } catch { remember(error) }
            }
            guard let s = e.espeak else { throw KianaAIError(.toolMissing, "no speech engine is installed (\(Self.installHint))") }
            return s
        }
    }

    /// Remembers that Piper cannot start (a missing or broken voice), so English falls back to
    /// espeak-ng without trying again on every request; a timeout or a crash is not remembered.
    func remember(_ error: KianaAIError) {
        guard error.code == .modelMissing || error.code == .toolMissing else { return }
        piperFailure.withLock { $0 = error.message }
    }

    static func validEngine(_ e: String) -> Bool { VoiceSettings.engines.contains(e) }

    /// Checks a request's text, language, voice name and speed.
    public func check(text: String, language: String?, voice: String?, speed: Double?) throws(KianaAIError) -> (Language, Double) {
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !trimmed.isEmpty else { throw KianaAIError(.invalidInput, "there is no text to speak") }
        guard trimmed.unicodeScalars.contains(where: { $0.properties.isAlphabetic || $0.properties.numericType != nil }) else {
            throw KianaAIError(.invalidInput, "the text holds nothing that can be spoken (no letters or digits)")
        }
        guard !text.unicodeScalars.contains(where: { $0.properties.generalCategory == .control && !"\n\r\t".unicodeScalars.contains($0) }) else {
            throw KianaAIError(.invalidInput, "the text holds control characters")
        }
        guard text.count <= settings.maxTextCharacters else {
            throw KianaAIError(.tooLarge, "the text is \(text.count) characters; at most \(settings.maxTextCharacters) are spoken at once")
        }
        let lang: Language
        switch language?.lowercased() {
        case nil, "", "auto": lang = Language.detect(trimmed)
        case let l? where l.hasPrefix("en"): lang = .en
        case let l? where l.hasPrefix("de"): lang = .de
        case let l?: throw KianaAIError(.invalidInput, "language \(l.prefix(20)) is not spoken here (en or de)")
        }
        if let voice {
            guard (1...40).contains(voice.utf8.count), voice.utf8.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || ($0 | 0x20 >= 0x61 && $0 | 0x20 <= 0x7A) || "-_+/".utf8.contains($0) }),
                !voice.hasPrefix("-"), !voice.contains("..")
            else { throw KianaAIError(.invalidInput, "voice must be 1–40 letters, digits, -, _, + or /") }
        }
        let s = speed ?? settings.speed
        guard s.isFinite, (0.25...4).contains(s) else { throw KianaAIError(.invalidInput, "speed must be between 0.25 and 4") }
        return (lang, s)
    }

    /// What `text` would be spoken with (engine, voice, language, sample rate), checked without
    /// speaking it, so an HTTP response can state its format (or refuse) before audio starts.
    public func speechFormat(
        _ text: String, language: String? = nil, voice: String? = nil, speed: Double? = nil, engine: String? = nil
    ) throws(KianaAIError) -> SpeechInfo {
        try plan(text, language: language, voice: voice, speed: speed, engine: engine).info
    }

    struct Plan {
        var info: SpeechInfo
        var synthesizer: any SpeechSynthesizer
        var language: Language
        var speed: Double
        var espeakVoice: String?
    }

    func plan(_ text: String, language: String?, voice: String?, speed: Double?, engine: String?) throws(KianaAIError) -> Plan {
        let (lang, rate) = try check(text: text, language: language, voice: voice, speed: speed)
        let s = try synthesizer(engine: engine, language: lang, voice: voice)
        let name: String
        var espeakVoice: String?
        if let p = s as? PiperSynthesizer {
            name = try p.voiceName()
        } else if let e = s as? ESpeakSynthesizer {
            if let voice {
                // A named voice must be one espeak-ng has: an unknown one would fail mid-answer.
                guard e.language(ofVoice: voice) != nil else {
                    throw KianaAIError(.invalidInput, "espeak-ng has no voice \(voice) (`espeak-ng --voices` lists them)")
                }
                espeakVoice = voice
            } else if let configured = settings.espeakVoice {
                // voice.espeakVoice speaks its own language only; the other keeps its default.
                guard let l = e.language(ofVoice: configured) else {
                    throw KianaAIError(.invalidInput, "voice.espeakVoice \(configured) is not an espeak-ng voice (`espeak-ng --voices` lists them)")
                }
                if l.hasPrefix(lang.rawValue) { espeakVoice = configured }
            }
            name = espeakVoice ?? ESpeakSynthesizer.defaultVoice(lang)
        } else {
            name = s.name
        }
        let info = SpeechInfo(engine: s.name, voice: name, language: lang.rawValue, sampleRate: try s.sampleRate())
        return Plan(info: info, synthesizer: s, language: lang, speed: rate, espeakVoice: espeakVoice)
    }

    /// The longest speech made for one request (a 4096-character text of emoji descriptions
    /// could otherwise run for a quarter of an hour, held in memory when not streamed).
    public static let maxSpeechSeconds = 600.0

    /// Speaks `text`, sentence by sentence: `onStart` gets what it is made with (before any
    /// audio), `onAudio` each piece and returns false to stop.
    public func speak(
        _ text: String, language: String? = nil, voice: String? = nil, speed: Double? = nil, engine: String? = nil, slot: VoiceSlot? = nil,
        onStart: (SpeechInfo) -> Void = { _ in }, onAudio: (PCMAudio) -> Bool
    ) throws(KianaAIError) -> SpeechInfo {
        try admitted(slot) { () throws(KianaAIError) -> SpeechInfo in
            let p = try plan(text, language: language, voice: voice, speed: speed, engine: engine)
            onStart(p.info)
            var samples = 0
            var tooLong = false
            try p.synthesizer.synthesize(text, language: p.language, voice: p.espeakVoice, speed: p.speed) { piece in
                samples += piece.samples.count
                if Double(samples) / Double(max(1, piece.sampleRate)) > Self.maxSpeechSeconds {
                    tooLong = true
                    return false
                }
                return onAudio(piece.sampleRate == p.info.sampleRate ? piece : piece.resampled(to: p.info.sampleRate))
            }
            if tooLong { throw KianaAIError(.tooLarge, "the speech would be longer than \(Int(Self.maxSpeechSeconds / 60)) minutes; send less text") }
            return p.info
        }
    }

    /// The whole of `text` spoken, as one piece of audio.
    public func speech(_ text: String, language: String? = nil, voice: String? = nil, speed: Double? = nil, engine: String? = nil) throws(KianaAIError) -> (PCMAudio, SpeechInfo) {
        var samples: [Int16] = []
        let info = try speak(text, language: language, voice: voice, speed: speed, engine: engine) { piece in
            samples += piece.samples
            return true
        }
        return (PCMAudio(sampleRate: info.sampleRate, samples: samples), info)
    }

    /// Recognises English speech in `audio`.
    public func transcribe(_ audio: PCMAudio, language: String? = nil, slot: VoiceSlot? = nil) throws(KianaAIError) -> Transcript {
        switch language?.lowercased() {
        case nil, "", "auto", "english": break
        case let l? where l == "en" || l.hasPrefix("en-") || l.hasPrefix("en_"): break
        case let l? where l.hasPrefix("de"):
            throw KianaAIError(.invalidInput, "German speech cannot be recognised here: no offline German model is installable (docs/voice.md); English (en) is")
        case let l?: throw KianaAIError(.invalidInput, "language \(l.prefix(20)) cannot be recognised here; English (en) can")
        }
        guard !audio.samples.isEmpty else { throw KianaAIError(.invalidInput, "the audio holds no sound (zero length)") }
        guard audio.seconds <= settings.limits.maxSeconds else {
            throw KianaAIError(.tooLarge, "the audio is \(Int(audio.seconds.rounded())) s long; at most \(Int(settings.limits.maxSeconds)) s are taken")
        }
        return try admitted(slot) { () throws(KianaAIError) -> Transcript in
            guard let r = engines.sphinx else { throw KianaAIError(.toolMissing, "speech recognition is not installed (\(Self.installHint))") }
            let t0 = DispatchTime.now().uptimeNanoseconds
            let text = try r.transcribe(audio)
            let secs = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
            return Transcript(text: text, language: "en", engine: r.name, duration: audio.seconds, seconds: secs)
        }
    }
}

/// A reserved place among the voice requests in flight (`Voice.reserve`): given back once, by
/// `release` or when dropped.
public final class VoiceSlot: Sendable {
    private let giveBack: Mutex<(@Sendable () -> Void)?>

    init(_ giveBack: @escaping @Sendable () -> Void) { self.giveBack = Mutex(giveBack) }

    public func release() {
        let f = giveBack.withLock { f in
            defer { f = nil }
            return f
        }
        f?()
    }

    deinit { release() }
}
