import ArgumentParser
import Foundation
import KianaNode

/// The voice settings as flags (serve, say, ask).
struct VoiceFlags: ParsableArguments {
    @Option(help: "Text to speech: auto, espeak or piper (default $KIANA_VOICE_ENGINE or auto).") var voiceEngine: String?
    @Option(help: "Speaking rate in percent, 25-400 (default $KIANA_VOICE_SPEED or 100).") var voiceSpeed: Int?
    @Option(help: "An espeak-ng voice instead of the language's default, e.g. en-gb or de+f3.") var espeakVoice: String?
    @Option(help: "A Piper voice (.onnx) instead of the packaged en_US-joe-medium.") var piperModel: String?

    var given: [String: String] {
        var g: [String: String] = [:]
        g["voice.engine"] = voiceEngine
        g["voice.speed"] = voiceSpeed.map(String.init)
        g["voice.espeakVoice"] = espeakVoice
        g["voice.piperModel"] = piperModel
        return g
    }
}

/// Where spoken audio goes: a WAV file (exact header, written when done; "-" is standard
/// output), a player on PATH, or standard output (a WAV stream of open length) when that is a
/// pipe. A reader that goes away (`| head`) stops the speech.
final class SpeechSink {
    enum Target {
        case file(LocalVoice.Output)
        case player(LocalVoice.Child)
        case stdout
        /// Standard output redirected to a regular file (`> out.wav`): written whole at the end,
        /// with exact sizes.
        case stdoutFile
    }
    let target: Target
    var rate: Int?
    var samples: [Int16] = []
    var total = 0
    /// False once a write failed (the reader is gone).
    var open = true

    /// `path` nil: a player when stdout is a terminal (or holds text), else stdout.
    /// `fileOption` names the flag that writes a file, for the error without a player.
    init(path: String?, stdoutAllowed: Bool = true, fileOption: String = "-o FILE.wav") throws {
        if let path, path != "-" {
            target = .file(try LocalVoice.Output(path))
        } else if path == nil && (isatty(1) == 1 || !stdoutAllowed) {
            guard let player = LocalVoice.player() else {
                throw KianaNodeError(
                    .toolMissing,
                    "no audio player found (aplay, paplay, pw-play, ffplay): write a file with \(fileOption)" + (stdoutAllowed ? ", or pipe into a player" : ""))
            }
            let p = try LocalVoice.Child(player[0], Array(player.dropFirst()))
            try? p.stdout.close()
            target = .player(p)
        } else {
            var st = stat()
            target = fstat(1, &st) == 0 && st.st_mode & S_IFMT == S_IFREG ? .stdoutFile : .stdout
        }
    }

    /// Adds speech; false when nobody is listening any more.
    func add(_ audio: LocalVoice.Audio) -> Bool {
        if rate == nil {
            rate = audio.sampleRate
            send(LocalVoice.streamHeader(sampleRate: audio.sampleRate))
        }
        total += audio.samples.count
        switch target {
        case .file, .stdoutFile: samples += audio.samples
        default: send(LocalVoice.bytes(audio.samples))
        }
        return open
    }

    func send(_ bytes: [UInt8]) {
        guard open else { return }
        do {
            switch target {
            case .file, .stdoutFile: break
            case .player(let p): try p.stdin.write(contentsOf: Data(bytes))
            case .stdout: try FileHandle.standardOutput.write(contentsOf: Data(bytes))
            }
        } catch { open = false }
    }

    /// Writes the file or lets the player finish; returns seconds of audio.
    func finish() throws -> Double {
        let seconds = rate.map { Double(total) / Double($0) } ?? 0
        switch target {
        case .file(let out):
            try out.finish(LocalVoice.Audio(sampleRate: rate ?? 22_050, samples: samples))
        case .player(let p):
            try? p.stdin.close()
            let status = p.waitUntilExit()
            guard status == 0 else { throw KianaNodeError(.toolMissing, "the audio player failed (exit \(status)); write a file instead") }
        case .stdoutFile:
            var wav = LocalVoice.header(sampleRate: rate ?? 22_050, samples: samples.count)
            wav += LocalVoice.bytes(samples)
            do { try FileHandle.standardOutput.write(contentsOf: Data(wav)) } catch {
                throw KianaNodeError(.io, "cannot write the WAV to standard output", cause: error)
            }
        case .stdout: break
        }
        return seconds
    }

    /// The work failed: no half file is left.
    func abandon() {
        switch target {
        case .file(let out): out.abandon()
        case .player(let p): p.signal(SIGTERM)
        case .stdout, .stdoutFile: break
        }
    }
}

struct Say: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Speak text offline (espeak-ng, or Piper when installed): to a WAV file, a pipe, or the speakers.")
    @OptionGroup var data: DataOptions
    @OptionGroup var voice: VoiceFlags
    @Option(help: "en, de or auto (detected from the text).") var language: String = "auto"
    @Option(name: .shortAndLong, help: "Write a WAV file (16-bit PCM) instead of playing it; - writes it to standard output.") var output: String?
    @Argument(help: "The text to speak (- reads standard input).") var text: String

    func run() throws {
        try perform {
            let v = try LocalVoice.open(directory: try? data.directory, flags: voice.given)
            var words = text
            if text == "-" {
                let input = FileHandle.standardInput.readData(ofLength: 64 << 10 + 1)
                guard input.count <= 64 << 10 else { throw KianaNodeError(.tooLarge, "standard input holds more than 64 KiB of text") }
                words = String(decoding: input, as: UTF8.self)
            }
            // The output first (a path that cannot be written fails before an engine starts), then
            // the request checked (engine found, voice started) before anything is spoken.
            let sink = try SpeechSink(path: output)
            let format: LocalVoice.Info
            do {
                format = try v.speechFormat(words, language: language)
                _ = try v.speak(words, language: language) { piece in sink.add(piece) }
            } catch {
                sink.abandon()
                throw error
            }
            let seconds = try sink.finish()
            if let output, output != "-" {
                Output.note(String(format: "kiana: wrote %@ (%.1f s, %@ %@, %d Hz)", output, seconds, format.engine, format.voice, format.sampleRate))
            }
        }
    }
}

struct Listen: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the English text spoken in a WAV file (PocketSphinx, offline).")
    @OptionGroup var data: DataOptions
    @OptionGroup var output: OutputOptions
    @Option(help: "The language spoken (en).") var language: String = "en"
    @Argument(help: "A WAV file (PCM or float, 8-96 kHz; resampled to 16 kHz); - reads standard input.") var file: String

    func run() throws {
        try perform {
            let v = try LocalVoice.open(directory: try? data.directory, flags: [:])
            let audio = try LocalVoice.read(file, limits: v.settings.limits)
            let heard = try v.transcribe(audio, language: language)
            try output.emit(heard) { h in
                if h.text.isEmpty { Output.note("kiana: no words were recognised in \(file)") }
                say(h.text)
            }
        }
    }
}

/// `kiana ask --speak`: the answer spoken sentence by sentence while it is generated.
/// Text arrives from the generation's thread, one piece at a time (serialised by a lock).
final class AnswerSpeaker: @unchecked Sendable {
    let lock = NSLock()
    let v: LocalVoice.Engine
    let sink: SpeechSink
    var sentences = LocalVoice.Sentences()
    var failure: (any Error)?
    /// The answer's language: its question's (a short sentence alone could pass for either).
    var language: String?

    init(v: LocalVoice.Engine, sink: SpeechSink) {
        self.v = v
        self.sink = sink
    }

    /// True once any answer text arrived.
    var received = false

    func add(_ piece: String) {
        lock.lock()
        defer { lock.unlock() }
        received = received || !piece.isEmpty
        for s in sentences.add(piece) { speak(s) }
    }

    func speak(_ sentence: String) {
        guard failure == nil else { return }
        do {
            let text = LocalVoice.speakable(sentence)
            guard !text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty, sink.open else { return }
            _ = try v.speak(text, language: language) { piece in sink.add(piece) }
        } catch { failure = error }
    }

    func finish() throws {
        for s in sentences.finish() { speak(s) }
        if let failure {
            sink.abandon()
            throw failure
        }
        _ = try sink.finish()
    }
}
