import ArgumentParser
import Foundation
import KianaNode

#if canImport(Glibc)
    import Glibc
#endif

/// Where a passphrase comes from: a file (scripts) or the terminal (asked without echo).
struct PassphraseOptions: ParsableArguments {
    @Option(help: "Read the passphrase from the first line of this file (for scripts) instead of asking at the terminal.")
    var passphraseFile: String?

    func passphrase(confirm: Bool) throws -> [UInt8] {
        if let passphraseFile {
            guard let data = FileManager.default.contents(atPath: passphraseFile) else {
                throw KianaNodeError(.notFound, "cannot read the passphrase file \(passphraseFile)")
            }
            // The first line, by bytes (a Swift String would keep "\r\n" as one character).
            var line = Array(data.prefix { $0 != 0x0A })
            if line.last == 0x0D { line.removeLast() }
            guard !line.isEmpty else { throw KianaNodeError(.invalidInput, "\(passphraseFile) holds no passphrase on its first line") }
            guard !line.allSatisfy({ $0 == 0x20 || $0 == 0x09 }) else { throw KianaNodeError(.invalidInput, "\(passphraseFile): the passphrase is only blanks") }
            return line
        }
        guard isatty(0) == 1 else {
            throw KianaNodeError(.invalidInput, "no terminal to ask for the passphrase: give --passphrase-file FILE")
        }
        let first = try Self.ask("Passphrase: ")
        if confirm {
            guard try Self.ask("Again: ") == first else { throw KianaNodeError(.invalidInput, "the passphrases differ") }
        }
        return first
    }

    /// Reads a line from the terminal with echo off (restored however the read ends).
    static func ask(_ prompt: String) throws -> [UInt8] {
        Output.write(2, prompt)
        var saved = termios()
        let haveTerm = tcgetattr(0, &saved) == 0
        if haveTerm {
            var quiet = saved
            quiet.c_lflag &= ~tcflag_t(ECHO)
            tcsetattr(0, TCSAFLUSH, &quiet)
        }
        defer {
            if haveTerm { tcsetattr(0, TCSAFLUSH, &saved) }
            Output.write(2, "\n")
        }
        guard let line = readLine(strippingNewline: true) else { throw KianaNodeError(.invalidInput, "no passphrase given") }
        return Array(line.utf8)
    }
}

/// SIGINT, SIGTERM and SIGHUP during a backup or restore remove its temporary files (which hold
/// the unsealed ledger or keys) before the process ends.
enum CleanupOnSignals {
    nonisolated(unsafe) static var sources: [any DispatchSourceSignal] = []

    static func install() {
        for sig in [SIGINT, SIGTERM, SIGHUP] {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler { TemporaryPaths.removeAllAndExit(128 + sig) }
            source.resume()
            sources.append(source)
        }
    }
}

struct Backup: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write the data directory (keys, API token, config, the ledger) to one file sealed with a passphrase; the node may keep serving.")
    @OptionGroup var data: DataOptions
    @OptionGroup var secret: PassphraseOptions
    @OptionGroup var output: OutputOptions
    @Argument(help: "The backup file to write (must not exist).") var file: String

    func run() throws {
        try perform {
            let directory = try data.directory
            let passphrase = try secret.passphrase(confirm: true)
            CleanupOnSignals.install()
            let bar = ProgressBar()
            let s = try DataBackup.make(directory: directory, to: file, passphrase: passphrase) { phase, done, total in
                bar.update(phase, done, total, phase == "sealing" ? .bytes : .items)
            }
            try output.emit(s) { s in
                say("Backed up \(directory.path) to \(s.file): \(s.bytes) bytes, ledger height \(s.height), \(s.entries) entries")
            }
        }
    }
}

struct Restore: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Restore a backup into a data directory: decrypted beside it, the ledger verified, then made live.")
    @OptionGroup var data: DataOptions
    @OptionGroup var secret: PassphraseOptions
    @OptionGroup var output: OutputOptions
    @Flag(help: "Move a node already in the data directory aside (to <dir>.before-restore-<time>) instead of refusing.") var force = false
    @Argument(help: "The backup file.") var file: String

    func run() throws {
        try perform {
            let directory = try data.directory
            let passphrase = try secret.passphrase(confirm: false)
            CleanupOnSignals.install()
            let bar = ProgressBar()
            let s = try DataBackup.restore(from: file, to: directory, passphrase: passphrase, force: force) { phase, done, total in
                bar.update(phase, done, total, phase == "restoring" ? .bytes : .items)
            }
            try output.emit(s) { s in
                say("Restored \(s.file) into \(directory.path): ledger height \(s.height), \(s.entries) entries, verified")
                if let aside = s.movedAside { say("The node that was there is kept in \(aside) (remove it when you no longer need it).") }
            }
        }
    }
}
