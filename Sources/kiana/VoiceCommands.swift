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

/// Where spoken audio goes: a WAV file (exact header, written when done), a player on PATH, or
/// standard output (a WAV stream of open length) when that is a pipe.
final class SpeechSink {
    enum Target {
        case file(String)
        case player(Process, FileHandle)
        case stdout
    }
    let target: Target
    var rate: Int?
    var samples: [Int16] = []
    var total = 0

    /// `path` nil: a player when stdout is a terminal (or taken by text), else stdout.
    init(path: String?, stdoutAllowed: Bool = true) throws {
        if let path {
            target = .file(path)
        } else if isatty(1) == 1 || !stdoutAllowed {
            guard let player = LocalVoice.player() else {
                throw KianaNodeError(.toolMissing, "no audio player found (aplay, paplay, pw-play, ffplay): write a file with -o FILE.wav, or pipe into a player")
            }
            let p = Process()
            p.executableURL = URL(fileURLWithPath: player[0])
            p.arguments = Array(player.dropFirst())
            let pipe = Pipe()
            p.standardInput = pipe
            try p.run()
            target = .player(p, pipe.fileHandleForWriting)
        } else {
            target = .stdout
        }
    }

    func add(_ audio: LocalVoice.Audio) {
        if rate == nil {
            rate = audio.sampleRate
            send(LocalVoice.streamHeader(sampleRate: audio.sampleRate))
        }
        total += audio.samples.count
        if case .file = target { samples += audio.samples } else { send(LocalVoice.bytes(audio.samples)) }
    }

    func send(_ bytes: [UInt8]) {
        switch target {
        case .file: break
        case .player(_, let h): try? h.write(contentsOf: Data(bytes))
        case .stdout: Output.emit(1, Data(bytes))
        }
    }

    /// Writes the file or lets the player finish; returns seconds of audio.
    func finish() throws -> Double {
        let seconds = rate.map { Double(total) / Double($0) } ?? 0
        switch target {
        case .file(let path):
            try LocalVoice.write(LocalVoice.Audio(sampleRate: rate ?? 22_050, samples: samples), to: path)
        case .player(let p, let h):
            try? h.close()
            p.waitUntilExit()
        case .stdout: break
        }
        return seconds
    }
}

struct Say: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Speak text offline (espeak-ng, or Piper when installed): to a WAV file, a pipe, or the speakers.")
    @OptionGroup var data: DataOptions
    @OptionGroup var voice: VoiceFlags
    @Option(help: "en, de or auto (detected from the text).") var language: String = "auto"
    @Option(name: .shortAndLong, help: "Write a WAV file (16-bit PCM) instead of playing it.") var output: String?
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
            // Checked (engine found, voice started) before a file or player is opened.
            let format = try v.speechFormat(words, language: language)
            let sink = try SpeechSink(path: output)
            _ = try v.speak(words, language: language) { piece in
                sink.add(piece)
                return true
            }
            let seconds = try sink.finish()
            if let output {
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
    @Argument(help: "A WAV file (PCM or float, any common rate; resampled to 16 kHz).") var file: String

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
            _ = try v.speak(sentence) { piece in
                sink.add(piece)
                return true
            }
        } catch { failure = error }
    }

    func finish() throws {
        for s in sentences.finish() { speak(s) }
        _ = try sink.finish()
        if let failure { throw failure }
    }
}
