import ArgumentParser
import Foundation
import KianaCore
import KianaNode
import Logging
import Synchronization

func commandLogger() -> Logger {
    let env = ProcessInfo.processInfo.environment
    let level = env["KIANA_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .warning
    StructuredLogHandler.install(format: env["KIANA_LOG_FORMAT"].flatMap(LogFormat.init(rawValue:)) ?? .logfmt, level: level)
    var logger = Logger(label: "kiana")
    logger.logLevel = level
    return logger
}

struct Peers: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List discovered, connected and member devices (asks the running node).",
        subcommands: [PeersList.self, PeersAdd.self, PeersRemove.self], defaultSubcommand: PeersList.self)
}

struct PeersList: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List peers with address, RTT and state.")
    @OptionGroup var data: DataOptions
    @OptionGroup var output: OutputOptions

    func run() throws {
        try perform {
            try output.emit(try NodeControl.connect(data.directory).peers()) { peers in
                if peers.isEmpty {
                    say("No peers yet. Devices on this network appear by themselves; add one with `kiana peers add HOST:PORT`.")
                    return
                }
                say(peerTable(peers))
            }
        }
    }
}

func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s + " " : s + String(repeating: " ", count: n - s.count) }

/// Bytes as people read them.
func bytesText(_ n: Int?) -> String {
    guard let n else { return "-" }
    if n < 10_000 { return "\(n) B" }
    if n < 10_000_000 { return "\(n / 1000) kB" }
    return "\(n / 1_000_000) MB"
}

/// When, as "12 s ago".
func agoText(_ iso: String?) -> String {
    guard let iso, let d = try? Date(iso, strategy: .iso8601) else { return "-" }
    let s = max(0, Int(Date().timeIntervalSince(d)))
    return s < 120 ? "\(s) s ago" : s < 7200 ? "\(s / 60) min ago" : "\(s / 3600) h ago"
}

/// `kiana peers` and `kiana sync status`: one line per peer, then refusals and errors.
func peerTable(_ peers: [NodeControl.Peer]) -> String {
    var lines = [
        pad("DEVICE", 22) + pad("STATE", 11) + pad("MEMBER", 7) + pad("ADDRESS", 22) + pad("RTT", 9) + pad("HEIGHT", 8) + pad("SYNC", 9)
            + pad("LAST SYNC", 11) + pad("IN/OUT", 15) + "SOURCE"
    ]
    var notes: [String] = []
    for p in peers {
        let rtt = p.rttMillis.map { String(format: "%.1f ms", $0) } ?? "-"
        let io = p.bytesIn == nil ? "-" : bytesText(p.bytesIn) + "/" + bytesText(p.bytesOut)
        var line = pad(p.device ?? "?", 22) + pad(p.state, 11) + pad(p.member ? "yes" : "no", 7)
        line += pad(p.address ?? "-", 22) + pad(rtt, 9)
        line += pad(p.height.map(String.init) ?? "-", 8) + pad(p.sync ?? "-", 9)
        line += pad(agoText(p.lastSync), 11) + pad(io, 15) + p.source
        if let name = p.name { line += " (\(name))" }
        lines.append(line)
        let who = p.device.map { String($0.prefix(13)) } ?? p.address ?? "?"
        if let r = p.refusedHere { notes.append("  \(who): its blocks were refused here (cut off for a while): \(r)") }
        if let r = p.refusedThere { notes.append("  \(who): it refused our blocks: \(r)") }
        if let e = p.syncError { notes.append("  \(who): last sync failed: \(e)") }
        if let e = p.dialError { notes.append("  \(who): cannot link: \(e)") }
    }
    return (lines + notes).joined(separator: "\n")
}

struct SyncCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sync", abstract: "Ledger sync with the other devices (asks the running node).", subcommands: [SyncStatusCommand.self],
        defaultSubcommand: SyncStatusCommand.self)
}

struct SyncStatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status", abstract: "This device's head and history tree, sync counters, and where each member stands.")
    @OptionGroup var data: DataOptions
    @OptionGroup var output: OutputOptions

    func run() throws {
        try perform {
            try output.emit(try NodeControl.connect(data.directory).syncStatus()) { s in
                say("Head:        \(s.height) \(s.head.prefix(16))…")
                say("Tree:        \(s.treeSize) blocks, root \(s.treeRoot.prefix(16))…")
                let st = s.stats
                let ratio = st.compressedBytesIn > 0 ? String(format: " (%.2f× compressed)", Double(st.rawBytesIn) / Double(st.compressedBytesIn)) : ""
                say("Blocks:      \(st.blocksIn) in, \(st.blocksOut) out since start\(ratio); \(st.pulls) pulls, \(st.reorgs) reorgs")
                let errors = st.errors.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }
                say("Errors:      " + (errors.isEmpty ? "none" : errors.joined(separator: ", ")))
                if s.peers.isEmpty {
                    say("No other members yet. Pair a device with `kiana pair`.")
                } else {
                    say("")
                    say(peerTable(s.peers))
                }
            }
        }
    }
}

struct PeersAdd: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "add", abstract: "Add a peer by address where multicast discovery does not reach.")
    @OptionGroup var data: DataOptions
    @Argument(help: "HOST:PORT of the other device's link listener.") var address: String

    func run() throws {
        try perform {
            try Discovery.checkPeerAddress(address)  // before opening: a bad address is the error even for a bad directory
            let node = try Node.open(directory: data.directory)
            let added = try node.addPeer(address: address)
            let serving = (try? NodeControl.connect(node.directory)) != nil
            say(
                !added
                    ? "\(address) was already known."
                    : serving ? "Added \(address); the node dials it within seconds." : "Added \(address); the node dials it once it runs (`kiana serve`).")
        }
    }
}

struct PeersRemove: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "remove", abstract: "Forget a peer address added with `peers add` (the node stops dialling it).")
    @OptionGroup var data: DataOptions
    @Argument(help: "HOST:PORT as it was added.") var address: String

    func run() throws {
        try perform {
            // Any stored address can be removed, also one an older version let in.
            guard !address.isEmpty else { throw KianaNodeError(.invalidInput, "give the address as `kiana peers` lists it") }
            let node = try Node.open(directory: data.directory)
            let removed = try node.removePeer(address: address)
            guard removed else { throw KianaNodeError(.notFound, "\(address) is not a known peer address (see `kiana peers`)") }
            say("Removed \(address); a link open now stays until it drops.")
        }
    }
}

struct Pair: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Let a new device join: opens a pairing window on the running node and confirms the code.",
        discussion: """
            Run `kiana join HOST:PORT` on the new device. It shows a six-digit code; type that code here.
            Only if it matches the code this device derived from the same encrypted handshake is an
            add-authority vote written. A wrong code, or none, leaves nothing behind.
            """)
    @OptionGroup var data: DataOptions
    @Option(help: "How long the window stays open, in seconds.") var timeout: Int = 120
    @Option(help: "The code the new device shows (skips the prompt, for scripts).") var code: String?

    func run() throws {
        try perform {
            guard (1...3600).contains(timeout) else { throw KianaNodeError(.invalidInput, "--timeout must be 1...3600 seconds") }
            let control = try NodeControl.connect(data.directory)
            let port = try control.openPairing(seconds: timeout)
            defer { control.closePairing() }
            say("Pairing window open for \(timeout) s. On the new device run:")
            let hosts = ["0.0.0.0", "::", ""].contains(control.p2pHost) ? Self.localAddresses() : [control.p2pHost]
            for a in hosts { say("  kiana join \(a.contains(":") ? "[\(a)]" : a):\(port ?? control.p2pPort)") }
            if let me = try? data.directory.loadIdentity() {
                say("  or, where multicast reaches: kiana join \(me.deviceID)")
            }
            let deadline = Date().addingTimeInterval(Double(timeout))
            while Date() < deadline {
                let (open, requests) = try control.pendingPairings()
                guard open else { break }
                guard let r = requests.first else {
                    usleep(200_000)
                    continue
                }
                say("Device \(r.device)\(r.name.map { " (\($0))" } ?? "") at \(r.address) asks to join.")
                let typed: String
                if let code {
                    typed = code
                } else {
                    // Bounded like the window (at least two minutes to type): an unattended
                    // prompt must not hold the joiner, or the window, for good.
                    Output.write(1, "Type the code the new device shows (Enter refuses): ")
                    switch Output.readLine(until: max(deadline, Date().addingTimeInterval(120))) {
                    case .line(let line): typed = line
                    case .endOfInput:
                        say("\nNo code was typed (end of input): the request was refused and nothing was written.")
                        throw ExitCode(1)
                    case .timedOut:
                        say("\nNo code was typed in time: the request was refused and nothing was written.")
                        throw ExitCode(1)
                    }
                }
                let c = try control.confirmPairing(device: r.device, code: typed)
                guard c.accepted else {
                    say(
                        typed.trimmingCharacters(in: .whitespaces).isEmpty
                            ? "Refused: no code was typed, and nothing was written."
                            : "The codes do not match: the request was refused and nothing was written.")
                    throw ExitCode(1)
                }
                if c.voted == false {
                    // A join run again: the vote was written before (or the device is in).
                    say(
                        c.member
                            ? "Codes match. \(c.device) is an authority already: no vote was needed; it receives the ledger now."
                            : "Codes match. This device voted to add \(c.device) before: no new vote (\(c.votesFor) vote(s); more than half of the \(c.authorities) authorities must agree); it receives the ledger now.")
                    if !c.member { say("On another authority run: kiana vote add \(c.key)") }
                } else if c.member {
                    say("Codes match. Voted to add \(c.device); the vote passed and it is now an authority (\(c.authorities) in all).")
                } else {
                    say("Codes match. Voted to add \(c.device) (\(c.votesFor) vote(s); more than half of the \(c.authorities) authorities must agree).")
                    say("On another authority run: kiana vote add \(c.key)")
                }
                return
            }
            say("The pairing window closed without a request.")
            throw ExitCode(1)
        }
    }

    /// Non-loopback IPv4 addresses to show in the join hint (loopback if there are none).
    static func localAddresses() -> [String] {
        var out: [String] = []
        var ifap: UnsafeMutablePointer<ifaddrs>?
        if getifaddrs(&ifap) == 0, let first = ifap {
            var p: UnsafeMutablePointer<ifaddrs>? = first
            while let cur = p {
                if let sa = cur.pointee.ifa_addr, sa.pointee.sa_family == sa_family_t(AF_INET) {
                    var host = [CChar](repeating: 0, count: Int(NI_MAXHOST))
                    if getnameinfo(sa, socklen_t(MemoryLayout<sockaddr_in>.size), &host, socklen_t(host.count), nil, 0, NI_NUMERICHOST) == 0 {
                        let s = String(decoding: host.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
                        if !s.hasPrefix("127.") { out.append(s) }
                    }
                }
                p = cur.pointee.ifa_next
            }
            freeifaddrs(first)
        }
        return out.isEmpty ? ["127.0.0.1"] : out
    }
}

struct Join: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Join an owner's network from a new device (the authority runs `kiana pair`).")
    @OptionGroup var data: DataOptions
    @Argument(
        help: ArgumentHelp(
            "The authority: HOST:PORT of its device link listener, or its device ID (or a prefix of it) found by multicast DNS; omitted: the only KI_ana device discovered.",
            valueName: "authority")) var target: String?
    @Option(help: "A name for this device: shown to the authority while pairing, and kept as device.name for peers.") var name: String?
    @Option(help: "Seconds to wait for the owner to confirm.") var timeout: Int = 300
    @Option(help: "Network interface for discovery (default: all multicast interfaces).") var interface: String?
    @Option(help: "Seconds to search the local network when no HOST:PORT is given.") var discoverTimeout: Double = 5

    func run() async throws {
        try await performAsync {
            guard (1...3600).contains(timeout) else { throw KianaNodeError(.invalidInput, "--timeout must be 1...3600 seconds") }
            guard discoverTimeout > 0, discoverTimeout <= 600 else { throw KianaNodeError(.invalidInput, "--discover-timeout must be 0...600 seconds") }
            if let name { try KianaConfig.checkDeviceName(name, origin: "--name") }
            let address: String
            if let target, Discovery.isPeerAddress(target) {
                address = target
            } else if let target, target.contains(":") || target.contains(".") || target.contains("[") {
                // Device IDs have neither: this was meant as an address, so say what is wrong
                // with it rather than search the network for a device of that name.
                try Discovery.checkPeerAddress(target)
                address = target
            } else {
                let d = try await Discovery.findDevice(target, interface: interface, seconds: discoverTimeout, logger: commandLogger()) {
                    say(target.map { "Looking for device \($0) on the local network…" } ?? "Looking for KI_ana devices on the local network…")
                }
                say("Found \(d.id)\(d.name.map { " (\($0))" } ?? "") at \(d.address).")
                address = d.address
            }
            let bar = ProgressBar()
            let (node, joined, nameKept) = try await Node.join(
                directory: data.directory, address: address, name: name,
                wait: .seconds(timeout), logger: commandLogger(),
                onCode: { code, authority in
                    say("Pairing code: \(code)")
                    say("Type this code on the authority \(authority) (in `kiana pair`) to confirm.")
                },
                progress: { received, expected in bar.update("ledger", received, expected ?? received, .items) })
            say("Joined network \(Hex.encode(joined.network.prefix(8)))… as device \(node.identity.deviceID) (\(joined.blockCount) blocks received).")
            if let name, !name.isEmpty {
                // The name the authority saw is the one peers see from now on.
                let directory = try data.directory
                if nameKept {
                    say("Its name \"\(name)\" is kept in \(directory.path)/config.json (device.name).")
                } else if (try? KianaConfig.resolve(environment: [:], directory: directory))?.text("device.name") != name {
                    say("To show it to peers as \"\(name)\", set device.name in \(directory.path)/config.json (or `kiana serve --name`).")
                }
            }
            if joined.member {
                say("This device is now an authority. Start it with `kiana serve`.")
            } else {
                say("The vote is not complete yet: more than half of the \(joined.authorities) authorities must vote to add this device.")
                say("Identity key for `kiana vote add`: \(Hex.encode(node.identity.publicKey))")
            }
        }
    }
}

struct Discover: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Browse the local network for KI_ana devices (multicast DNS, _kiana._tcp).")
    @Option(help: "Network interface to browse on (default: all multicast interfaces).") var interface: String?
    @Option(help: "Seconds to browse.") var timeout: Double = 3
    @Flag(help: "Print one JSON object per event, with the time since start in ms.") var json = false

    func run() async throws {
        try await performAsync {
            guard timeout > 0, timeout <= 3600 else { throw KianaNodeError(.invalidInput, "--timeout must be 0...3600 seconds") }
            let jsonOut = json
            let found = Mutex(0)
            try await Discovery.browse(interface: interface, seconds: timeout, logger: commandLogger()) { event in
                switch event {
                case .resolved(let s, let ms):
                    found.withLock { $0 += 1 }
                    if jsonOut {
                        let txt = s.txt.sorted { $0.key < $1.key }.map { "\"\(Self.esc($0.key))\":\"\(Self.esc($0.value))\"" }.joined(separator: ",")
                        let addrs = s.addresses.map { "\"\($0)\"" }.joined(separator: ",")
                        say(
                            "{\"event\":\"resolved\",\"instance\":\"\(Self.esc(s.instance))\",\"host\":\"\(Self.esc(s.host))\",\"port\":\(s.port),\"addresses\":[\(addrs)],\"txt\":{\(txt)},\"ms\":\(String(format: "%.1f", ms)),\"at\":\(Int64(Date().timeIntervalSince1970 * 1000))}"
                        )
                    } else {
                        say("\(s.instance)  \(s.addresses.joined(separator: ",")):\(s.port)  \(s.txt["id"] ?? "")  (\(String(format: "%.0f", ms)) ms)")
                    }
                case .removed(let instance, let ms):
                    say(jsonOut ? "{\"event\":\"removed\",\"instance\":\"\(Self.esc(instance))\",\"ms\":\(String(format: "%.1f", ms))}" : "\(instance) left")
                }
            }
            // Nothing found is said (on stderr: stdout stays the list), with the way on.
            if found.withLock({ $0 }) == 0 {
                Output.note(
                    "No KI_ana device answered in \(timeout.formatted()) s (multicast DNS\(interface.map { " on \($0)" } ?? "")). "
                        + "Is it running, on this network, with discovery on? Devices can also be added by address: `kiana peers add HOST:PORT`.")
            }
        }
    }

    static func esc(_ s: String) -> String {
        var out = ""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case _ where u.value < 0x20: out += String(format: "\\u%04x", u.value)
            default: out.unicodeScalars.append(u)
            }
        }
        return out
    }
}
