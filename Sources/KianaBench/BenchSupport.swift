import Foundation

extension String {
    /// A column of a bench table: the text padded with spaces to `width` (as it is when longer).
    public func padded(to width: Int) -> String { count >= width ? self : self + String(repeating: " ", count: width - count) }
}

/// Memory of a process, from Linux /proc.
public enum ProcessMemory {
    /// Resident and peak resident memory in bytes of `process` (`"self"` or a pid); 0 when unreadable.
    public static func of(_ process: String = "self") -> (rss: Int, peak: Int) {
        guard let s = try? String(contentsOfFile: "/proc/\(process)/status", encoding: .utf8) else { return (0, 0) }
        func field(_ name: String) -> Int {
            guard let line = s.split(separator: "\n").first(where: { $0.hasPrefix(name) }) else { return 0 }
            return (Int(line.split(separator: " ").dropFirst().first { Int($0) != nil } ?? "0") ?? 0) * 1024
        }
        return (field("VmRSS:"), field("VmHWM:"))
    }
}
