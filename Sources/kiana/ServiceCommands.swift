import ArgumentParser
import Foundation
import KianaNode
#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

#if canImport(Glibc)
    import Glibc
#endif

/// The systemd unit (deploy/kiana.service is this text for the default paths) and sd_notify.
enum SystemdUnit {
    static let defaultBinary = "/usr/local/bin/kiana"
    static let defaultDataDirectory = "/var/lib/kiana"
    static let defaultModelDirectory = "/usr/local/share/kiana/models"

    /// The unit for `binary`, the state directory `/var/lib/<state>` and models read from `models`.
    static func text(binary: String = defaultBinary, state: String = "kiana", models: String = defaultModelDirectory) -> String {
        """
        # KI_ana node as a systemd service (written by `kiana service install`; docs/operations.md).
        # Change settings with `systemctl edit kiana` (e.g. Environment=KIANA_HOST=0.0.0.0 to serve
        # the LAN: clients then need the token `kiana token --data-dir /var/lib/\(state)` prints),
        # or in /var/lib/\(state)/config.json (docs/configuration.md).
        [Unit]
        Description=KI_ana node (private, local-first assistant)
        Wants=network-online.target
        After=network-online.target

        [Service]
        # READY=1 is sent once HTTP and the device-link listener listen.
        Type=notify
        NotifyAccess=main
        ExecStart=\(binary) serve --data-dir /var/lib/\(state)
        Environment=KIANA_MODEL_DIR=\(models)
        # Ready (for systemd and health checks) once the models are loaded.
        Environment=KIANA_MODELS_PRELOAD=on
        Restart=on-failure
        RestartSec=2s
        # The start-up check verifies the whole ledger: allow for a long one.
        TimeoutStartSec=600
        TimeoutStopSec=30
        # A user of its own, made by systemd; the data directory is /var/lib/\(state), private to it.
        DynamicUser=yes
        StateDirectory=\(state)
        StateDirectoryMode=0700
        UMask=0077
        # Hardening: nothing to gain, nothing to reach beyond the state directory.
        NoNewPrivileges=yes
        CapabilityBoundingSet=
        AmbientCapabilities=
        ProtectSystem=strict
        ProtectHome=yes
        PrivateTmp=yes
        PrivateDevices=yes
        PrivateUsers=yes
        PrivateMounts=yes
        DevicePolicy=closed
        ProtectKernelTunables=yes
        ProtectKernelModules=yes
        ProtectKernelLogs=yes
        ProtectControlGroups=yes
        ProtectClock=yes
        ProtectHostname=yes
        ProtectProc=invisible
        RestrictNamespaces=yes
        RestrictRealtime=yes
        RestrictSUIDSGID=yes
        LockPersonality=yes
        RemoveIPC=yes
        SystemCallArchitectures=native
        SystemCallFilter=@system-service
        SystemCallFilter=~@privileged @resources
        SystemCallErrorNumber=EPERM
        # AF_NETLINK: multicast DNS discovery lists the network interfaces.
        RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK

        [Install]
        WantedBy=multi-user.target

        """
    }

    /// Refuses a path systemd would read otherwise than meant: relative, or with blanks, `%`
    /// (specifiers), quotes, backslashes or control characters.
    static func checkPath(_ path: String, flag: String) throws {
        guard path.hasPrefix("/") else { throw KianaNodeError(.invalidInput, "\(flag) must be an absolute path, not \(path)") }
        let bad = path.unicodeScalars.first { $0.properties.isWhitespace || $0.value < 0x20 || $0.value == 0x7F || "%\"'\\$;".unicodeScalars.contains($0) }
        if let bad {
            throw KianaNodeError(.invalidInput, "\(flag) may not contain \"\(bad.escaped(asASCII: true))\" (systemd would read it otherwise): choose another path")
        }
    }

    /// Tells systemd (the NOTIFY_SOCKET datagram socket) `state`, e.g. "READY=1"; false when not
    /// run by systemd or the message could not be sent.
    @discardableResult
    static func notify(_ state: String, environment: [String: String] = ProcessInfo.processInfo.environment) -> Bool {
        guard let path = environment["NOTIFY_SOCKET"], !path.isEmpty else { return false }
        var bytes = Array(path.utf8)
        var addr = sockaddr_un()
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path), bytes.first == UInt8(ascii: "/") || bytes.first == UInt8(ascii: "@") else {
            return false
        }
        if bytes[0] == UInt8(ascii: "@") { bytes[0] = 0 }  // abstract namespace
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
        }
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count)
        let message = Array(state.utf8)
        let sent = withUnsafePointer(to: &addr) { a in
            a.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                message.withUnsafeBytes { sendto(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL), sa, length) }
            }
        }
        return sent == message.count
    }
}

struct ServiceCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "service", abstract: "Run KI_ana as a systemd service.", subcommands: [ServiceInstall.self, ServiceUnit.self])
}

struct ServiceUnit: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "unit", abstract: "Print the systemd unit `service install` writes.")
    @Option(help: "The kiana binary the unit runs.") var binary: String = SystemdUnit.defaultBinary
    @Option(help: "Directory the service reads the models from.") var modelDir: String = SystemdUnit.defaultModelDirectory

    func run() throws {
        try perform {
            try SystemdUnit.checkPath(binary, flag: "--binary")
            try SystemdUnit.checkPath(modelDir, flag: "--model-dir")
            Output.write(1, SystemdUnit.text(binary: binary, models: modelDir))
        }
    }
}

struct ServiceInstall: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "install",
        abstract: "Copy this binary and the models into place and write /etc/systemd/system/kiana.service (then: systemctl enable --now kiana).")
    @Option(help: "Where the unit is written.") var unit: String = "/etc/systemd/system/kiana.service"
    @Option(help: "Where this binary is copied for the service.") var binary: String = SystemdUnit.defaultBinary
    @Option(help: "Where the models are copied for the service (readable by it; /usr stays read-only to it).")
    var modelsTarget: String = SystemdUnit.defaultModelDirectory
    @OptionGroup var models: ModelOptions
    @OptionGroup var data: DataOptions
    @Flag(help: "Replace an existing unit file.") var force = false

    func run() throws {
        try perform {
            let fm = FileManager.default
            for (flag, path) in [("--unit", unit), ("--binary", binary), ("--models-target", modelsTarget)] { try SystemdUnit.checkPath(path, flag: flag) }
            if fm.fileExists(atPath: unit), !force {
                throw KianaNodeError(.conflict, "\(unit) exists; --force replaces it")
            }
            // The binary: this executable, unless it already is the target.
            let me = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().path
            let selfPath = (try? fm.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? me
            let copyBinary = URL(fileURLWithPath: binary).resolvingSymlinksInPath().path != selfPath
            // The models: every file of the resolved model directory, when there are any.
            let source = try models.directory(data)
            let resolved = URL(fileURLWithPath: source).resolvingSymlinksInPath().path
            let modelNames = (try? fm.contentsOfDirectory(atPath: resolved)) ?? []
            let copyModels = !modelNames.isEmpty && resolved != URL(fileURLWithPath: modelsTarget).resolvingSymlinksInPath().path
            // Every place that will be written is checked before anything is copied, so a unit
            // that cannot be written does not leave a replaced binary or half the models behind.
            var places = [("--unit", unit)]
            if copyBinary { places.append(("--binary", binary)) }
            if copyModels { places.append(("--models-target", modelsTarget)) }
            for (flag, path) in places { try Self.checkWritable(path, flag: flag) }
            if copyBinary {
                try Self.copy(selfPath, to: binary, mode: 0o755)
                say("copied \(selfPath) to \(binary)")
            }
            if copyModels {
                let copied = try Self.copyTree(resolved, to: modelsTarget)
                guard copied > 0 else { throw KianaNodeError(.notFound, "no model files found in \(source)") }
                say("copied \(copied) model files from \(source) to \(modelsTarget)")
            } else if !fm.fileExists(atPath: modelsTarget) {
                Output.note("kiana: no models found in \(source): the service answers by keyword only until models are in \(modelsTarget) (make setup fetches them)")
            }
            try Self.write(Data(SystemdUnit.text(binary: binary, models: modelsTarget).utf8), to: unit, mode: 0o644)
            say("wrote \(unit); start it with: systemctl daemon-reload && systemctl enable --now kiana")
            if data.dataDir != nil {
                // The service's data is its StateDirectory; --data-dir only named where models are read.
                Output.note(
                    "kiana: the service keeps its data in \(SystemdUnit.defaultDataDirectory) (its StateDirectory), not in \(data.dataDir ?? ""): "
                        + "--data-dir only said where to read the models from")
            }
        }
    }

    /// Throws unless `path` could be created: its nearest existing ancestor is a directory this
    /// process may write to (as root, one on a writable file system).
    static func checkWritable(_ path: String, flag: String) throws {
        var isDir: ObjCBool = false
        // A folder that exists (the models' target) is written into; a file is written beside.
        var dir = FileManager.default.fileExists(atPath: path, isDirectory: &isDir) && isDir.boolValue ? path : (path as NSString).deletingLastPathComponent
        while !FileManager.default.fileExists(atPath: dir, isDirectory: &isDir) {
            let up = (dir as NSString).deletingLastPathComponent
            if up == dir || up.isEmpty { break }
            dir = up
        }
        guard isDir.boolValue else { throw KianaNodeError(.invalidInput, "\(flag) \(path): \(dir) is not a directory") }
        guard access(dir, W_OK) == 0 else {
            throw KianaNodeError(
                .io, "\(flag) \(path): cannot write in \(dir): \(String(cString: strerror(errno))) (run as root, or choose paths with --unit/--binary/--models-target)")
        }
    }

    static func write(_ data: Data, to path: String, mode: Int) throws {
        let dir = (path as NSString).deletingLastPathComponent
        do {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
            let tmp = path + ".tmp-\(getpid())"
            try data.write(to: URL(fileURLWithPath: tmp))
            try FileManager.default.setAttributes([.posixPermissions: mode], ofItemAtPath: tmp)
            guard rename(tmp, path) == 0 else { throw KianaNodeError(.io, "cannot move \(tmp) to \(path): \(String(cString: strerror(errno)))") }
        } catch let e as KianaNodeError {
            throw e
        } catch {
            throw KianaNodeError(.io, "cannot write \(path): \(error.localizedDescription) (run as root, or choose paths with --unit/--binary/--models-target)")
        }
    }

    /// Copies `source` to `path` in pieces (model files are gigabytes), then renames it into place.
    static func copy(_ source: String, to path: String, mode: Int) throws {
        guard let input = FileHandle(forReadingAtPath: source) else { throw KianaNodeError(.io, "cannot read \(source)") }
        defer { try? input.close() }
        let dir = (path as NSString).deletingLastPathComponent
        let tmp = path + ".tmp-\(getpid())"
        do {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
            guard FileManager.default.createFile(atPath: tmp, contents: nil, attributes: [.posixPermissions: mode]),
                let out = FileHandle(forWritingAtPath: tmp)
            else { throw KianaNodeError(.io, "cannot create \(tmp)") }
            defer { try? out.close() }
            while let piece = try input.read(upToCount: 1 << 20), !piece.isEmpty { try out.write(contentsOf: piece) }
            try out.synchronize()
            guard rename(tmp, path) == 0 else { throw KianaNodeError(.io, "cannot move \(tmp) to \(path): \(String(cString: strerror(errno)))") }
        } catch let e as KianaNodeError {
            unlink(tmp)
            throw e
        } catch {
            unlink(tmp)
            throw KianaNodeError(.io, "cannot copy \(source) to \(path): \(error.localizedDescription)")
        }
    }

    /// Copies every file below `source` (following symbolic links) to `target`; returns how many.
    static func copyTree(_ source: String, to target: String, depth: Int = 0) throws -> Int {
        let fm = FileManager.default
        guard depth < 8 else { return 0 }
        var count = 0
        for name in try fm.contentsOfDirectory(atPath: source).sorted() where !name.hasPrefix(".") {
            var isDir: ObjCBool = false
            let from = source + "/" + name
            guard fm.fileExists(atPath: from, isDirectory: &isDir) else { continue }
            if isDir.boolValue {
                count += try copyTree(from, to: target + "/" + name, depth: depth + 1)
            } else {
                try copy(from, to: target + "/" + name, mode: 0o644)
                count += 1
            }
        }
        return count
    }
}

/// A health probe for containers and supervisors without curl: asks the node of this data
/// directory whether it is ready; exit 0 when it is.
struct Ready: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Exit 0 if the node of this data directory answers /ready (for HEALTHCHECK and scripts), 1 otherwise.",
        discussion: """
            A running node is found through node.json in the data directory (whatever --port and --token it was
            started with) and asked with the data directory's control token. Without node.json, GET /ready is
            sent to the address and API token the settings give (config.json, KIANA_*).
            """)
    @OptionGroup var data: DataOptions
    @Option(help: "Seconds to wait for the answer.") var timeout: Double = 5

    func run() async throws {
        try await performAsync {
            guard timeout > 0, timeout <= 600 else { throw KianaNodeError(.invalidInput, "--timeout must be between 0 and 600 seconds") }
            let directory = try data.directory
            let found: NodeControl?
            do throws(KianaNodeError) {
                found = try NodeControl.connect(directory)
            } catch {
                // A node recorded here that is gone (stale node.json) or still starting is said
                // as such, not probed for at the settings' address (another node may be there).
                if error.code == .busy || directory.hasRuntimeRecord { throw error }
                found = nil
            }
            if let control = found {
                let r = try control.readiness(timeout: timeout)
                guard r.ready else {
                    throw KianaNodeError(
                        .notRunning,
                        "the node at \(r.address) is not ready yet (\(r.store ? "store open" : "store not open"), \(r.model ? "models loaded" : "models not loaded: they load on first use, or at start with models.preload on"))")
                }
                say("ready")
                return
            }
            // No running node recorded here (or its files are not readable to this user): the
            // address and token `kiana serve` would use with these settings.
            let http = try ServeSettings.resolve(.init(), directory: directory).http
            // A wildcard listener is reached on loopback (as node.json names it).
            let host = NodeServer.localHost(http.host)
            let url = "http://\(host.contains(":") ? "[\(host)]" : host):\(http.port)/ready"
            let status = try NodeControl.readyStatus(host: host, port: http.port, token: http.token, timeout: timeout)
            if status == 401 {
                throw KianaNodeError(
                    .unauthorized,
                    "the node at \(url) wants an API token: set the one it was started with as http.token in config.json or KIANA_TOKEN")
            }
            guard status == 200 else { throw KianaNodeError(.notRunning, "the node at \(url) is not ready (HTTP \(status))") }
            say("ready")
        }
    }
}
