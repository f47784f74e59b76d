import Foundation
import KianaTestSupport
import Testing

/// deploy/kiana.service checked by systemd's own tools, `kiana service install` run into a
/// scratch tree, and `kiana serve` telling a real NOTIFY_SOCKET that it is ready.
@Suite struct ServiceTests {
    static let systemdAnalyze = "/usr/bin/systemd-analyze"

    /// The unit as `kiana service unit` prints it for `binary`.
    static func unit(binary: String) async throws -> String {
        let r = try await kiana(["service", "unit", "--binary", binary])
        #expect(r.status == 0, "\(r.err)")
        return r.out
    }

    @Test func theShippedUnitIsWhatTheBinaryWrites() async throws {
        let shipped = try String(contentsOf: Shared.packageRoot.appendingPathComponent("deploy/kiana.service"), encoding: .utf8)
        #expect(try await Self.unit(binary: "/usr/local/bin/kiana") == shipped, "deploy/kiana.service differs from `kiana service unit`")
    }

    @Test func systemdVerifiesTheUnitAndRatesItsExposure() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: Self.systemdAnalyze), "systemd-analyze is missing (make setup installs systemd)")
        let dir = try TempDir()
        defer { dir.cleanup() }
        let good = dir.path + "/kiana.service"
        try Data(try await Self.unit(binary: kianaBinary()).utf8).write(to: URL(fileURLWithPath: good))
        let verify = try await runProcess(Self.systemdAnalyze, ["verify", good])
        let complaints = String(decoding: verify.err + verify.out, as: UTF8.self)
        #expect(verify.status == 0 && complaints.isEmpty, "systemd-analyze verify: \(complaints)")

        // The check can fail: a misspelt key and a missing binary are reported.
        let typo = dir.path + "/typo.service"
        try Data(try await Self.unit(binary: kianaBinary()).replacingOccurrences(of: "Type=notify", with: "Typ=notify").utf8)
            .write(to: URL(fileURLWithPath: typo))
        let t = try await runProcess(Self.systemdAnalyze, ["verify", typo])
        #expect(String(decoding: t.err, as: UTF8.self).contains("Unknown key 'Typ'"))
        let missing = dir.path + "/missing.service"
        try Data(try await Self.unit(binary: dir.path + "/no-such-kiana").utf8).write(to: URL(fileURLWithPath: missing))
        #expect(try await runProcess(Self.systemdAnalyze, ["verify", missing]).status != 0)

        // Exposure: 0 (locked down) … 10 (unprotected); recorded in docs/operations.md.
        let security = try await runProcess(Self.systemdAnalyze, ["security", "--offline=yes", good])
        let text = String(decoding: security.out + security.err, as: UTF8.self)
        let score = try #require(
            text.range(of: #"Overall exposure level for kiana\.service: ([0-9.]+)"#, options: .regularExpression).flatMap {
                Double(text[$0].split(separator: " ").last ?? "")
            }, "no exposure level in: \(text)")
        #expect(score <= 2.0, "exposure \(score): \(text)")
    }

    @Test func installCopiesTheBinaryAndModelsAndWritesTheUnitOnce() async throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        let data = dir.path + "/data"
        let models = dir.path + "/models-src"
        try FileManager.default.createDirectory(atPath: models + "/sub", withIntermediateDirectories: true)
        try Data("weights".utf8).write(to: URL(fileURLWithPath: models + "/sub/model.bin"))
        let unit = dir.path + "/etc/kiana.service"
        let binary = dir.path + "/bin/kiana"
        let target = dir.path + "/share/models"
        let args = [
            "service", "install", "--unit", unit, "--binary", binary, "--models-target", target, "--model-dir", models, "--data-dir", data,
        ]
        let r = try await kiana(args)
        #expect(r.status == 0, "\(r.err)")
        #expect(FileManager.default.isExecutableFile(atPath: binary))
        #expect(FileManager.default.contentsEqual(atPath: binary, andPath: kianaBinary()))
        #expect(FileManager.default.contents(atPath: target + "/sub/model.bin") == Data("weights".utf8))
        let written = try String(contentsOfFile: unit, encoding: .utf8)
        #expect(written.contains("ExecStart=\(binary) serve --data-dir /var/lib/kiana"))
        #expect(written.contains("Environment=KIANA_MODEL_DIR=\(target)"))
        // The installed binary runs.
        #expect(try await runProcess(binary, ["service", "unit"]).status == 0)
        // An existing unit is not replaced without --force.
        let again = try await kiana(args)
        #expect(again.status != 0 && again.err.contains("--force"), "\(again.err)")
        #expect(try await kiana(args + ["--force"]).status == 0)
        // Paths systemd would read otherwise are refused before anything is copied.
        for bad in ["relative/kiana", dir.path + "/bin dir/kiana", dir.path + "/100%done/kiana"] {
            let r = try await kiana(["service", "install", "--unit", dir.path + "/u2.service", "--binary", bad, "--models-target", target, "--data-dir", data])
            #expect(r.status != 0 && r.err.contains("--binary"), "\(bad): \(r.err)")
            #expect(!FileManager.default.fileExists(atPath: dir.path + "/u2.service"))
        }
        // A unit that cannot be written (its directory is a file) is found before the binary is
        // copied: nothing is replaced or left behind.
        let file = dir.path + "/not-a-dir"
        try Data("x".utf8).write(to: URL(fileURLWithPath: file))
        let fresh = dir.path + "/bin2/kiana"
        let blocked = try await kiana([
            "service", "install", "--unit", file + "/kiana.service", "--binary", fresh, "--models-target", dir.path + "/share2", "--model-dir", models,
            "--data-dir", data,
        ])
        #expect(blocked.status == 1 && blocked.err.contains("--unit") && blocked.err.contains("is not a directory"), "\(blocked.err)")
        #expect(!FileManager.default.fileExists(atPath: fresh) && !FileManager.default.fileExists(atPath: dir.path + "/share2"))
    }

    @Test func serveTellsSystemdWhenItIsReady() async throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        let socket = dir.path + "/notify.sock"
        // A NOTIFY_SOCKET like systemd's: a datagram socket; prints the first message it gets.
        let listener = try ChildProcess(
            python3(),
            [
                "-c",
                """
                import socket, sys
                s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                s.bind(sys.argv[1]); print("bound", flush=True)
                s.settimeout(60)
                print(repr(s.recv(4096).decode()), flush=True)
                """,
                socket,
            ])
        #expect(await listener.nextLine(timeout: 20) == "bound")
        let node = try ChildProcess(
            kianaBinary(), ["serve", "--data-dir", dir.path + "/d", "--port", "0", "--p2p-port", "0", "--discovery", "off"],
            environment: ["NOTIFY_SOCKET": socket])
        defer { node.signal(SIGINT) }
        let message = try #require(await listener.nextLine(timeout: 60), "no notification")
        #expect(message.contains("READY=1"), "\(message)")
        let port = try #require(
            message.range(of: #"serving http://127\.0\.0\.1:(\d+)"#, options: .regularExpression).flatMap {
                Int(message[$0].split(separator: ":").last ?? "")
            }, "\(message)")
        // Ready means serving.
        let health = try await runProcess("/usr/bin/curl", ["-s", "-m", "10", "http://127.0.0.1:\(port)/health"])
        #expect(String(decoding: health.out, as: UTF8.self).contains("\"status\":\"ok\""))
        node.signal(SIGINT)
        #expect(await node.wait(timeout: 30) == 0)
    }
}
