import ArgumentParser
import Foundation
import KianaNode

struct ConfigCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "config", abstract: "The node's settings: flag > KIANA_* environment > <data dir>/config.json > default.",
        subcommands: [ConfigShow.self, ConfigCheck.self], defaultSubcommand: ConfigShow.self)
}

struct ConfigShow: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "show", abstract: "Every setting's effective value and where it came from (secrets hidden).")
    @OptionGroup var data: DataOptions
    @OptionGroup var output: OutputOptions

    func run() throws {
        try perform {
            let directory = try data.directory
            let config = try KianaConfig.resolve(directory: directory)
            struct View: Encodable {
                var file: String
                var fileExists: Bool
                var settings: [KianaConfig.Row]
            }
            let view = View(file: directory.path + "/config.json", fileExists: config.filePath != nil, settings: config.rows)
            try output.emit(view) { v in
                say("config file: \(v.file)\(v.fileExists ? "" : " (none; defaults apply)")")
                let width = v.settings.map(\.key.count).max() ?? 0
                for r in v.settings {
                    let key = r.key.padding(toLength: width, withPad: " ", startingAt: 0)
                    let value = r.value ?? "(unset)"
                    say("\(key)  \(value)  [\(r.source?.rawValue ?? "unset")]  \(r.environment), \(r.flag)")
                }
            }
        }
    }
}

struct ConfigCheck: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check", abstract: "Check config.json and the KIANA_* environment; exit 1 naming the first bad key.")
    @OptionGroup var data: DataOptions

    func run() throws {
        try perform {
            let directory = try data.directory
            let config = try KianaConfig.resolve(directory: directory)
            // The backend's own rules (a remote backend needs a model, a base URL).
            _ = try BackendConfig(config).validated()
            for (name, meant) in KianaConfig.misspelledEnvironment(ProcessInfo.processInfo.environment) {
                Output.note("kiana: \(name) is not a variable kiana reads; did you mean \(meant)?")
            }
            say(
                "\(config.filePath ?? directory.path + "/config.json (none)"): OK, \(config.values.count) of \(KianaConfig.settings.count) settings have a value (`kiana config show` lists them)"
            )
        }
    }
}
