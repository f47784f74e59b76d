import KianaCore
import KianaStore

/// The one place errors become the CLI's line (`kiana: <line>` on stderr, exit code 1).
public enum ErrorLine {
    /// The text after `kiana: ` for any error. Module errors give their message (ledger rule
    /// errors their full description with block and rule; database errors their cause too);
    /// anything else its description.
    public static func text(for error: any Error) -> String {
        switch error {
        case let e as KianaCoreError: return Terminal.escape(e.description)
        case let e as KianaStoreError where e.code == .database: return Terminal.escape(e.description)
        case let e as any KianaError: return Terminal.escape(e.message)
        default: return Terminal.escape("\(error)")
        }
    }

    /// The error's code from the closed set, for `--json` error output; `internal` for others.
    public static func code(for error: any Error) -> ErrorCode {
        (error as? any KianaError)?.code ?? .internal
    }
}
