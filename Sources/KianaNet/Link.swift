import Crypto
import KianaCore
import Logging
import NIOCore
import NIOPosix

/// Settings of device links; the defaults suit a LAN.
public struct LinkConfig: Sendable {
    /// A peer that connected to this device must finish the preamble, Noise handshake and hello
    /// within this time (on a LAN they take milliseconds); until then it holds a pending slot.
    public var handshakeTimeout: Duration = .seconds(2)
    /// The same deadline for links this device dials.
    public var dialHandshakeTimeout: Duration = .seconds(5)
    /// Heartbeat period; a link whose heartbeat goes unanswered for `idleTimeout` is closed.
    public var pingInterval: Duration = .seconds(2)
    public var idleTimeout: Duration = .seconds(15)
    /// Requests without an answer after this fail.
    public var requestTimeout: Duration = .seconds(30)
    /// Both directions rekey (Noise §11.3) after this many transport messages.
    public var rekeyEvery: UInt64 = 1 << 16
    public var maxMessage: Int = MessageDecoder.defaultMaxMessage
    /// Requests a peer may have in flight on one link before it gets "busy" errors.
    public var maxInFlight: Int = 32
    /// Inbound member links (handshake done, an authority admitted) served at once. Handshakes
    /// do not count here: they have their own pool (`maxPendingHandshakes`), so strangers never
    /// take a member's room. See `Admission`.
    public var maxConnections: Int = 64
    /// Inbound connections in their handshake at once; more are closed on arrival.
    public var maxPendingHandshakes: Int = 32
    /// Of those, at most this many from one source address.
    public var maxPendingPerSource: Int = 4
    /// Inbound pairing links at once (joiners while a pairing window is open).
    public var maxPairingLinks: Int = 4
    /// Pending slots beyond `maxPendingHandshakes` kept for addresses member links came from.
    public var memberReserve: Int = 8
    /// Items one streamed answer may have; a peer sending more is cut off (link closed).
    public var maxStreamItems: Int = 10_000
    /// Bytes of streamed answers held for one link at once, over all its requests.
    public var maxBufferedBytes: Int = 64 << 20
    /// Our own requests waiting for answers on one link, at most.
    public var maxOutstanding: Int = 64
    /// Notifications from one peer handled at once; more are dropped (they are hints, such
    /// as "my head moved", and the next one says the same).
    public var maxNotifications: Int = 4

    public init() {}
}

/// What the handshake proved about the other side, for the admission decision.
public struct LinkCandidate: Sendable {
    public var identityKey: [UInt8]
    public var mode: LinkPreamble.Mode
    public var remoteAddress: String
    public var deviceID: DeviceID { DeviceID(publicKey: identityKey) }
}

/// Admission: nil accepts, a reason refuses (it is logged, and the connection is dropped).
public typealias LinkAdmission = @Sendable (LinkCandidate) async -> String?

/// Answers a peer's request; nil means the type is unknown (the peer gets an `unknown-type` error).
public typealias LinkRequestHandler = @Sendable (PeerLink, LinkMessage) async -> LinkReply?
/// Handles a notification.
public typealias LinkNotifyHandler = @Sendable (PeerLink, LinkMessage) async -> Void

/// The answer to one request: a body, a stream of item bodies, or an error.
public enum LinkReply: Sendable {
    case body(CBOR)
    case stream([CBOR])
    case error(code: ErrorCode, message: String)
}

/// Everything a link needs besides the socket.
public struct LinkContext: Sendable {
    public var identity: DeviceIdentity
    /// This node's network ID; nil on a device that has not joined one (only pairing then).
    public var network: [UInt8]?
    public var config: LinkConfig
    public var logger: Logger
    /// Sent in `hello`: whatever the application wants the peer to know first (name, head).
    public var helloInfo: @Sendable () async -> CBOR
    public var admit: LinkAdmission
    public var onRequest: LinkRequestHandler
    public var onNotify: LinkNotifyHandler
    /// Limits the log lines about refused inbound connections (one per source a minute).
    public var refusals: RefusalLog
    /// Carried by each heartbeat ping (the application's current state, such as its head); a
    /// non-empty ping body is handed to `onNotify` as a `head` notification.
    public var pingInfo: @Sendable () async -> CBOR = { .map([:]) }
    /// Called once reading has ended and the link is shut, before the link waits for the
    /// requests it is still answering: releases what such a request waits for (a joiner's
    /// pairing request waits for the owner, who must learn the joiner is gone).
    public var onClose: @Sendable (PeerLink) async -> Void = { _ in }

    public init(
        identity: DeviceIdentity, network: [UInt8]?, config: LinkConfig = LinkConfig(), logger: Logger,
        helloInfo: @escaping @Sendable () async -> CBOR = { .map([:]) },
        admit: @escaping LinkAdmission,
        onRequest: @escaping LinkRequestHandler = { _, _ in nil },
        onNotify: @escaping LinkNotifyHandler = { _, _ in },
        refusals: RefusalLog = RefusalLog(),
        pingInfo: @escaping @Sendable () async -> CBOR = { .map([:]) },
        onClose: @escaping @Sendable (PeerLink) async -> Void = { _ in }
    ) {
        self.refusals = refusals
        self.pingInfo = pingInfo
        self.onClose = onClose
        self.identity = identity
        self.network = network
        self.config = config
        self.logger = logger
        self.helloInfo = helloInfo
        self.admit = admit
        self.onRequest = onRequest
        self.onNotify = onNotify
    }
}

/// An authenticated, encrypted link to one peer device. Send requests and notifications through
/// it; answers arrive through the connection's reader.
public actor PeerLink {
    public nonisolated let remoteKey: [UInt8]
    public nonisolated let mode: LinkPreamble.Mode
    /// The Noise handshake hash: the channel binding (pairing codes derive from it).
    public nonisolated let handshakeHash: [UInt8]
    public nonisolated let remoteAddress: String
    public nonisolated let initiatedLocally: Bool
    /// The peer's `hello` body and the negotiated protocol version.
    public nonisolated let peerHello: CBOR
    public nonisolated let version: UInt64
    nonisolated let channel: any Channel
    let outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>
    let config: LinkConfig
    var sendCipher: NoiseCipher
    var sent: UInt64 = 0
    var nextID: UInt64 = 1
    var expected: Set<UInt64> = []
    var waiting: [UInt64: CheckedContinuation<[CBOR], any Error>] = [:]
    var results: [UInt64: Result<[CBOR], KianaNetError>] = [:]
    var streams: [UInt64: [CBOR]] = [:]
    /// Bytes held in `streams`, in all and per request.
    var buffered = 0
    var sizes: [UInt64: Int] = [:]
    var closedError: KianaNetError?
    var inFlight = 0
    var notifying = 0
    /// Notifications dropped because `maxNotifications` were being handled.
    public private(set) var droppedNotifications = 0
    /// The last heartbeat round-trip time.
    public private(set) var rtt: Duration?
    public private(set) var lastHeard: ContinuousClock.Instant = .now

    init(
        remoteKey: [UInt8], mode: LinkPreamble.Mode, handshakeHash: [UInt8], remoteAddress: String, initiatedLocally: Bool,
        peerHello: CBOR, version: UInt64, channel: any Channel, outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>,
        config: LinkConfig, sendCipher: NoiseCipher, sent: UInt64
    ) {
        self.remoteKey = remoteKey
        self.mode = mode
        self.handshakeHash = handshakeHash
        self.remoteAddress = remoteAddress
        self.initiatedLocally = initiatedLocally
        self.peerHello = peerHello
        self.version = version
        self.channel = channel
        self.outbound = outbound
        self.config = config
        self.sendCipher = sendCipher
        self.sent = sent
    }

    public nonisolated var deviceID: DeviceID { DeviceID(publicKey: remoteKey) }

    /// Sends one message (encrypted, framed, rekeying on schedule). Sends on one link are
    /// serialized: each is sealed only when it may write, so frames leave in nonce order even
    /// though the write suspends (the actor is reentrant across it) and waits for the socket.
    public func send(_ message: LinkMessage) async throws(KianaNetError) {
        if let closedError { throw closedError }
        while writing { await withCheckedContinuation { writers.append($0) } }
        writing = true
        defer {
            writing = false
            if !writers.isEmpty { writers.removeFirst().resume() }
        }
        if let closedError { throw closedError }
        let bytes = try Link.seal(message.encoded, cipher: &sendCipher, sent: &sent, config: config)
        do {
            bytesOut += bytes.count
            try await outbound.write(ByteBuffer(bytes: bytes))
        } catch {
            throw KianaNetError(.closed, "link to \(deviceID) is closed", cause: error)
        }
    }

    /// A send is writing; the others wait here, first come first served.
    var writing = false
    var writers: [CheckedContinuation<Void, Never>] = []

    /// Sends a request and waits for its response body.
    public func request(_ type: String, _ body: CBOR = .map([:]), timeout: Duration? = nil) async throws(KianaNetError) -> CBOR {
        let items = try await exchange(type, body, timeout: timeout)
        return items.last ?? .null
    }

    /// Sends a request whose answer is a stream and returns all its items.
    public func requestStream(_ type: String, _ body: CBOR = .map([:]), timeout: Duration? = nil) async throws(KianaNetError) -> [CBOR] {
        try await exchange(type, body, timeout: timeout)
    }

    func exchange(_ type: String, _ body: CBOR, timeout: Duration?) async throws(KianaNetError) -> [CBOR] {
        if let closedError { throw closedError }
        guard expected.count < config.maxOutstanding else {
            throw KianaNetError(.busy, "\(config.maxOutstanding) requests to \(deviceID) are already waiting")
        }
        let id = nextID
        nextID += 1
        expected.insert(id)
        do {
            try await send(LinkMessage(kind: .request, type: type, id: id, version: version, body: body))
        } catch {
            expected.remove(id)
            throw error
        }
        let limit = timeout ?? config.requestTimeout
        let timedOut = KianaNetError(.timeout, "\(type) request to \(deviceID) timed out")
        do {
            return try await withThrowingTaskGroup(of: [CBOR]?.self) { group in
                group.addTask { try await self.result(of: id) }
                group.addTask {
                    try? await Task.sleep(for: limit)
                    await self.finish(id, .failure(timedOut))
                    return nil
                }
                while let r = try await group.next() {
                    if let r {
                        group.cancelAll()
                        return r
                    }
                }
                throw timedOut
            }
        } catch let e as KianaNetError {
            throw e
        } catch {
            throw KianaNetError(.closed, "\(type) request failed", cause: error)
        }
    }

    func result(of id: UInt64) async throws -> [CBOR] {
        try await withCheckedThrowingContinuation { c in
            if let r = results.removeValue(forKey: id) {
                c.resume(with: r.mapError { $0 as any Error })
            } else if expected.contains(id) {
                waiting[id] = c
            } else {
                c.resume(throwing: KianaNetError(.closed, "request \(id) already finished"))
            }
        }
    }

    func finish(_ id: UInt64, _ result: Result<[CBOR], KianaNetError>) {
        guard expected.remove(id) != nil else { return }
        streams[id] = nil
        buffered -= sizes.removeValue(forKey: id) ?? 0
        if let c = waiting.removeValue(forKey: id) {
            c.resume(with: result.mapError { $0 as any Error })
        } else {
            results[id] = result
        }
    }

    /// Routes an answer from the peer (`size` bytes on the wire) to the request waiting for it.
    func deliver(_ m: LinkMessage, size: Int) {
        lastHeard = .now
        guard expected.contains(m.id) else { return }  // late or unsolicited: ignored
        switch m.kind {
        case .response: finish(m.id, .success((streams[m.id] ?? []) + [m.body]))
        case .item:
            // A peer may not make us hold more than the limits: the request fails and the link
            // is closed (a paired but misbehaving device must not exhaust memory).
            guard (streams[m.id]?.count ?? 0) < config.maxStreamItems, buffered + size <= config.maxBufferedBytes else {
                finish(
                    m.id,
                    .failure(
                        KianaNetError(
                            .tooLarge,
                            "peer \(deviceID) streamed more than this link holds (\(config.maxStreamItems) items, \(config.maxBufferedBytes >> 20) MiB)")))
                close()
                return
            }
            streams[m.id, default: []].append(m.body)
            sizes[m.id, default: 0] += size
            buffered += size
        case .end: finish(m.id, .success(streams[m.id] ?? []))
        case .error:
            let fields = (try? m.body.mapValue("error")) ?? [:]
            // A code this version does not know is the peer's protocol error, not a free string.
            let code = (try? fields[.text("code")]?.textValue("code")).flatMap(ErrorCode.init(rawValue:)) ?? .protocolViolation
            let text = (try? fields[.text("message")]?.textValue("message")) ?? "request failed"
            finish(m.id, .failure(KianaNetError(code, "peer \(deviceID): \(text)", remote: true)))
        default: break
        }
    }

    func heard(bytes total: Int) {
        lastHeard = .now
        bytesIn = total
    }

    /// Bytes this link received and sent on the wire (framed ciphertext, handshake included).
    public private(set) var bytesIn = 0
    public private(set) var bytesOut = 0

    func setRTT(_ d: Duration) { rtt = d }

    func beginRequest() -> Bool {
        guard inFlight < config.maxInFlight else { return false }
        inFlight += 1
        return true
    }

    func endRequest() { inFlight -= 1 }

    func beginNotify() -> Bool {
        guard notifying < config.maxNotifications else {
            droppedNotifications += 1
            return false
        }
        notifying += 1
        return true
    }

    func endNotify() { notifying -= 1 }

    /// Replies the read loop owes (pongs, `busy` and unknown-kind errors) still waiting for the
    /// socket; they are sent beside the read loop, which never waits for the peer to read.
    var replying = 0

    func beginReply() -> Bool {
        guard replying < config.maxOutstanding else { return false }
        replying += 1
        return true
    }

    func endReply() { replying -= 1 }

    /// When the heartbeat ping out now was started (only one at a time: the next waits for its
    /// answer or timeout); nil when none is out.
    var pingStarted: ContinuousClock.Instant?

    func beginPing() -> Bool {
        if pingStarted != nil { return false }
        pingStarted = .now
        return true
    }

    func endPing() { pingStarted = nil }

    /// How long the ping out now has been waiting, written or not (zero when none is out).
    func pingAge(now: ContinuousClock.Instant = .now) -> Duration { pingStarted.map { now - $0 } ?? .zero }

    /// How long nothing at all arrived from the peer.
    func silence(now: ContinuousClock.Instant = .now) -> Duration { now - lastHeard }

    /// An announcement (head or pushed block) to this peer is still waiting for the socket.
    /// The announcer sends the next one only after it went out: a peer that stopped reading
    /// holds at most one, and is not waited for (`HeadAnnouncer`).
    var announcing = false

    func beginAnnounce() -> Bool {
        if announcing { return false }
        announcing = true
        return true
    }

    func endAnnounce() { announcing = false }

    /// Bytes of streamed answers held for this link now.
    public var bufferedBytes: Int { buffered }

    /// Fails everything still waiting; called when the connection ends.
    func shut(_ error: KianaNetError) {
        closedError = error
        for id in expected { finish(id, .failure(error)) }
    }

    /// Closes the connection.
    public nonisolated func close() {
        channel.close(promise: nil)
    }
}

/// Establishing and running links over NIO TCP channels.
public enum Link {
    static func fail(_ code: ErrorCode, _ why: String) -> KianaNetError { KianaNetError(code, why) }

    /// Whether `error` means the other side closed the connection. A side that refuses closes
    /// (a listener with no pairing window after the preamble, one that does not admit the key
    /// after the handshake), so our next read or write can fail either way.
    static func closedByPeer(_ error: any Error) -> Bool {
        if let e = error as? KianaNetError { return e.code == .closed }
        if let e = error as? ChannelError { return e == .ioOnClosedChannel || e == .eof || e == .alreadyClosed || e == .outputClosed }
        if let e = error as? IOError { return [ECONNRESET, EPIPE].contains(e.errnoCode) }
        return false
    }

    static func timeAmount(_ d: Duration) -> TimeAmount {
        .nanoseconds(d.components.seconds * 1_000_000_000 + d.components.attoseconds / 1_000_000_000)
    }

    /// Encrypts and frames one link message (it may span several Noise messages).
    static func seal(_ message: [UInt8], cipher: inout NoiseCipher, sent: inout UInt64, config: LinkConfig) throws(KianaNetError) -> [UInt8] {
        var out: [UInt8] = []
        for piece in try MessageDecoder.encode(message, maxMessage: config.maxMessage) {
            out += try FrameDecoder.encode(try cipher.encrypt(piece))
            sent += 1
            if sent % config.rekeyEvery == 0 { cipher.rekey() }
        }
        return out
    }

    /// Wraps an accepted or connected TCP channel for the async link runner.
    public static func wrap(_ channel: any Channel) -> EventLoopFuture<NIOAsyncChannel<ByteBuffer, ByteBuffer>> {
        channel.eventLoop.makeCompletedFuture {
            try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
        }
    }

    /// Runs one connection: preamble, Noise XX handshake, identity binding, admission, hello
    /// and version negotiation; then `body` runs with the link while this task reads and
    /// dispatches messages. Returns `body`'s result; the connection is closed afterwards.
    ///
    /// - Parameter dial: the preamble to send when this side initiated, nil when it accepted.
    public static func run<T: Sendable>(
        _ channel: NIOAsyncChannel<ByteBuffer, ByteBuffer>, dial: LinkPreamble?, context: LinkContext,
        body: @escaping @Sendable (PeerLink) async throws -> T
    ) async throws -> T {
        let remote = channel.channel.remoteAddress.map { "\($0.ipAddress ?? "?"):\($0.port ?? 0)" } ?? "?"
        let raw = channel.channel
        // Refusals are counted and rate-limited per address (the port changes every attempt).
        let source = Admission.source(of: raw.remoteAddress)
        let limit = dial == nil ? context.config.handshakeTimeout : context.config.dialHandshakeTimeout
        let expired = OnceFlag()
        let deadline = raw.eventLoop.scheduleTask(in: timeAmount(limit)) {
            expired.set()
            raw.close(promise: nil)
        }
        defer { deadline.cancel() }
        return try await channel.executeThenClose { inbound, outbound in
            var reader = Reader(iterator: inbound.makeAsyncIterator(), decoder: MessageDecoder(maxMessage: context.config.maxMessage))
            let established: Established
            do {
                established = try await handshake(&reader, outbound: outbound, dial: dial, context: context, remote: remote, deadline: deadline)
            } catch {
                // The deadline closes the socket, so the read fails as "closed": say what it was.
                // A write that found the socket closed is the same refusal as a read that did.
                let failure =
                    expired.isSet
                    ? fail(.timeout, "handshake not finished within \(limit)")
                    : !(error is KianaNetError) && closedByPeer(error) ? fail(.closed, "the other side closed the connection during the handshake") : error
                if dial == nil {
                    // Someone dialed this device and did not get in: a notice at most once per
                    // source address a minute and a few a minute in all, details at info within
                    // a budget (a scan or a reconnect loop cannot flood the log).
                    context.refusals.log(
                        context.logger, source: source,
                        metadata: ["peer": .string(remote), "reason": .string((failure as? KianaNetError)?.message ?? "\(failure)")])
                } else {
                    context.logger.info("peer refused", metadata: ["peer": .string(remote), "reason": .string("\(failure)")])
                }
                throw failure
            }
            let link = PeerLink(
                remoteKey: established.remoteKey, mode: established.mode, handshakeHash: established.hash,
                remoteAddress: remote, initiatedLocally: dial != nil, peerHello: established.hello,
                version: established.version, channel: raw, outbound: outbound, config: context.config,
                sendCipher: established.send, sent: established.sent)
            context.logger.debug("link up", metadata: ["peer": .string(link.deviceID.description), "address": .string(remote)])
            return try await withThrowingTaskGroup(of: T?.self) { group in
                group.addTask {
                    defer { link.close() }
                    return try await body(link)
                }
                group.addTask {
                    try await heartbeat(link, context: context)
                    return nil
                }
                var readError: KianaNetError = fail(.closed, "link to \(link.deviceID) closed")
                do {
                    try await readLoop(&reader, link: link, context: context)
                } catch let e as KianaNetError {
                    readError = e
                    context.logger.info("link dropped", metadata: ["peer": .string(link.deviceID.description), "reason": .string(e.message)])
                } catch {}
                await link.shut(readError)
                group.cancelAll()
                var result: T?
                var bodyError: (any Error)?
                while !group.isEmpty {
                    do {
                        if let r = try await group.next(), let r { result = r }
                    } catch {
                        if bodyError == nil, !(error is CancellationError) { bodyError = error }
                    }
                }
                if let result { return result }
                throw bodyError ?? readError
            }
        }
    }

    struct Established {
        var remoteKey: [UInt8]
        var mode: LinkPreamble.Mode
        var hash: [UInt8]
        var hello: CBOR
        var version: UInt64
        var send: NoiseCipher
        var sent: UInt64
    }

    /// Buffered reading of frames and, after the handshake, of decrypted link messages.
    struct Reader {
        var iterator: NIOAsyncChannelInboundStream<ByteBuffer>.AsyncIterator
        var frames = FrameDecoder()
        var decoder: MessageDecoder
        var raw: [UInt8] = []
        var receive: NoiseCipher?
        var received: UInt64 = 0
        /// Bytes read from the socket so far.
        var bytesRead = 0

        mutating func fill() async throws(KianaNetError) {
            let next: ByteBuffer?
            do { next = try await iterator.next() } catch { throw Link.fail(.closed, "connection failed: \(error)") }
            guard var buf = next else { throw Link.fail(.closed, "connection closed by peer") }
            let bytes = buf.readBytes(length: buf.readableBytes) ?? []
            bytesRead += bytes.count
            frames.append(bytes)
        }

        /// Exactly `n` unframed bytes (the preamble).
        mutating func rawBytes(_ n: Int) async throws(KianaNetError) -> [UInt8] {
            while frames.pendingCount < n { try await fill() }
            let all = Array(frames.buffer[frames.start...])
            frames = FrameDecoder()
            frames.append(all.dropFirst(n))
            return Array(all.prefix(n))
        }

        mutating func frame() async throws(KianaNetError) -> [UInt8] {
            while true {
                if let f = try frames.next() { return f }
                try await fill()
            }
        }

        /// The next link message (decrypting frames and rekeying on schedule).
        mutating func message(config: LinkConfig) async throws(KianaNetError) -> [UInt8] {
            while true {
                if let m = try decoder.next() { return m }
                let f = try await frame()
                decoder.append(try receive!.decrypt(f))
                received += 1
                if received % config.rekeyEvery == 0 { receive!.rekey() }
            }
        }
    }

    static func handshake(
        _ reader: inout Reader, outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>, dial: LinkPreamble?,
        context: LinkContext, remote: String, deadline: Scheduled<Void>
    ) async throws -> Established {
        let preamble: LinkPreamble
        if let dial {
            preamble = dial
            try await outbound.write(ByteBuffer(bytes: dial.encoded))
        } else {
            preamble = try LinkPreamble(decoding: try await reader.rawBytes(LinkPreamble.size))
            switch preamble.mode {
            case .member:
                guard let net = context.network else { throw fail(.refused, "this device has not joined a network yet") }
                guard preamble.networkTag == LinkPreamble.tag(net) else { throw fail(.refused, "peer belongs to another network") }
            case .pairing:
                guard context.network != nil else { throw fail(.refused, "this device has no network to pair into") }
                // Turn joiners away before any cryptography when no window is open.
                let early = LinkCandidate(identityKey: [], mode: .pairing, remoteAddress: remote)
                if let reason = await context.admit(early) { throw fail(.refused, "pairing refused: \(reason)") }
            }
        }
        let prologue = preamble.prologue(network: context.network)
        let staticKey = context.identity.transportKey
        let payload = HandshakeIdentity.payload(for: context.identity)
        var hs = NoiseHandshake(role: dial != nil ? .initiator : .responder, staticKey: staticKey, prologue: prologue)
        var remoteKey: [UInt8] = []
        func admit(_ key: [UInt8]) async throws {
            let candidate = LinkCandidate(identityKey: key, mode: preamble.mode, remoteAddress: remote)
            if let reason = await context.admit(candidate) {
                throw fail(.refused, "\(candidate.deviceID) refused: \(reason)")
            }
        }
        if dial != nil {
            try await outbound.write(ByteBuffer(bytes: try FrameDecoder.encode(try hs.writeMessage())))
            let p2 = try hs.readMessage(try await reader.frame())
            remoteKey = try HandshakeIdentity.verify(p2, remoteStatic: hs.remoteStatic!)
            try await admit(remoteKey)
            try await outbound.write(ByteBuffer(bytes: try FrameDecoder.encode(try hs.writeMessage(payload))))
        } else {
            _ = try hs.readMessage(try await reader.frame())
            try await outbound.write(ByteBuffer(bytes: try FrameDecoder.encode(try hs.writeMessage(payload))))
            let p3 = try hs.readMessage(try await reader.frame())
            remoteKey = try HandshakeIdentity.verify(p3, remoteStatic: hs.remoteStatic!)
            try await admit(remoteKey)
        }
        guard remoteKey != context.identity.publicKey else { throw fail(.refused, "connected to itself") }
        var (send, receive) = try hs.split()
        reader.receive = receive
        // hello: each side states its versions; the highest common one is used.
        var sent: UInt64 = 0
        let hello = LinkMessage(
            kind: .notify, type: "hello",
            body: .map([
                "versions": .array(LinkMessage.supportedVersions.map { .unsigned($0) }),
                "info": await context.helloInfo(),
            ]))
        try await outbound.write(ByteBuffer(bytes: try seal(hello.encoded, cipher: &send, sent: &sent, config: context.config)))
        let first = try LinkMessage.decode(try await reader.message(config: context.config))
        guard case .message(let peerHello) = first, peerHello.kind == .notify, peerHello.type == "hello" else {
            throw fail(.protocolViolation, "peer did not start with hello")
        }
        let theirs: [UInt64]
        let info: CBOR
        do throws(KianaCoreError) {
            let m = try peerHello.body.mapValue("hello")
            theirs = try m.required("versions", in: "hello").arrayValue("versions").prefix(16).map { v throws(KianaCoreError) in try v.uintValue("version") }
            info = m[.text("info")] ?? .map([:])
        } catch {
            throw fail(.protocolViolation, "malformed hello: \(error.message)")
        }
        guard let version = Set(theirs).intersection(LinkMessage.supportedVersions).max() else {
            let reject = LinkMessage(kind: .notify, type: "bye", body: .map(["reason": "no common protocol version"]))
            try? await outbound.write(ByteBuffer(bytes: try seal(reject.encoded, cipher: &send, sent: &sent, config: context.config)))
            throw fail(.version, "no common protocol version (peer speaks \(theirs), we speak \(LinkMessage.supportedVersions))")
        }
        deadline.cancel()
        return Established(remoteKey: remoteKey, mode: preamble.mode, hash: hs.handshakeHash, hello: info, version: version, send: send, sent: sent)
    }

    /// Reads and dispatches until the connection ends. Requests, notifications and owed replies
    /// run as children of a discarding group (a finished child is freed at once: a link lives for
    /// days and answers a ping every 2 s); when reading ends the link is shut and closed first, so
    /// children waiting on it are released before the group waits for them.
    static func readLoop(_ reader: inout Reader, link: PeerLink, context: LinkContext) async throws {
        try await withThrowingDiscardingTaskGroup { group in
            var failure: (any Error)?
            do {
                try await dispatch(&reader, link: link, context: context, group: &group)
            } catch {
                failure = error
            }
            await link.shut((failure as? KianaNetError) ?? fail(.closed, "link to \(link.deviceID) closed"))
            link.close()
            await context.onClose(link)
            group.cancelAll()
            if let failure { throw failure }
        }
    }

    static func dispatch(_ reader: inout Reader, link: PeerLink, context: LinkContext, group: inout ThrowingDiscardingTaskGroup<any Error>) async throws {
        while true {
            let bytes = try await reader.message(config: context.config)
            await link.heard(bytes: reader.bytesRead)
            let decoded = try LinkMessage.decode(bytes)
            switch decoded {
            case .unknownKind(let id, let kind):
                try await reply(LinkMessage.error(to: id, type: "unknown", code: .unknownKind, "unknown message kind \(kind)"), link: link, group: &group)
            case .message(let m):
                switch m.kind {
                case .request:
                    if m.type == "ping" {
                        try await reply(LinkMessage(kind: .response, type: "ping", id: m.id, version: link.version), link: link, group: &group)
                        if link.mode == .member, case .map(let body) = m.body, !body.isEmpty, await link.beginNotify() {
                            group.addTask {
                                await context.onNotify(link, LinkMessage(kind: .notify, type: "head", body: m.body))
                                await link.endNotify()
                            }
                        }
                        continue
                    }
                    guard await link.beginRequest() else {
                        try await reply(LinkMessage.error(to: m.id, type: m.type, code: .busy, "too many requests in flight"), link: link, group: &group)
                        continue
                    }
                    group.addTask {
                        let reply = await context.onRequest(link, m)
                        do throws(KianaNetError) {
                            switch reply {
                            case nil:
                                try await link.send(LinkMessage.error(to: m.id, type: m.type, code: .unknownType, "unknown request type \(m.type)"))
                            case .body(let b):
                                try await link.send(LinkMessage(kind: .response, type: m.type, id: m.id, version: link.version, body: b))
                            case .stream(let items):
                                for item in items {
                                    try await link.send(LinkMessage(kind: .item, type: m.type, id: m.id, version: link.version, body: item))
                                }
                                try await link.send(LinkMessage(kind: .end, type: m.type, id: m.id, version: link.version))
                            case .error(let code, let message):
                                try await link.send(LinkMessage.error(to: m.id, type: m.type, code: code, message))
                            }
                        } catch {}
                        await link.endRequest()
                    }
                case .notify:
                    if m.type == "bye" { return }
                    guard await link.beginNotify() else { continue }
                    group.addTask {
                        await context.onNotify(link, m)
                        await link.endNotify()
                    }
                default:
                    await link.deliver(m, size: bytes.count)
                }
            }
        }
    }

    /// Sends a reply the read loop owes beside it: the read loop never waits for the socket, so
    /// a peer that does not read cannot stop this side from reading (two links each waiting to
    /// write would otherwise wait on each other for good). More than `maxOutstanding` replies
    /// unsent means the peer reads nothing: the link is closed.
    static func reply(_ message: LinkMessage, link: PeerLink, group: inout ThrowingDiscardingTaskGroup<any Error>) async throws(KianaNetError) {
        guard await link.beginReply() else {
            throw fail(.protocolViolation, "peer does not read its answers (\(link.config.maxOutstanding) unsent)")
        }
        group.addTask {
            try? await link.send(message)
            await link.endReply()
        }
    }

    /// Sends a ping every `pingInterval` (one at a time) and records its RTT. A link is closed
    /// when nothing at all arrived for `idleTimeout`, or a ping went unanswered that long: the
    /// first catches a peer that stopped reading while this side's writes (the ping among
    /// them) wait for its socket, the second a peer that reads but no longer answers.
    static func heartbeat(_ link: PeerLink, context: LinkContext) async throws {
        let clock = ContinuousClock()
        let config = context.config
        let logger = context.logger
        await withDiscardingTaskGroup { group in
            while !Task.isCancelled {
                do { try await Task.sleep(for: config.pingInterval) } catch { break }
                // Nothing heard for that long, or a ping out that long (also one that could not even
                // be written: the peer sends but does not read).
                let heard: Logger.MetadataValue? =
                    await link.silence() > config.idleTimeout ? "nothing" : await link.pingAge() > config.idleTimeout ? "no pong" : nil
                if let heard {
                    logger.info("link silent, closing", metadata: ["peer": .string(link.deviceID.description), "heard": heard])
                    link.close()
                    break
                }
                guard await link.beginPing() else { continue }
                group.addTask {
                    let start = clock.now
                    do {
                        _ = try await link.request("ping", await context.pingInfo(), timeout: config.idleTimeout)
                        await link.setRTT(clock.now - start)
                    } catch {
                        if !Task.isCancelled {
                            logger.info("link silent, closing", metadata: ["peer": .string(link.deviceID.description), "heard": "no pong"])
                            link.close()
                        }
                    }
                    await link.endPing()
                }
            }
            group.cancelAll()
        }
    }
}
