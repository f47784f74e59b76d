import Crypto
import Dispatch
import Foundation
import KianaCore
import KianaNet
import Logging
import NIOCore
import NIOPosix

/// `kiana bench net`: device links over loopback TCP, each figure beside its raw primitive
/// measured in the same run.
///
/// - Handshakes: full link set-ups (TCP connect, preamble, Noise XX, identity signatures,
///   admission, hello) one after another, beside the same Noise XX handshake plus the Ed25519
///   signing and verification of both identities done in memory (no sockets).
/// - Throughput: link messages streamed from one link end to the other through the encrypting,
///   framing, TCP and decrypting path, beside raw ChaCha20-Poly1305 sealing of the same bytes in
///   the same piece size on one core.
public struct NetBench: Sendable {
    public var handshakes: Int
    public var megabytes: Int
    public var messageSize: Int
    public var repeats: Int

    public init(handshakes: Int = 300, megabytes: Int = 256, messageSize: Int = 65536, repeats: Int = 3) {
        self.handshakes = handshakes
        self.megabytes = megabytes
        self.messageSize = messageSize
        self.repeats = repeats
    }

    public struct Row: Sendable {
        public var name: String
        public var value: Double
        public var unit: String
        public var reference: String
        public var referenceValue: Double
        /// ours / reference (rates: 1.00 = as fast as the primitive alone).
        public var ratio: Double { value / referenceValue }
    }

    static func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }

    /// Runs both measurements with two link ends on 127.0.0.1 (a listener that admits only the
    /// bench client, and a dialler); `progress` gets one line per phase.
    public func run(progress: @escaping @Sendable (String) -> Void) async throws -> [Row] {
        let server = DeviceIdentity.generate()
        let client = DeviceIdentity.generate()
        let network = Array(SHA.hash(Array("kiana bench network".utf8)))
        var logger = Logger(label: "kiana.bench")
        logger.logLevel = .warning
        var config = LinkConfig()
        config.maxConnections = 4
        let serverContext = LinkContext(
            identity: server, network: network, config: config, logger: logger,
            admit: { $0.identityKey == client.publicKey ? nil : "not the bench client" },
            // Read in order after the streamed notifications: its answer means they were all
            // read and opened (handlers may drop notifications beyond `maxNotifications`, the
            // link's own bound, so counting handled ones would wait forever under load).
            onRequest: { link, m in m.type == "bench-sync" ? .body(.unsigned(UInt64(await link.bytesIn))) : nil })
        let clientContext = LinkContext(
            identity: client, network: network, config: config, logger: logger,
            admit: { $0.identityKey == server.publicKey ? nil : "not the bench server" })
        let group = MultiThreadedEventLoopGroup.singleton
        let listener = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .bind(host: "127.0.0.1", port: 0) { Link.wrap($0) }
        let port = listener.channel.localAddress?.port ?? 0

        func dial<T: Sendable>(_ body: @escaping @Sendable (PeerLink) async throws -> T) async throws -> T {
            let channel = try await ClientBootstrap(group: group)
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .connect(host: "127.0.0.1", port: port) { Link.wrap($0) }
            return try await Link.run(channel, dial: LinkPreamble(mode: .member, network: network), context: clientContext, body: body)
        }

        let handshakes = self.handshakes
        let repeats = self.repeats
        let messageSize = self.messageSize
        let total = megabytes << 20
        return try await withThrowingTaskGroup(of: [Row]?.self) { tasks in
            tasks.addTask {
                try await listener.executeThenClose { inbound in
                    try await withThrowingDiscardingTaskGroup { links in
                        for try await conn in inbound {
                            links.addTask {
                                // Each accepted link lives until the dialler closes it (the link
                                // runner cancels the body when the connection ends).
                                _ = try? await Link.run(conn, dial: nil, context: serverContext) { _ in
                                    try? await Task.sleep(for: .seconds(3600))
                                }
                            }
                        }
                    }
                }
                return nil
            }
            tasks.addTask {
                var rows: [Row] = []
                // Handshakes over TCP, one after another.
                progress("\(handshakes) link handshakes over loopback")
                var bestLinks = 0.0
                for _ in 0..<repeats {
                    let t0 = Self.now()
                    for _ in 0..<handshakes { _ = try await dial { _ in true } }
                    bestLinks = max(bestLinks, Double(handshakes) / (Self.now() - t0))
                }
                progress("\(handshakes) in-memory Noise XX handshakes with identity signatures")
                var bestMemory = 0.0
                for _ in 0..<repeats {
                    let t0 = Self.now()
                    for _ in 0..<handshakes { try Self.memoryHandshake(server: server, client: client) }
                    bestMemory = max(bestMemory, Double(handshakes) / (Self.now() - t0))
                }
                rows.append(
                    Row(
                        name: "link handshakes, sequential", value: bestLinks, unit: "/s",
                        reference: "Noise XX + Ed25519 identity sign/verify in memory, 1 core", referenceValue: bestMemory))

                // Throughput through one link.
                progress("streaming \(total >> 20) MiB in \(messageSize)-byte link messages")
                let chunk = [UInt8](repeating: 0xA5, count: messageSize)
                let message = LinkMessage(kind: .notify, type: "bench", body: .bytes(chunk))
                let count = max(1, total / messageSize)
                let bestLink = try await dial { link in
                    var best = 0.0
                    for _ in 0..<repeats {
                        let before = try await link.request("bench-sync").uintValue("bench-sync")
                        let t0 = Self.now()
                        for _ in 0..<count { try await link.send(message) }
                        let after = try await link.request("bench-sync").uintValue("bench-sync")
                        best = max(best, Double(count * messageSize) / (Self.now() - t0) / 1e6)
                        guard after - before >= UInt64(count * messageSize) else {
                            throw KianaNetError(.protocolViolation, "the listener read \(after - before) bytes of the \(count * messageSize) streamed")
                        }
                    }
                    return best
                }
                progress("sealing \(total >> 20) MiB with raw ChaCha20-Poly1305")
                let sealRate = try Self.rawSeal(bytes: count * messageSize, repeats: repeats)
                rows.append(
                    Row(
                        name: "encrypted link throughput (\(messageSize / 1024) KiB messages)", value: bestLink, unit: "MB/s",
                        reference: "ChaCha20-Poly1305 seal, 65,519-byte pieces, 1 core", referenceValue: sealRate))
                return rows
            }
            var rows: [Row] = []
            while let r = try await tasks.next() {
                if let r {
                    rows = r
                    break
                }
            }
            tasks.cancelAll()
            try? await listener.channel.close()
            return rows
        }
    }

    /// One Noise_XX_25519_ChaChaPoly_SHA256 handshake between two in-memory parties, with the
    /// identity payloads signed and verified as on a real link.
    static func memoryHandshake(server: DeviceIdentity, client: DeviceIdentity) throws {
        let prologue = Array("KIANA-BENCH".utf8)
        var i = NoiseHandshake(role: .initiator, staticKey: client.transportKey, prologue: prologue)
        var r = NoiseHandshake(role: .responder, staticKey: server.transportKey, prologue: prologue)
        _ = try r.readMessage(try i.writeMessage())
        let p2 = try i.readMessage(try r.writeMessage(HandshakeIdentity.payload(for: server)))
        _ = try HandshakeIdentity.verify(p2, remoteStatic: i.remoteStatic!)
        let p3 = try r.readMessage(try i.writeMessage(HandshakeIdentity.payload(for: client)))
        _ = try HandshakeIdentity.verify(p3, remoteStatic: r.remoteStatic!)
        _ = try i.split()
        _ = try r.split()
    }

    /// MB/s of sealing `bytes` in 65,519-byte pieces (the largest Noise payload) on one core.
    static func rawSeal(bytes: Int, repeats: Int) throws -> Double {
        let key = SymmetricKey(size: .bits256)
        let piece = [UInt8](repeating: 0xA5, count: 65535 - 16)
        var best = 0.0
        for _ in 0..<repeats {
            var sealed = 0
            var n: UInt64 = 0
            var sink = 0
            let t0 = now()
            while sealed < bytes {
                var nonce = [UInt8](repeating: 0, count: 12)
                withUnsafeBytes(of: n.littleEndian) { for (k, b) in $0.enumerated() { nonce[4 + k] = b } }
                let box = try ChaChaPoly.seal(piece, using: key, nonce: try ChaChaPoly.Nonce(data: nonce))
                sink &+= box.tag.count
                sealed += piece.count
                n += 1
            }
            best = max(best, Double(sealed) / (now() - t0) / 1e6)
            if sink == 0 { print("") }  // keeps the sealing from being optimised away
        }
        return best
    }

    public static func render(_ rows: [Row]) -> String {
        func fmt(_ v: Double, _ unit: String) -> String { String(format: v >= 100 ? "%.0f %@" : "%.1f %@", v, unit) }
        let w = max(40, rows.map(\.name.count).max() ?? 0)
        var out = "measure".padded(to: w) + "  " + "kiana".padded(to: 12) + "  " + "reference".padded(to: 12) + "  ratio  reference is\n"
        for r in rows {
            out += r.name.padded(to: w) + "  " + fmt(r.value, r.unit).padded(to: 12) + "  " + fmt(r.referenceValue, r.unit).padded(to: 12)
            out += "  " + String(format: "%5.2f", r.ratio) + "  " + r.reference + "\n"
        }
        out += "ratio = kiana rate / reference rate (1.00 = as fast as the raw primitive alone)\n"
        return out
    }
}
