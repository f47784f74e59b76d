import ArgumentParser
import Foundation
import KianaNode
import Logging
import Synchronization

/// `--json` on the read commands: the same values the text shows, as JSON, so scripts never
/// parse text.
struct OutputOptions: ParsableArguments {
    @Flag(help: "Print JSON instead of text (for scripts).") var json = false

    /// Prints `value` as JSON when `--json` was given, else runs `text`.
    func emit<T: Encodable>(_ value: T, text: (T) throws -> Void) throws {
        if json { try Output.json(value) } else { try text(value) }
    }
}

/// The one way commands print. Text goes through `Terminal.escape`, so control characters from
/// the ledger, files or peers (a stored "\u{1b}[2J") are shown as escapes instead of acting on
/// the terminal. JSON is pretty-printed with sorted keys.
enum Output {
    /// `value` as JSON on stdout; `pretty: false` prints it on one line.
    static func json<T: Encodable>(_ value: T, pretty: Bool = true) throws {
        let enc = JSONEncoder()
        enc.outputFormatting = pretty ? [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes] : [.sortedKeys, .withoutEscapingSlashes]
        Output.emit(1, try enc.encode(value))
        Output.write(1, "\n")
    }

    /// An error on stderr: `kiana: <line>`.
    static func error(_ error: any Error) {
        if let logger = errorLogger.withLock({ $0 }) {
            logger.error("command failed", metadata: ["error": .string(ErrorLine.text(for: error))])
            return
        }
        write(2, "kiana: " + ErrorLine.text(for: error) + "\n")
    }

    /// Set by `serve --log-format json`: errors become log lines too, so its stderr is all JSON.
    static let errorLogger = Mutex<Logger?>(nil)

    /// Bytes to stdout (1) or stderr (2); a closed pipe is ignored rather than fatal (SIGPIPE is
    /// ignored, and Foundation's old `write(_:)` traps on EPIPE).
    static func emit(_ fd: Int32, _ data: Data) {
        try? (fd == 1 ? FileHandle.standardOutput : FileHandle.standardError).write(contentsOf: data)
    }

    /// Text to stdout (1) or stderr (2), as it is (`say` and `note` escape control characters).
    static func write(_ fd: Int32, _ text: String) { emit(fd, Data(text.utf8)) }

    /// Text as it streams in (a model's answer, token by token) on stdout, control characters
    /// escaped like any other text (a model can be led to emit ESC sequences); newlines and tabs kept.
    static func stream(_ piece: String) { write(1, Terminal.escape(piece, multiline: true)) }

    /// A step of long work on stderr: `  … step`.
    static func progress(_ step: String) { write(2, "  … " + step + "\n") }

    /// A line on stderr (notes and progress that are not the command's result).
    static func note(_ line: String) {
        write(2, Terminal.escape(line, multiline: true) + "\n")
    }
}

/// One line (or several) of text on stdout, control characters escaped.
func say(_ line: String) {
    Output.write(1, Terminal.escape(line, multiline: true) + "\n")
}

/// Runs a command body; any error becomes one line on stderr and exit code 1.
func perform(_ body: () throws -> Void) throws {
    do {
        try body()
    } catch let e as ExitCode {
        throw e
    } catch {
        Output.error(error)
        throw ExitCode(1)
    }
}

/// Runs an async command body; any error becomes one line on stderr and exit code 1.
func performAsync(_ body: () async throws -> Void) async throws {
    do {
        try await body()
    } catch let e as ExitCode {
        throw e
    } catch {
        Output.error(error)
        throw ExitCode(1)
    }
}

func errorLine(for error: any Error) -> String { ErrorLine.text(for: error) }

func date(_ ms: UInt64) -> String {
    ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: Double(ms) / 1000))
}

/// What a prompt read from standard input.
enum PromptAnswer: Equatable {
    case line(String)
    case endOfInput
    case timedOut
}

extension Output {
    /// One line from standard input, waiting at most until `deadline` (poll(2); the line is read
    /// byte by byte, so nothing after it is taken from the next reader).
    static func readLine(until deadline: Date) -> PromptAnswer {
        var bytes: [UInt8] = []
        while true {
            let left = deadline.timeIntervalSinceNow
            guard left > 0 else { return .timedOut }
            var p = pollfd(fd: 0, events: Int16(POLLIN), revents: 0)
            let ready = poll(&p, 1, Int32(min(left, 3600) * 1000))
            if ready < 0 {
                if errno == EINTR { continue }
                return .endOfInput
            }
            if ready == 0 { continue }
            var byte: UInt8 = 0
            let n = read(0, &byte, 1)
            if n < 0, errno == EINTR { continue }
            if n <= 0 { return bytes.isEmpty ? .endOfInput : .line(String(decoding: bytes, as: UTF8.self)) }
            if byte == UInt8(ascii: "\n") {
                if bytes.last == UInt8(ascii: "\r") { bytes.removeLast() }
                return .line(String(decoding: bytes, as: UTF8.self))
            }
            if bytes.count < 4096 { bytes.append(byte) }
        }
    }
}
