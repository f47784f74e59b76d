import Foundation
import Logging
import Synchronization

/// How log lines are written: logfmt (`key=value` pairs, the default) or one JSON object per line.
public enum LogFormat: String, Sendable, CaseIterable {
    case logfmt
    case json
}

/// A swift-log handler that writes one structured line per message to standard error: time
/// (UTC, milliseconds), level, the module that logged, the message and its metadata. Lines are
/// written whole with one `write(2)` each, so lines from concurrent tasks never interleave.
/// Messages are constant strings with the details in metadata (docs/contributing.md), so a
/// line is parsed by any logfmt or JSON reader. Decision 98.
public struct StructuredLogHandler: LogHandler {
    public var logLevel: Logger.Level
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    let label: String
    let format: LogFormat
    let sink: LogSink

    public init(label: String, format: LogFormat, level: Logger.Level, sink: LogSink) {
        self.label = label
        self.format = format
        self.logLevel = level
        self.sink = sink
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var all = metadata
        if let provided = metadataProvider?.get() { all.merge(provided) { _, new in new } }
        if let extra = event.metadata { all.merge(extra) { _, new in new } }
        sink.write(Self.line(format: format, time: Date(), level: event.level, source: event.source, message: "\(event.message)", metadata: all))
    }

    /// One line (with its newline) in `format`. Keys are sorted, so equal events give equal lines.
    public static func line(format: LogFormat, time: Date, level: Logger.Level, source: String, message: String, metadata: Logger.Metadata) -> String {
        let stamp = timestamp(time)
        let fields = metadata.sorted { $0.key < $1.key }.map { ($0.key, Self.flatten($0.value)) }
        switch format {
        case .logfmt:
            var out = "time=\(stamp) level=\(level.rawValue) source=\(logfmtValue(source)) msg=\(logfmtValue(message))"
            for (k, v) in fields { out += " \(logfmtKey(k))=\(logfmtValue(v))" }
            return out + "\n"
        case .json:
            var out = "{\"time\":\(jsonString(stamp)),\"level\":\(jsonString(level.rawValue)),\"source\":\(jsonString(source)),\"msg\":\(jsonString(message))"
            for (k, v) in fields where !["time", "level", "source", "msg"].contains(k) { out += ",\(jsonString(k)):\(jsonString(v))" }
            return out + "}\n"
        }
    }

    /// `2026-12-05T06:29:50.123Z`: UTC, milliseconds.
    static func timestamp(_ date: Date) -> String {
        let t = date.timeIntervalSince1970
        var secs = time_t(t.rounded(.down))
        let ms = Int((t - Double(secs)) * 1000)
        var tm = tm()
        gmtime_r(&secs, &tm)
        return String(
            format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", Int(tm.tm_year) + 1900, Int(tm.tm_mon) + 1, Int(tm.tm_mday), Int(tm.tm_hour), Int(tm.tm_min),
            Int(tm.tm_sec), min(ms, 999))
    }

    static func flatten(_ v: Logger.Metadata.Value) -> String {
        switch v {
        case .string(let s): return s
        case .stringConvertible(let c): return c.description
        case .array(let a): return "[" + a.map(flatten).joined(separator: ",") + "]"
        case .dictionary(let d): return "{" + d.sorted { $0.key < $1.key }.map { "\($0.key)=\(flatten($0.value))" }.joined(separator: ",") + "}"
        }
    }

    /// A logfmt key: characters other than letters, digits and `._-/` become `_`.
    static func logfmtKey(_ k: String) -> String {
        let cleaned = String(k.unicodeScalars.map { s -> Character in
            (s.properties.isAlphabetic && s.isASCII) || ("0"..."9").contains(s) || "._-/".unicodeScalars.contains(s) ? Character(s) : "_"
        })
        return cleaned.isEmpty ? "_" : cleaned
    }

    /// A logfmt value: bare when it holds no space, quote, `=` or control character; otherwise
    /// quoted with `\"`, `\\`, `\n`, `\r`, `\t` and `\u{…}` escapes (a value never breaks the line).
    static func logfmtValue(_ v: String) -> String {
        let needsQuotes = v.isEmpty || v.unicodeScalars.contains { $0 == " " || $0 == "\"" || $0 == "=" || $0 == "\\" || $0.value < 0x20 || $0.value == 0x7f }
        guard needsQuotes else { return v }
        return "\"" + escaped(v) + "\""
    }

    static func jsonString(_ v: String) -> String { "\"" + escaped(v) + "\"" }

    static func escaped(_ v: String) -> String {
        var out = ""
        out.reserveCapacity(v.utf8.count + 2)
        for s in v.unicodeScalars {
            switch s {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if s.value < 0x20 || s.value == 0x7f || s.value == 0x2028 || s.value == 0x2029 {
                    out += String(format: "\\u%04x", s.value)
                } else {
                    out.unicodeScalars.append(s)
                }
            }
        }
        return out
    }
}

/// Where log lines go: a file descriptor (standard error), written by one thread of its own.
/// Logging never waits for the reader: lines queue (at most `capacity` bytes) and, when the
/// reader stops reading (a full pipe, a stalled journal), further lines are dropped and counted,
/// and a line saying how many follows once it reads again. A node whose log is not read keeps
/// answering and stops on SIGTERM. Each line is written whole, in order.
public final class LogSink: @unchecked Sendable {
    let fd: Int32
    let capacity: Int
    /// The line reporting `n` dropped lines, in the handler's format.
    let droppedLine: @Sendable (Int) -> String
    private let cond = NSCondition()
    private var queue: [UInt8] = []
    private var dropped = 0
    private var writing = false
    private var started = false

    public init(fd: Int32, capacity: Int = 1 << 20, droppedLine: @escaping @Sendable (Int) -> String = { "\($0) log lines dropped\n" }) {
        self.fd = fd
        self.capacity = capacity
        self.droppedLine = droppedLine
    }

    func write(_ line: String) {
        cond.lock()
        defer { cond.unlock() }
        if !started {
            started = true
            let t = Thread { [self] in run() }
            t.name = "kiana-log"
            t.start()
        }
        guard queue.count + line.utf8.count <= capacity else {
            dropped += 1
            return
        }
        queue.append(contentsOf: line.utf8)
        cond.signal()
    }

    private func run() {
        while true {
            cond.lock()
            while queue.isEmpty && dropped == 0 { cond.wait() }
            var batch = queue
            queue.removeAll(keepingCapacity: true)
            let lost = dropped
            dropped = 0
            writing = true
            cond.unlock()
            if lost > 0 { batch.append(contentsOf: droppedLine(lost).utf8) }
            writeAll(batch)
            cond.lock()
            writing = false
            cond.broadcast()
            cond.unlock()
        }
    }

    private func writeAll(_ bytes: [UInt8]) {
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { buf in Foundation.write(fd, buf.baseAddress! + offset, buf.count - offset) }
            if n < 0 && errno == EINTR { continue }
            if n < 0 && errno == EAGAIN {
                usleep(10_000)
                continue
            }
            if n <= 0 { return }
            offset += n
        }
    }

    /// Waits until every queued line is written, at most `timeout` seconds (a reader that
    /// stopped reading does not hold up the exit).
    public func flush(timeout: Double = 2) {
        let deadline = Date().addingTimeInterval(timeout)
        cond.lock()
        defer { cond.unlock() }
        while started && (!queue.isEmpty || dropped > 0 || writing) {
            if !cond.wait(until: deadline) { return }
        }
    }
}

extension StructuredLogHandler {
    private static let installed = Mutex(false)

    /// Makes every logger this process creates from now on (the node's and the libraries')
    /// structured, at `level`. The first call wins: swift-log allows one bootstrap a process.
    public static func install(format: LogFormat, level: Logger.Level) {
        let first = installed.withLock { done in
            defer { done = true }
            return !done
        }
        guard first else { return }
        let sink = LogSink(fd: 2) { n in
            StructuredLogHandler.line(
                format: format, time: Date(), level: .warning, source: "KianaNode", message: "log lines dropped: the log reader fell behind",
                metadata: ["dropped": .stringConvertible(n)])
        }
        installedSink.withLock { $0 = sink }
        LoggingSystem.bootstrap { label in StructuredLogHandler(label: label, format: format, level: level, sink: sink) }
    }

    private static let installedSink = Mutex<LogSink?>(nil)

    /// Writes out what is queued (at most `timeout` seconds); call before the process exits.
    public static func flush(timeout: Double = 2) {
        installedSink.withLock { $0 }?.flush(timeout: timeout)
    }
}
