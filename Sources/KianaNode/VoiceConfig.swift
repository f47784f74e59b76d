import Foundation
import KianaAI
import KianaStore

extension VoiceSettings {
    /// The voice settings (`voice.*`) of a resolved configuration.
    public init(_ config: KianaConfig) {
        self.init(
            engine: config.text("voice.engine") ?? "auto", speed: Double(config.number("voice.speed") ?? 100) / 100,
            espeakVoice: config.text("voice.espeakVoice"), piperModel: config.text("voice.piperModel"),
            limits: AudioLimits(maxSeconds: Double(config.number("voice.maxSeconds") ?? 120)))
    }
}

/// Voice for the CLI (`kiana say`, `listen`, `ask --voice`): the engines in this process, with
/// the data directory's settings (when it exists) under the flags given.
public enum LocalVoice {
    public typealias Engine = Voice
    public typealias Child = Spawned
    public typealias Audio = PCMAudio
    public typealias Info = SpeechInfo
    public typealias Heard = Transcript
    public typealias Sentences = SentenceStream

    public static func open(directory: DataDirectory?, flags: [String: String]) throws -> Voice {
        let config: KianaConfig
        if let directory, FileManager.default.fileExists(atPath: directory.path) {
            config = try KianaConfig.resolve(flags: flags, directory: directory)
        } else {
            // No data directory yet: defaults, environment and flags.
            config = try KianaConfig.resolve(flags: flags, directory: DataDirectory(path: "/nonexistent-kiana-\(getpid())"))
        }
        return Voice(settings: VoiceSettings(config))
    }

    /// A WAV file's audio ("-": standard input), checked against `limits`. Pipes and devices
    /// are read up to the limit; a regular file over it is refused without being read.
    public static func read(_ path: String, limits: AudioLimits) throws -> PCMAudio {
        let handle: FileHandle
        if path == "-" {
            handle = FileHandle.standardInput
        } else {
            var st = stat()
            guard stat(path, &st) == 0 else { throw KianaNodeError(.notFound, "\(path): \(errno == ENOENT ? "no such file" : String(cString: strerror(errno)))") }
            if st.st_mode & S_IFMT == S_IFDIR { throw KianaNodeError(.invalidInput, "\(path) is a folder, not a WAV file") }
            if st.st_mode & S_IFMT == S_IFREG, Int(st.st_size) > limits.maxBytes {
                throw KianaNodeError(.tooLarge, "\(path) is \(st.st_size) bytes; at most \(limits.maxBytes) are taken")
            }
            guard let h = FileHandle(forReadingAtPath: path) else { throw KianaNodeError(.io, "cannot read \(path): \(String(cString: strerror(errno)))") }
            handle = h
        }
        let data: Data
        do { data = try handle.read(upToCount: limits.maxBytes + 1) ?? Data() } catch { throw KianaNodeError(.io, "cannot read \(path)", cause: error) }
        guard data.count <= limits.maxBytes else { throw KianaNodeError(.tooLarge, "\(path) holds more than \(limits.maxBytes) bytes") }
        do { return try WAV.decode([UInt8](data), limits: limits) } catch { throw KianaNodeError(error.code, "\(path): \(error.message)") }
    }

    /// Where a WAV file goes (`OutputFile`); `finish` writes the audio as 16-bit WAV.
    public typealias Output = OutputFile

    /// The language of a text (for speaking an answer in its question's language).
    public static func language(of text: String) -> String { Language.detect(text).rawValue }

    /// A text as it should be spoken: citation marks ("[1]", "[2][3]") removed.
    public static func speakable(_ text: String) -> String {
        text.replacingOccurrences(of: #"\s*\[\d+(?:\s*[,–-]\s*\d+)*\]"#, with: "", options: .regularExpression)
    }

    /// The header of a WAV stream of unknown length, and samples as bytes.
    public static func streamHeader(sampleRate: Int) -> [UInt8] { WAV.header(sampleRate: sampleRate, dataBytes: nil) }
    public static func header(sampleRate: Int, samples: Int) -> [UInt8] { WAV.header(sampleRate: sampleRate, dataBytes: samples * 2) }
    public static func bytes(_ samples: [Int16]) -> [UInt8] {
        var out: [UInt8] = []
        WAV.appendSamples(samples, to: &out)
        return out
    }

    /// An audio player on PATH that reads WAV from standard input, with its arguments.
    public static func player() -> [String]? {
        let candidates: [[String]] = [["aplay", "-q", "-"], ["paplay"], ["pw-play", "-"], ["ffplay", "-nodisp", "-autoexit", "-loglevel", "quiet", "-"]]
        for c in candidates {
            if let p = Executables.find(c[0]) { return [p] + c.dropFirst() }
        }
        return nil
    }
}
