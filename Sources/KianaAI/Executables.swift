import Foundation

/// Finding the external tools KianaAI runs (pdftotext, espeak-ng, python3) and the CLI's audio
/// players: one lookup for all of them.
public enum Executables {
    /// `name` in a PATH folder (then the usual system folders), or nil.
    public static func find(_ name: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
        for dir in path.split(separator: ":").map(String.init) + ["/usr/local/bin", "/usr/bin", "/bin"] {
            let p = "\(dir)/\(name)"
            if FileManager.default.isExecutableFile(atPath: p) { return p }
        }
        return nil
    }
}
