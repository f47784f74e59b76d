import Foundation
import Hummingbird
import HummingbirdCore
import KianaNet
import Logging
import NIOCore
import NIOHTTPTypes

/// The HTTP/1 child channel with admission and deadlines around Hummingbird's `HTTP1Channel`.
///
/// Each accepted connection first asks the `HTTPConnectionBook` for room; a refused one is reset
/// at once (no HTTP pipeline, nothing read, the refusal logged within the `RefusalLog`'s rate
/// limit). An admitted one gets a `ConnectionGuard` in front of the HTTP decoder, which owns the
/// connection's deadlines, and a `RequestObserver` behind it, which tells the guard where each
/// request is and whether it carried the token.
struct GuardedHTTP1: ServerChildChannel {
    enum Value: ServerChildChannelValue {
        case refused(any Channel)
        case http(HTTP1Channel.Value)
        var channel: any Channel {
            switch self {
            case .refused(let c): c
            case .http(let a): a.channel
            }
        }
    }

    let responder: HTTPChannelHandler.Responder
    let configuration: HTTP1Channel.Configuration
    let book: HTTPConnectionBook
    let refusals: RefusalLog
    let token: String?
    let controlToken: String?
    let logger: Logger

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        let source = Admission.source(of: channel.remoteAddress)
        let closer: @Sendable () -> Void = { resetConnection(channel) }
        switch book.open(source: source, close: closer) {
        case .refused(let refusal):
            refusals.log(self.logger, source: source, metadata: ["listener": "http", "peer": .string(source), "reason": .string(refusal.description)])
            resetConnection(channel)
            return channel.eventLoop.makeSucceededFuture(.refused(channel))
        case .admitted(let ticket, let displaced):
            for victim in displaced {
                victim.close()
                refusals.log(
                    self.logger, source: victim.source, message: "connection closed for room",
                    metadata: [
                        "listener": "http", "peer": .string(victim.source),
                        "reason": .string(victim.phase == .idle ? "idle, the oldest" : "no request head yet, the oldest"),
                    ])
            }
            let guardHandler = ConnectionGuard(ticket: ticket, book: book, limits: book.limits)
            let observer = RequestObserver(guard: guardHandler, token: token, controlToken: controlToken)
            var configuration = self.configuration
            let bound = NIOLoopBound(observer, eventLoop: channel.eventLoop)
            configuration.additionalChannelHandlers = { [bound.value] as [any RemovableChannelHandler] }
            do {
                try channel.pipeline.syncOperations.addHandler(guardHandler, position: .first)
            } catch {
                book.close(ticket)
                resetConnection(channel)
                return channel.eventLoop.makeSucceededFuture(.refused(channel))
            }
            return HTTP1Channel(responder: responder, configuration: configuration).setup(channel: channel, logger: logger)
                .map { .http($0) }
                .flatMapErrorThrowing { _ in
                    book.close(ticket)
                    resetConnection(channel)
                    return .refused(channel)
                }
        }
    }

    func handle(value: Value, logger: Logger) async {
        guard case .http(let channel) = value else { return }
        await HTTP1Channel(responder: responder, configuration: configuration).handle(value: channel, logger: logger)
    }
}

/// The first handler of an HTTP connection (before the decoder, so it sees bytes): keeps the
/// connection's place in the book and its deadlines.
///
/// - waiting for a request head: closed `headTimeout` after the connection opened (or after the
///   first byte of a later request); bytes that trickle in do not extend it. Closed silently when
///   nothing came, after a `408` (and a second of lingering close) when part of a head did.
/// - reading a body: every `bodyWindow`, the bytes that arrived while the server was waiting
///   for them must reach `minBodyRate`; otherwise the request fails with 408 (the handler reading
///   the body sees the error) and the connection closes. Time the server is not reading (its
///   own back-pressure) does not count against the client.
/// - answering: no deadline (an answer may take minutes), but a response the client stops
///   reading is closed when it has taken none of what was sent for `writeStallTimeout`.
/// - kept alive between requests: closed after `idleTimeout`.
final class ConnectionGuard: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = IOData
    typealias OutboundOut = IOData

    /// `draining`: the response was handed to the kernel, which still holds bytes the client has
    /// not taken; the connection is not idle (nor displaceable) until they are delivered.
    /// `lingering`: answered before the request's body was read (401, an early error); the rest
    /// of the body is read and thrown away for at most `headTimeout` (nginx's lingering close),
    /// so a client that sends its whole body first still sees the answer, and meanwhile the
    /// connection is as displaceable as an idle one.
    /// `closing`: a 408 was sent for a head that did not arrive in time and the sending side shut
    /// (FIN); what the client still sends is read and dropped for a moment before the close, so
    /// the kernel does not answer it with a reset that can destroy the 408 unread.
    enum Phase { case awaitingHead, readingBody, answering, draining, lingering, closing, idle }

    let ticket: HTTPConnectionBook.Ticket
    let book: HTTPConnectionBook
    let limits: HTTPLimits
    private var context: ChannelHandlerContext?
    private var phase = Phase.awaitingHead
    private var timer: Scheduled<Void>?
    private var stallTimer: Scheduled<Void>?
    /// Bytes received since the current head began (0: nothing came yet).
    private var headBytes = 0
    /// Requests whose head came, whose end came, and whose response ended.
    private var heads = 0
    private var ends = 0
    private var responses = 0
    /// Body rate accounting: bytes, and nanoseconds a read was outstanding, in the current window.
    private var windowBytes = 0
    private var waited: Int64 = 0
    private var readSince: NIODeadline?
    private var closed = false
    /// Set by an Upgrade or CONNECT request: the decoder parses nothing after it, so whatever
    /// follows is only buffered; the connection ends with that request's answer.
    private var lastRequest = false
    private var afterLast = 0
    /// Bytes written to the socket since the connection last settled (idle or the next head).
    private var written: UInt64 = 0
    /// Write-stall accounting: bytes the client acknowledged at the last check, and when it last took any.
    private var lastAcked: UInt64?
    private var lastProgress = NIODeadline.now()

    init(ticket: HTTPConnectionBook.Ticket, book: HTTPConnectionBook, limits: HTTPLimits) {
        self.ticket = ticket
        self.book = book
        self.limits = limits
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if context.channel.isActive { startHead(context) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        cancelTimers()
        book.close(ticket)
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        startHead(context)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        closed = true
        cancelTimers()
        book.close(ticket)
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let n = unwrapInboundIn(data).readableBytes
        if lastRequest {
            afterLast += n
            if afterLast > Self.maxPendingBytes {
                close(context)
                return
            }
        }
        if let since = readSince {
            waited += NIODeadline.now().uptimeNanoseconds > since.uptimeNanoseconds
                ? Int64(NIODeadline.now().uptimeNanoseconds - since.uptimeNanoseconds) : 0
            readSince = nil
        }
        switch phase {
        case .closing:
            // After a 408: dropped, not decoded; a client that keeps sending is cut off.
            headBytes += n
            if headBytes > Self.maxPendingBytes { close(context) }
            return
        case .idle:
            // The first byte of the next request: its head has the head deadline.
            phase = .awaitingHead
            book.set(ticket, .awaitingHead)
            headBytes = n
            armHeadTimer(context)
        case .awaitingHead:
            headBytes += n
        case .readingBody:
            windowBytes += n
        case .answering, .draining, .lingering:
            // Once the request was read, bytes are the next request's head: its deadline starts
            // when this response ends (see `settle`).
            if ends >= heads {
                headBytes += n
                // Bytes the decoder will not parse yet pile up in its buffer: after an Upgrade
                // or CONNECT request it stops parsing for good. No head is this large.
                if headBytes > Self.maxPendingBytes {
                    close(context)
                    return
                }
            }
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        written &+= UInt64(unwrapOutboundIn(data).readableBytes)
        context.write(data, promise: promise)
    }

    func read(context: ChannelHandlerContext) {
        if readSince == nil { readSince = .now() }
        context.read()
    }

    // MARK: from the observer

    /// A request head was decoded; `body`: whether a body follows.
    func requestHead(body: Bool, authenticated: Bool, expectsContinue: Bool = false, last: Bool = false) {
        guard let context else { return }
        if last { lastRequest = true }
        // Only when no earlier response is under way (the interim reply would land inside it).
        if body, expectsContinue, responses >= heads, phase != .answering, phase != .draining, phase != .lingering {
            // The client waits for leave to send its body (RFC 9110 10.1.1); it gets it at once,
            // so its body rate is measured from here (nginx does the same when it reads a body).
            context.writeAndFlush(NIOAny(IOData.byteBuffer(ByteBuffer(string: "HTTP/1.1 100 Continue\r\n\r\n"))), promise: nil)
        }
        heads += 1
        if authenticated { book.authenticated(ticket) }
        timer?.cancel()
        timer = nil
        headBytes = 0
        book.set(ticket, .active)
        startStallChecks(context)
        if body {
            phase = .readingBody
            startBodyWindow(context)
        } else {
            phase = .answering
        }
    }

    /// A request's end was decoded.
    func requestEnd() {
        ends += 1
        if phase == .readingBody || phase == .lingering {
            timer?.cancel()
            timer = nil
            phase = .answering
        }
        settle()
    }

    /// A response's end was written to the socket.
    func responseEnd() {
        responses += 1
        guard let context else { return }
        if lastRequest, responses >= heads {
            close(context)  // no upgrade is offered: the connection ends with the answer
            return
        }
        if ends < responses {
            // Answered before its body was read: the rest is not wanted, and draining it at the
            // sender's pace must not keep the connection busy (or undisplaceable) for long.
            phase = .lingering
            book.set(ticket, .idle)
            closeUnlessLeft(.lingering, after: limits.headTimeout, counting: .linger, context)
            return
        }
        settle()
    }

    /// Idle when every request read was answered, the kernel delivered the answer, and nothing
    /// of the next request came.
    private func settle() {
        guard let context, phase == .answering || phase == .draining, responses >= heads, ends >= heads else { return }
        // The kernel cannot hold more than was written since the connection last settled: only
        // a larger answer needs the socket asked (a getsockopt per response otherwise).
        if written > Self.drainThreshold, let info = TCPProgress.read(context.channel), info.queued > Self.drainThreshold {
            phase = .draining
            startStallChecks(context)
            return
        }
        written = 0
        phase = .answering
        if headBytes > 0 {
            // Part of the next head came while this one was answered: it has the head deadline,
            // not the idle one.
            phase = .awaitingHead
            book.set(ticket, .awaitingHead)
            armHeadTimer(context)
            return
        }
        phase = .idle
        book.set(ticket, .idle)
        closeUnlessLeft(.idle, after: limits.idleTimeout, counting: .idle, context)
    }

    /// Closes the connection `after` from now unless it has left `phase` by then, counting `reason`.
    private func closeUnlessLeft(_ phase: Phase, after: Duration, counting reason: HTTPConnectionBook.Closing?, _ context: ChannelHandlerContext) {
        timer?.cancel()
        timer = context.eventLoop.assumeIsolated().scheduleTask(in: Self.amount(after)) { [weak self] in
            guard let self, let context = self.context, self.phase == phase else { return }
            if let reason { self.book.count(reason) }
            self.close(context)
        }
    }

    // MARK: deadlines

    private func startHead(_ context: ChannelHandlerContext) {
        guard timer == nil, phase == .awaitingHead else { return }
        armHeadTimer(context)
    }

    private func armHeadTimer(_ context: ChannelHandlerContext) {
        timer?.cancel()
        timer = context.eventLoop.assumeIsolated().scheduleTask(in: Self.amount(limits.headTimeout)) { [weak self] in
            guard let self, let context = self.context, self.phase == .awaitingHead else { return }
            self.book.count(.headTimeout)
            if self.headBytes > 0 {
                // Part of a head came: say why before closing (nginx answers 408 here too).
                let reply = "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
                self.phase = .closing
                self.book.set(self.ticket, .idle)
                context.writeAndFlush(NIOAny(IOData.byteBuffer(ByteBuffer(string: reply)))).assumeIsolated().whenComplete { [weak self] _ in
                    guard let self, !self.closed else { return }
                    // The 408, then FIN; the rest of what the client sends is dropped for at most
                    // a second (nginx's lingering close), then the connection closes.
                    context.close(mode: .output, promise: nil)
                    self.closeUnlessLeft(.closing, after: .seconds(1), counting: nil, context)
                }
            } else {
                self.close(context)
            }
        }
    }

    private func startBodyWindow(_ context: ChannelHandlerContext) {
        windowBytes = 0
        waited = 0
        if readSince != nil { readSince = .now() }
        timer?.cancel()
        timer = context.eventLoop.assumeIsolated().scheduleTask(in: Self.amount(limits.bodyWindow)) { [weak self] in
            guard let self, let context = self.context, self.phase == .readingBody else { return }
            var waited = self.waited
            if let since = self.readSince {
                waited += Int64(NIODeadline.now().uptimeNanoseconds &- since.uptimeNanoseconds)
                self.readSince = .now()
            }
            let window = self.limits.bodyWindow.nanoseconds
            let expected = Double(self.limits.minBodyRate) * Double(waited) / 1e9
            if waited * 2 >= window, Double(self.windowBytes) < expected {
                self.book.count(.bodyTimeout)
                self.phase = .answering
                // The handler reading the body sees this error and answers 408; the
                // connection is closed once that is written (or after a last grace period).
                context.fireErrorCaught(
                    HTTPError(.requestTimeout, message: "the request body arrived slower than \(self.limits.minBodyRate) bytes/s"))
                self.timer = context.eventLoop.assumeIsolated().scheduleTask(in: .seconds(5)) { [weak self] in
                    guard let self, let context = self.context else { return }
                    self.close(context)
                }
                return
            }
            self.startBodyWindow(context)
        }
    }

    // MARK: stalled readers

    /// While a response is owed, checks every quarter of `writeStallTimeout` (at least 1 s)
    /// whether the client took any of what was sent: on Linux from the socket's TCP_INFO (bytes
    /// acknowledged, bytes queued), since the kernel's autotuned send buffer holds megabytes
    /// before the channel reports unwritable; elsewhere from the channel's writability.
    private func startStallChecks(_ context: ChannelHandlerContext) {
        guard stallTimer == nil else { return }
        lastProgress = .now()
        lastAcked = nil
        scheduleStallCheck(context)
    }

    private func scheduleStallCheck(_ context: ChannelHandlerContext) {
        // Draining is checked every second, so a delivered answer turns idle promptly.
        let every = phase == .draining ? Int64(1_000_000_000) : max(Int64(1_000_000_000), limits.writeStallTimeout.nanoseconds / 4)
        stallTimer = context.eventLoop.assumeIsolated().scheduleTask(in: .nanoseconds(every)) { [weak self] in
            guard let self, let context = self.context, !self.closed else { return }
            self.stallTimer = nil
            // Nothing owed and nothing in flight: no checks until the next head.
            guard self.heads > self.responses || self.phase == .draining else { return }
            let now = NIODeadline.now()
            let progress: Bool
            if let info = TCPProgress.read(context.channel) {
                if self.phase == .draining, info.queued <= Self.drainThreshold {
                    self.settle()  // delivered: idle now (or the next head's deadline)
                    return
                }
                progress = info.acked != self.lastAcked || (info.queued == 0 && context.channel.isWritable)
                self.lastAcked = info.acked
            } else {
                progress = context.channel.isWritable
            }
            if progress { self.lastProgress = now }
            if now - self.lastProgress >= Self.amount(self.limits.writeStallTimeout) {
                self.book.count(.writeStall)
                self.close(context)
                return
            }
            self.scheduleStallCheck(context)
        }
    }

    private func close(_ context: ChannelHandlerContext) {
        guard !closed else { return }
        closed = true
        cancelTimers()
        context.close(promise: nil)
    }

    private func cancelTimers() {
        timer?.cancel()
        timer = nil
        stallTimer?.cancel()
        stallTimer = nil
    }

    static func amount(_ d: Duration) -> TimeAmount { .nanoseconds(Int64(d.nanoseconds)) }

    /// Unparsed bytes after a complete request held at most (twice the 32 KiB head limit).
    static let maxPendingBytes = 64 << 10
    /// A response is delivered (the connection may turn idle) once the kernel holds at most this
    /// much of it for the client: waiting for the last ACK of a small answer would keep every
    /// connection busy, and undisplaceable, for a round of delayed ACKs.
    static let drainThreshold: UInt64 = 64 << 10
}

/// What a TCP socket's send side has done, from Linux's TCP_INFO.
enum TCPProgress {
    struct Info {
        /// Bytes the peer acknowledged in all; bytes the kernel still holds for it (unacknowledged
        /// segments times the segment size, an upper estimate, plus bytes not sent yet).
        var acked: UInt64
        var queued: UInt64
    }

    /// Room for `struct tcp_info` (232 bytes on Linux 6; the kernel fills what it has).
    struct Raw: Sendable { var bytes = SIMD32<UInt64>() }

    static func read(_ channel: any Channel) -> Info? {
        #if os(Linux)
            guard let provider = channel as? any SocketOptionProvider else { return nil }
            let future: EventLoopFuture<Raw> = provider.unsafeGetSocketOption(
                level: SocketOptionLevel(IPPROTO_TCP), name: SocketOptionName(TCP_INFO))
            // On the channel's own loop the option is read at once.
            var result: Raw?
            future.whenSuccess { result = $0 }
            guard let raw = result else { return nil }
            return withUnsafeBytes(of: raw.bytes) { b -> Info in
                // Offsets of tcpi_snd_mss (u32, 16), tcpi_unacked (segments, u32, 24),
                // tcpi_bytes_acked (u64, 120) and tcpi_notsent_bytes (u32, 144) in the kernel's
                // struct tcp_info (stable ABI).
                let mss = UInt64(b.loadUnaligned(fromByteOffset: 16, as: UInt32.self))
                let unacked = UInt64(b.loadUnaligned(fromByteOffset: 24, as: UInt32.self))
                let acked = b.loadUnaligned(fromByteOffset: 120, as: UInt64.self)
                let notSent = UInt64(b.loadUnaligned(fromByteOffset: 144, as: UInt32.self))
                return Info(acked: acked, queued: unacked * max(mss, 1) + notSent)
            }
        #else
            return nil
        #endif
    }
}

/// Behind the HTTP codec: tells the connection's guard where each request is (head, end, the
/// response's end) and whether its head carried the API or control token.
final class RequestObserver: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    let guardHandler: ConnectionGuard
    let bearer: [UInt8]?
    let control: [UInt8]?

    init(guard: ConnectionGuard, token: String?, controlToken: String?) {
        guardHandler = `guard`
        bearer = token.flatMap { $0.isEmpty ? nil : Array($0.utf8) }
        control = controlToken.flatMap { $0.isEmpty ? nil : Array($0.utf8) }
    }

    /// Whether the head carries the API token (`Authorization: Bearer …`) or the control token
    /// (`X-Kiana-Control-Token`), compared in constant time.
    func authenticated(_ fields: HTTPFields) -> Bool {
        var ok = false
        if let bearer, let given = fields[.authorization] {
            ok = ok || BearerTokenMiddleware<KianaRequestContext>.matches(given, token: bearer)
        }
        if let control, let given = fields[ControlSurface.header] {
            ok = ok || BearerTokenMiddleware<KianaRequestContext>.equal(Array(given.utf8), control)
        }
        return ok
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            let length = head.headerFields[.contentLength].flatMap { Int($0) } ?? 0
            let chunked = head.headerFields[.transferEncoding]?.lowercased().contains("chunked") ?? false
            let hasToken = authenticated(head.headerFields)
            // Leave to send the body is given only to requests the token check will let through.
            let expects = head.headerFields[.expect]?.lowercased() == "100-continue" && (bearer == nil || hasToken)
            let upgrade = head.method == .connect || (head.headerFields[.connection]?.lowercased().contains("upgrade") ?? false)
            guardHandler.requestHead(body: length > 0 || chunked, authenticated: hasToken, expectsContinue: expects, last: upgrade)
        case .body:
            break
        case .end:
            guardHandler.requestEnd()
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard case .end = unwrapOutboundIn(data) else {
            context.write(data, promise: promise)
            return
        }
        // The response counts as ended once it is written to the socket, not when it is queued:
        // a large answer may wait in NIO's buffer for a slow reader.
        let written = promise ?? context.eventLoop.makePromise(of: Void.self)
        let guardHandler = NIOLoopBound(self.guardHandler, eventLoop: context.eventLoop)
        written.futureResult.whenSuccess { guardHandler.value.responseEnd() }
        context.write(data, promise: written)
    }
}

extension Duration {
    /// The whole duration in nanoseconds (saturating).
    var nanoseconds: Int64 {
        let (s, a) = components
        let (m, o) = s.multipliedReportingOverflow(by: 1_000_000_000)
        return o ? .max : m &+ a / 1_000_000_000
    }
}
