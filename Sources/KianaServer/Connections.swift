import Synchronization

/// Deadlines and caps of the HTTP listener (docs/decisions.md 102 gives the reasons for the
/// defaults). `KianaNode` sets them from `http.*` settings and shrinks `maxConnections` to the
/// listener's share of the descriptor budget.
public struct HTTPLimits: Sendable, Equatable {
    /// A request head must arrive within this time of the connection opening (or of the first
    /// byte of the next request on a kept-alive connection); bytes that trickle in do not extend it.
    public var headTimeout: Duration = .seconds(10)
    /// A kept-alive connection with no request in progress is closed after this time.
    public var idleTimeout: Duration = .seconds(60)
    /// A request body must arrive at this many bytes per second or faster, measured over
    /// `bodyWindow` while the server waits for it; slower bodies are answered 408.
    public var minBodyRate: Int = 500
    public var bodyWindow: Duration = .seconds(10)
    /// A response (an event stream, a streamed answer) whose client reads nothing for this
    /// long while the write buffer is full is closed.
    public var writeStallTimeout: Duration = .seconds(30)
    /// Concurrent connections at most (the listener's share of the descriptor budget).
    public var maxConnections: Int = 1024
    /// Concurrent connections from one source address at most.
    public var maxPerSource: Int = 64
    /// Of `maxConnections`, this many only trusted clients (loopback, or an address that sent the
    /// token) may take.
    public var trustedReserve: Int = 64
    /// How long an address that sent a valid token stays trusted after its last request.
    public var trustMemory: Duration = .seconds(3600)
    /// Listen backlog (the kernel caps it at net.core.somaxconn).
    public var backlog: Int = 1024

    public init() {}

    /// Room strangers may take: `maxConnections` less the trusted reserve (at least 1).
    public var strangerCap: Int { max(1, maxConnections - trustedReserve) }
}

/// What the HTTP listener has seen: the connections open now by phase, and counters since start.
public struct HTTPConnectionStats: Sendable, Equatable, Codable {
    /// Connections open now.
    public var open = 0
    /// Of those: waiting for a request head, serving a request, kept alive between requests.
    public var awaitingHead = 0
    public var active = 0
    public var idle = 0
    /// Of those, from trusted clients (loopback, or an address that sent the token).
    public var trusted = 0
    /// The cap in force (after the descriptor budget) and the per-source cap.
    public var cap = 0
    public var perSourceCap = 0
    /// Connections reset on arrival: no room in the pool / for their source address.
    public var refusedFull = 0
    public var refusedPerSource = 0
    /// Connections closed to make room for a newer one: idle ones, then ones still without a head.
    public var evictedIdle = 0
    public var evictedAwaitingHead = 0
    /// Connections closed at a deadline.
    public var headTimeouts = 0
    public var bodyTimeouts = 0
    public var writeStalls = 0
    public var idleClosed = 0
    /// Connections closed while the body of a request already answered was still coming.
    public var lingerClosed = 0

    public init() {}

    /// All connections refused on arrival.
    public var refused: Int { refusedFull + refusedPerSource }
}

/// Admission of HTTP connections: who may hold one of the listener's descriptors.
///
/// Every connection is counted from the moment it is accepted, before anything is read. A new
/// connection over its source's share (`maxPerSource`) or over the pool (`strangerCap` for
/// strangers, `maxConnections` for trusted clients) is admitted in place of the least useful
/// connection it may displace — the oldest idle keep-alive connection, else the one that has
/// waited longest without sending a complete request head — and refused only when every
/// connection it could displace is serving a request. A connection serving a request is never
/// displaced, so no request that was read is lost to a newcomer. Strangers displace only
/// strangers; trusted clients (127.0.0.1, ::1, or an address that sent the token within
/// `trustMemory`) displace strangers first. A slow-loris flood therefore only churns its own
/// connections: a client that sends its head promptly is past the displaceable phase within
/// a round trip. Pure bookkeeping: the caller's `close` closure does the closing.
public final class HTTPConnectionBook: Sendable {
    /// Where a connection is in its life.
    public enum Phase: Sendable, Equatable {
        case awaitingHead, active, idle
    }

    /// Why a connection was refused.
    public enum Refusal: String, Sendable, Equatable, CustomStringConvertible {
        case full = "too many HTTP connections"
        case sourceFull = "too many HTTP connections from this address"
        public var description: String { rawValue }
    }

    /// A deadline that closed a connection, for the counters.
    public enum Closing: Sendable {
        case headTimeout, bodyTimeout, writeStall, idle, linger
    }

    /// One admitted connection; give it back with `close` when the connection ends.
    public struct Ticket: Sendable, Hashable {
        public let id: UInt64
        public let source: String
    }

    /// A connection closed to make room: its source, the phase it was in, and how to close it.
    public struct Displaced: Sendable {
        public var source: String
        public var phase: Phase
        public var close: @Sendable () -> Void
    }

    /// What `open` gives a new connection: a ticket and the connections to close for its room,
    /// or a refusal.
    public enum Opening: Sendable {
        case admitted(Ticket, displaced: [Displaced])
        case refused(Refusal)
    }

    struct Connection {
        var source: String
        var trusted: Bool
        var phase: Phase
        /// Bumped on every phase change; queue entries with an older mark are stale.
        var mark: UInt64
        var close: @Sendable () -> Void
    }

    /// First-in-first-out with lazy removal: an entry whose connection left the phase it was
    /// queued for (or closed) is skipped when it reaches the front.
    struct Queue {
        var items: [(id: UInt64, mark: UInt64)] = []
        var head = 0
        mutating func push(_ id: UInt64, _ mark: UInt64) {
            if head > 64, head * 2 > items.count {
                items.removeFirst(head)
                head = 0
            }
            items.append((id, mark))
        }
        /// The oldest entry still current, dropping stale ones.
        mutating func front(_ current: (UInt64, UInt64) -> Bool) -> UInt64? {
            while head < items.count {
                let e = items[head]
                if current(e.id, e.mark) { return e.id }
                head += 1
            }
            items.removeAll(keepingCapacity: true)
            head = 0
            return nil
        }
        var isEmpty: Bool { head >= items.count }
        /// Entries still queued (stale ones included).
        var count: Int { items.count - head }
        /// Drops every stale entry, keeping order.
        mutating func compact(_ current: (UInt64, UInt64) -> Bool) {
            items = items[head...].filter { current($0.id, $0.mark) }
            head = 0
        }
    }

    struct Queues {
        var idle = Queue()
        var awaitingHead = Queue()
    }

    struct State {
        var limits: HTTPLimits
        var next: UInt64 = 1
        var mark: UInt64 = 1
        var connections: [UInt64: Connection] = [:]
        var perSource: [String: Int] = [:]
        var strangers = 0
        /// Displaceable connections in arrival (or phase) order: strangers, trusted, per source.
        var strangerQueues = Queues()
        var trustedQueues = Queues()
        var sourceQueues: [String: Queues] = [:]
        /// Addresses that sent a valid token, with when they last did.
        var tokenSources: [String: ContinuousClock.Instant] = [:]
        var stats = HTTPConnectionStats()
    }

    private let state: Mutex<State>
    /// Most token-holding addresses remembered.
    static let tokenSourceCapacity = 256

    public init(limits: HTTPLimits = HTTPLimits()) {
        state = Mutex(State(limits: limits))
    }

    public var limits: HTTPLimits { state.withLock { $0.limits } }

    /// Connections open now and counters since start.
    public var stats: HTTPConnectionStats {
        state.withLock { s in
            var out = s.stats
            out.open = s.connections.count
            out.awaitingHead = 0
            out.active = 0
            out.idle = 0
            out.trusted = 0
            for c in s.connections.values {
                switch c.phase {
                case .awaitingHead: out.awaitingHead += 1
                case .active: out.active += 1
                case .idle: out.idle += 1
                }
                if c.trusted { out.trusted += 1 }
            }
            out.cap = s.limits.maxConnections
            out.perSourceCap = s.limits.maxPerSource
            return out
        }
    }

    /// Whether `source` is trusted before it sends anything: the device's own loopback
    /// addresses, or an address that sent the token within `trustMemory`.
    static func isLoopbackSource(_ source: String) -> Bool { source == "127.0.0.1" || source == "::1" }

    /// Admits a connection from `source` arriving `now`, or refuses it; `close` closes it (when a
    /// later arrival displaces it).
    public func open(source: String, now: ContinuousClock.Instant = .now, close: @escaping @Sendable () -> Void) -> Opening {
        state.withLock { s -> Opening in
            var trusted = Self.isLoopbackSource(source)
            if !trusted, let seen = s.tokenSources[source] {
                if now - seen < s.limits.trustMemory { trusted = true } else { s.tokenSources[source] = nil }
            }
            // The source's own share first: it displaces its own least useful connection.
            var victims: [UInt64] = []
            if s.perSource[source, default: 0] >= s.limits.maxPerSource {
                guard let victim = Self.displaceable(&s, source: source) else {
                    s.stats.refusedPerSource += 1
                    return .refused(.sourceFull)
                }
                victims.append(victim)
            }
            let freedStranger = victims.first.map { s.connections[$0]?.trusted == false } ?? false
            let total = s.connections.count - victims.count
            let strangers = s.strangers - (freedStranger ? 1 : 0)
            let full = trusted ? total >= s.limits.maxConnections : (strangers >= s.limits.strangerCap || total >= s.limits.maxConnections)
            if full {
                // Strangers displace strangers only; trusted clients strangers first, then trusted.
                let victim = Self.displaceable(&s, trusted: false) ?? (trusted ? Self.displaceable(&s, trusted: true) : nil)
                guard let victim, !victims.contains(victim) else {
                    s.stats.refusedFull += 1
                    return .refused(.full)
                }
                victims.append(victim)
            }
            let displaced = victims.map { Self.remove(&s, $0, displaced: true) }
            let id = s.next
            s.next += 1
            let mark = Self.bump(&s)
            s.connections[id] = Connection(source: source, trusted: trusted, phase: .awaitingHead, mark: mark, close: close)
            s.perSource[source, default: 0] += 1
            if !trusted { s.strangers += 1 }
            Self.enqueue(&s, id)
            return .admitted(Ticket(id: id, source: source), displaced: displaced)
        }
    }

    /// Moves a connection to `phase`.
    public func set(_ ticket: Ticket, _ phase: Phase) {
        state.withLock { s in
            guard var c = s.connections[ticket.id], c.phase != phase else { return }
            c.phase = phase
            c.mark = Self.bump(&s)
            s.connections[ticket.id] = c
            Self.enqueue(&s, ticket.id)
        }
    }

    /// The connection sent a valid token: it and its address are trusted from now on.
    public func authenticated(_ ticket: Ticket, now: ContinuousClock.Instant = .now) {
        state.withLock { s in
            if s.tokenSources[ticket.source] == nil, s.tokenSources.count >= Self.tokenSourceCapacity,
                let oldest = s.tokenSources.min(by: { $0.value < $1.value })?.key
            {
                s.tokenSources[oldest] = nil
            }
            s.tokenSources[ticket.source] = now
            guard var c = s.connections[ticket.id], !c.trusted else { return }
            c.trusted = true
            c.mark = Self.bump(&s)
            s.connections[ticket.id] = c
            s.strangers -= 1
            Self.enqueue(&s, ticket.id)
        }
    }

    /// Counts a connection closed at a deadline.
    public func count(_ closing: Closing) {
        state.withLock { s in
            switch closing {
            case .headTimeout: s.stats.headTimeouts += 1
            case .bodyTimeout: s.stats.bodyTimeouts += 1
            case .writeStall: s.stats.writeStalls += 1
            case .idle: s.stats.idleClosed += 1
            case .linger: s.stats.lingerClosed += 1
            }
        }
    }

    /// The connection ended; its room is free. Calling it again (or for a displaced connection) does nothing.
    public func close(_ ticket: Ticket) {
        state.withLock { s in
            guard s.connections[ticket.id] != nil else { return }
            Self.remove(&s, ticket.id, displaced: false)
        }
    }

    /// Changes the limits (connections over a lowered cap stay until they end).
    public func setLimits(_ limits: HTTPLimits) {
        state.withLock { $0.limits = limits }
    }

    // MARK: bookkeeping

    private static func bump(_ s: inout State) -> UInt64 {
        s.mark += 1
        return s.mark
    }

    /// Queues a connection in its phase's queues (active connections are never displaced).
    private static func enqueue(_ s: inout State, _ id: UInt64) {
        guard let c = s.connections[id] else { return }
        func push(_ q: inout Queues) {
            switch c.phase {
            case .idle: q.idle.push(id, c.mark)
            case .awaitingHead: q.awaitingHead.push(id, c.mark)
            case .active: break
            }
        }
        guard c.phase != .active else { return }
        if c.trusted { push(&s.trustedQueues) } else { push(&s.strangerQueues) }
        push(&s.sourceQueues[c.source, default: Queues()])
        // Entries go stale as connections change phase or close, and only displacement pops
        // them; without pressure, compact once a queue holds far more than its live entries
        // (amortised O(1) per change, memory proportional to the connections open).
        let connections = s.connections
        let live: (UInt64, UInt64) -> Bool = { id, mark in connections[id]?.mark == mark }
        let bound = 2 * connections.count + 64
        func tidy(_ q: inout Queues, bound: Int) {
            if q.idle.count > bound { q.idle.compact(live) }
            if q.awaitingHead.count > bound { q.awaitingHead.compact(live) }
        }
        tidy(&s.strangerQueues, bound: bound)
        tidy(&s.trustedQueues, bound: bound)
        tidy(&s.sourceQueues[c.source, default: Queues()], bound: 2 * (s.perSource[c.source] ?? 0) + 64)
    }

    /// The connection to displace from a pool: the oldest idle one, else the oldest without a head.
    private static func displaceable(_ s: inout State, trusted: Bool) -> UInt64? {
        let connections = s.connections
        let current: (UInt64, UInt64) -> Bool = { id, mark in
            guard let c = connections[id] else { return false }
            return c.mark == mark && c.trusted == trusted && c.phase != .active
        }
        if trusted {
            return s.trustedQueues.idle.front(current) ?? s.trustedQueues.awaitingHead.front(current)
        }
        return s.strangerQueues.idle.front(current) ?? s.strangerQueues.awaitingHead.front(current)
    }

    /// The connection to displace for `source`'s share.
    private static func displaceable(_ s: inout State, source: String) -> UInt64? {
        guard var q = s.sourceQueues[source] else { return nil }
        let connections = s.connections
        let current: (UInt64, UInt64) -> Bool = { id, mark in
            guard let c = connections[id] else { return false }
            return c.mark == mark && c.phase != .active
        }
        let found = q.idle.front(current) ?? q.awaitingHead.front(current)
        s.sourceQueues[source] = q
        return found
    }

    /// Forgets a connection; returns what closes it.
    @discardableResult
    private static func remove(_ s: inout State, _ id: UInt64, displaced: Bool) -> Displaced {
        guard let c = s.connections.removeValue(forKey: id) else { return Displaced(source: "?", phase: .active, close: {}) }
        if displaced {
            if c.phase == .idle { s.stats.evictedIdle += 1 } else { s.stats.evictedAwaitingHead += 1 }
        }
        let n = s.perSource[c.source, default: 1] - 1
        if n <= 0 {
            s.perSource[c.source] = nil
            s.sourceQueues[c.source] = nil
        } else {
            s.perSource[c.source] = n
        }
        if !c.trusted { s.strangers -= 1 }
        return Displaced(source: c.source, phase: c.phase, close: c.close)
    }
}
