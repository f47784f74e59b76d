import Foundation
import Testing

/// Locates ../shared (DESIGN.md, vectors, data) beside the checkout, or `$KIANA_SHARED`.
/// Under CI (CI=true) a missing file is a failure, elsewhere the test is skipped.
public enum Shared {
    public static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    public static var root: URL {
        if let env = ProcessInfo.processInfo.environment["KIANA_SHARED"], !env.isEmpty { return URL(fileURLWithPath: env) }
        return packageRoot.deletingLastPathComponent().appendingPathComponent("shared")
    }

    public static var isCI: Bool { ProcessInfo.processInfo.environment["CI"] == "true" }

    public static func exists(_ relative: String) -> Bool {
        FileManager.default.fileExists(atPath: root.appendingPathComponent(relative).path)
    }

    /// JSON files below `relative`, sorted; empty when the folder is missing.
    public static func jsonFiles(_ relative: String) -> [String] {
        let dir = root.appendingPathComponent(relative)
        guard let e = FileManager.default.enumerator(atPath: dir.path) else { return [] }
        return e.compactMap { $0 as? String }.filter { $0.hasSuffix(".json") }.sorted().map { relative + "/" + $0 }
    }
}

/// Runs a process to completion, feeding `input` on stdin; returns (status, stdout, stderr).
@discardableResult
public func runProcess(_ executable: String, _ args: [String], input: Data? = nil, environment: [String: String]? = nil) throws -> (status: Int32, out: Data, err: Data) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: executable)
    p.arguments = args
    if let environment { p.environment = environment }
    let outPipe = Pipe(), errPipe = Pipe(), inPipe = Pipe()
    p.standardOutput = outPipe
    p.standardError = errPipe
    p.standardInput = inPipe
    try p.run()
    if let input { inPipe.fileHandleForWriting.write(input) }
    try inPipe.fileHandleForWriting.close()
    // Read both pipes fully before waiting so a chatty child cannot block.
    nonisolated(unsafe) var errData = Data()
    let errThread = Thread { errData = errPipe.fileHandleForReading.readDataToEndOfFile() }
    errThread.start()
    let out = outPipe.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    while errThread.isExecuting || !errThread.isFinished { usleep(1000) }
    return (p.terminationStatus, out, errData)
}

/// python3 from PATH.
public func python3() -> String {
    for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin").split(separator: ":") {
        let p = "\(dir)/python3"
        if FileManager.default.isExecutableFile(atPath: p) { return p }
    }
    return "/usr/bin/python3"
}

/// The `kiana` binary under test: `$KIANA_BIN`, else the debug build beside the package.
public func kianaBinary() -> String {
    if let b = ProcessInfo.processInfo.environment["KIANA_BIN"], !b.isEmpty { return b }
    return Shared.packageRoot.appendingPathComponent(".build/debug/kiana").path
}

/// A fresh temporary directory, removed by `cleanup`.
public struct TempDir: Sendable {
    public let url: URL
    public init(_ name: String = "kiana-test") throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("\(name)-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }
    public var path: String { url.path }
    public func cleanup() { try? FileManager.default.removeItem(at: url) }
}

/// Runs `kiana` with arguments; returns status and output as text.
@discardableResult
public func kiana(_ args: [String], input: Data? = nil) throws -> (status: Int32, out: String, err: String) {
    let r = try runProcess(kianaBinary(), args, input: input)
    return (r.status, String(decoding: r.out, as: UTF8.self), String(decoding: r.err, as: UTF8.self))
}
