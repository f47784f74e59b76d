import ArgumentParser
import Foundation
import KianaNode
#if canImport(Glibc)
    import Glibc
#endif

@main
struct Kiana: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kiana",
        abstract: "KI_ana: a private, local-first AI assistant with a signed, replicated memory.",
        version: Node.version,
        subcommands: [
            Init.self, Serve.self, Status.self, Token.self, Remember.self, Forget.self, List.self, Show.self,
            Ingest.self, Search.self, Embed.self, IndexCommand.self, Tokenize.self, Generate.self, Models.self, Ask.self, Say.self, Listen.self, Chat.self, Conversations.self,
            Ledger.self, VoteCommand.self, DeviceCommand.self, Peers.self, SyncCommand.self, Pair.self, Join.self, Discover.self,
            Export.self, Import.self, ConfigCommand.self, ServiceCommand.self, Ready.self, Backup.self, Restore.self, Bench.self,
        ])

    /// Files the node creates (database, exports, keys) are private to the user. Arguments that
    /// are not valid UTF-8 are refused here: Swift would otherwise replace the bad bytes silently.
    static func main() async {
        umask(0o077)
        // A closed stdout or stderr pipe (`kiana serve | head`) is an error to report, not a
        // signal that kills the process.
        signal(SIGPIPE, SIG_IGN)
        // On Linux the Swift runtime reads the arguments from /proc/self/cmdline; without /proc
        // (a bare chroot) it sees none, not even the program's name, and would run as if asked
        // for nothing.
        if CommandLine.argc < 1 {
            Output.error(KianaNodeError(.io, "cannot read the command line: /proc is not mounted (mount it with `mount -t proc proc /proc`)"))
            Glibc.exit(1)
        }
        if let bad = CommandLine.invalidUTF8Argument {
            Output.error(KianaNodeError(.invalidInput, "argument \(bad) is not valid UTF-8 text"))
            Glibc.exit(1)
        }
        do {
            var command = try parseAsRoot(nil)
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
            StructuredLogHandler.flush()
        } catch {
            StructuredLogHandler.flush()
            let code = exitCode(for: error)
            // Help and --version print as usual; a mistake on the command line is one line and
            // exit code 1, like every other error (the usage is a `--help` away).
            if code == .success || error is ExitCode { exit(withError: error) }
            var message = Self.message(for: error).split(separator: "\n").first.map(String.init) ?? "invalid arguments"
            // `--k -1`: the parser reads "-1" as an option, so the value looks missing.
            if message.contains("Missing value for '--"), let flag = message.split(separator: "'").dropFirst().first?.split(separator: " ").first,
                let i = CommandLine.arguments.firstIndex(of: String(flag)), i + 1 < CommandLine.arguments.count,
                let value = Double(CommandLine.arguments[i + 1]), value < 0
            {
                message += "; a negative value is written \(flag)=\(CommandLine.arguments[i + 1])"
            }
            Output.write(2, "kiana: \(message.replacingOccurrences(of: "Error: ", with: "")) (see `kiana help`)\n")
            Glibc.exit(1)
        }
    }
}

extension CommandLine {
    /// The position (1-based) of the first argument whose bytes are not valid UTF-8, if any.
    static var invalidUTF8Argument: Int? {
        for i in 1..<Int(argc) {
            guard let p = unsafeArgv[i] else { continue }
            let bytes = UnsafeBufferPointer(start: UnsafeRawPointer(p).assumingMemoryBound(to: UInt8.self), count: strlen(p))
            if String(validating: bytes, as: UTF8.self) == nil { return i }
        }
        return nil
    }
}

struct DataOptions: ParsableArguments {
    @Option(name: .long, help: "Data directory (default: $KIANA_DATA_DIR or ~/.kiana).")
    var dataDir: String?

    var directory: DataDirectory { get throws { try DataDirectory.resolve(dataDir) } }
}
