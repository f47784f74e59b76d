import NIOCore
import Synchronization

/// The sizes of the admission controller's pools; `LinkConfig` holds them for a node.
public struct AdmissionLimits: Sendable, Equatable {
    /// Inbound connections still in their handshake (preamble, Noise XX, hello), at most.
    public var pending: Int
    /// Of those, at most this many from one source address.
    public var pendingPerSource: Int
    /// Inbound member links (handshake done, an authority admitted), at most.
    public var members: Int
    /// Inbound pairing links (handshake done while a pairing window was open), at most.
    public var pairing: Int
    /// Pending slots beyond `pending` that only addresses a member link recently came from may
    /// take, so a member that reconnects finds room even when strangers on other addresses fill
    /// the pool.
    public var memberReserve: Int
    /// How long an address counts as a member's after its last member link ended.
    public var memberAddressMemory: Duration
    /// Member addresses remembered at most (the oldest without a live link are forgotten first).
    public var memberAddressCapacity: Int

    public init(
        pending: Int = 32, pendingPerSource: Int = 4, members: Int = 64, pairing: Int = 4, memberReserve: Int = 8,
        memberAddressMemory: Duration = .seconds(3600), memberAddressCapacity: Int = 256
    ) {
        self.pending = pending
        self.pendingPerSource = pendingPerSource
        self.members = members
        self.pairing = pairing
        self.memberReserve = memberReserve
        self.memberAddressMemory = memberAddressMemory
        self.memberAddressCapacity = memberAddressCapacity
    }

    /// The pools `config` asks for.
    public init(_ config: LinkConfig) {
        self.init(
            pending: config.maxPendingHandshakes, pendingPerSource: config.maxPendingPerSource, members: config.maxConnections,
            pairing: config.maxPairingLinks, memberReserve: config.memberReserve)
    }
}

/// What the admission controller has seen, for status and metrics. The `refused…`, `handshakes…`
/// and `completed` figures count since the node started; `pending`, `members` and `pairing` are
/// the connections held now.
public struct AdmissionStats: Sendable, Equatable, Codable {
    /// Inbound connections in their handshake now.
    public var pending = 0
    /// Inbound member links now.
    public var members = 0
    /// Inbound pairing links now.
    public var pairing = 0
    /// Connections closed on arrival because the pending pool was full.
    public var refusedPoolFull = 0
    /// Connections closed on arrival because their source address held its share of the pool.
    public var refusedPerSource = 0
    /// Handshakes that passed but found the member (or pairing) pool full.
    public var refusedMembersFull = 0
    /// Handshakes cut off at the handshake deadline.
    public var handshakesTimedOut = 0
    /// Handshakes that failed otherwise (closed, refused, malformed, forged, another network).
    public var handshakesFailed = 0
    /// Handshakes that ended in a link.
    public var handshakesCompleted = 0

    public init() {}

    /// All connections refused on arrival or for a full member pool.
    public var refused: Int { refusedPoolFull + refusedPerSource + refusedMembersFull }
    /// Inbound connections open now, handshakes included.
    public var open: Int { pending + members + pairing }
}

/// Admission of inbound connections, in two pools so strangers cannot take the room of members.
///
/// A new TCP connection takes a slot of the *pending* pool (`AdmissionLimits.pending` in all,
/// `pendingPerSource` from one address) before any handshake work; when there is none it is
/// closed at once. A handshake holds its slot at most `LinkConfig.handshakeTimeout` (2 s by
/// default), so the pool turns over even when every holder stalls. A connection whose handshake proves an admitted authority key moves to the
/// *member* pool (`members`), which only such connections reach, so a member link is never
/// refused for room that strangers hold: strangers can only ever fill the pending pool, and from
/// one address only its per-source share. Addresses a member link came from within
/// `memberAddressMemory` may also use `memberReserve` pending slots beyond the pool, so a member
/// that reconnects gets in even while strangers on many addresses fill it.
///
/// Pairing links (a joiner fetching the ledger while the owner's pairing window is open) move to
/// a small pool of their own (`pairing`, default 4) rather than holding a pending slot for their
/// whole life: a joiner may stay for minutes, and pending slots must turn over within the
/// handshake timeout.
///
/// Sources are IP addresses (an IPv4-mapped IPv6 address counts as its IPv4 one), not prefixes:
/// devices of one LAN share its prefix. Loopback is not exempt. A member behind the same address
/// as a flooder (one NAT) shares that address's share; it still has the other way in, since
/// links this device dials are not admitted here (its dialer dials the peers it knows).
/// Pure bookkeeping: no sockets, no clocks of its own.
public final class Admission: Sendable {
    /// Why a connection was refused.
    public enum Refusal: String, Sendable, Equatable, CustomStringConvertible {
        case poolFull = "too many handshakes in progress"
        case sourceFull = "too many handshakes in progress from this address"
        case membersFull = "too many member links"
        case pairingFull = "too many pairing links"
        public var description: String { rawValue }
    }

    /// How a connection's handshake ended, for the counters.
    public enum Outcome: Sendable {
        case completed, timedOut, failed
    }

    /// One admitted connection; give it back with `close` when the connection ends.
    public struct Ticket: Sendable, Hashable {
        public let id: UInt64
        public let source: String
    }

    /// What `open` gives a new connection.
    public enum Opening: Sendable, Equatable {
        case admitted(Ticket)
        case refused(Refusal)
    }

    enum Pool { case pending, member, pairing }

    struct MemberAddress {
        var live = 0
        var lastSeen: ContinuousClock.Instant
    }

    struct State {
        var limits: AdmissionLimits
        var nextID: UInt64 = 1
        var held: [UInt64: Pool] = [:]
        var perSource: [String: Int] = [:]
        var memberAddresses: [String: MemberAddress] = [:]
        var stats = AdmissionStats()
    }

    private let state: Mutex<State>

    public init(limits: AdmissionLimits = AdmissionLimits()) {
        state = Mutex(State(limits: limits))
    }

    /// The pools' sizes now; `setLimits` changes them for connections that arrive later.
    public var limits: AdmissionLimits { state.withLock { $0.limits } }
    public func setLimits(_ limits: AdmissionLimits) { state.withLock { $0.limits = limits } }

    public var stats: AdmissionStats { state.withLock { $0.stats } }

    /// A pending-handshake slot for a new connection from `source`, or why there is none.
    public func open(source: String, now: ContinuousClock.Instant = .now) -> Opening {
        state.withLock { s in
            let fromSource = s.perSource[source, default: 0]
            guard fromSource < s.limits.pendingPerSource else {
                s.stats.refusedPerSource += 1
                return .refused(.sourceFull)
            }
            var room = s.limits.pending
            if let m = s.memberAddresses[source], m.live > 0 || now - m.lastSeen < s.limits.memberAddressMemory {
                room += s.limits.memberReserve
            }
            guard s.stats.pending < room else {
                s.stats.refusedPoolFull += 1
                return .refused(.poolFull)
            }
            let ticket = Ticket(id: s.nextID, source: source)
            s.nextID += 1
            s.held[ticket.id] = .pending
            s.perSource[source] = fromSource + 1
            s.stats.pending += 1
            return .admitted(ticket)
        }
    }

    /// Moves a connection whose handshake proved an admitted key from the pending pool to the
    /// member or pairing pool; nil when it moved (or had already), else why it may not stay.
    /// A refused connection keeps its pending slot until `close`.
    public func promote(_ ticket: Ticket, to mode: LinkPreamble.Mode, now: ContinuousClock.Instant = .now) -> Refusal? {
        state.withLock { s in
            guard s.held[ticket.id] == .pending else { return nil }
            switch mode {
            case .member:
                guard s.stats.members < s.limits.members else {
                    s.stats.refusedMembersFull += 1
                    return .membersFull
                }
                s.stats.members += 1
                s.held[ticket.id] = .member
                Self.remember(ticket.source, now: now, in: &s)
            case .pairing:
                guard s.stats.pairing < s.limits.pairing else {
                    s.stats.refusedMembersFull += 1
                    return .pairingFull
                }
                s.stats.pairing += 1
                s.held[ticket.id] = .pairing
            }
            Self.leavePending(ticket, in: &s)
            return nil
        }
    }

    /// Gives the connection's slot back and counts how its handshake ended.
    public func close(_ ticket: Ticket, outcome: Outcome, now: ContinuousClock.Instant = .now) {
        state.withLock { s in
            guard let pool = s.held.removeValue(forKey: ticket.id) else { return }
            switch pool {
            case .pending: Self.leavePending(ticket, in: &s)
            case .member:
                s.stats.members -= 1
                if var m = s.memberAddresses[ticket.source] {
                    m.live -= 1
                    m.lastSeen = now
                    s.memberAddresses[ticket.source] = m
                }
            case .pairing: s.stats.pairing -= 1
            }
            switch outcome {
            case .completed: s.stats.handshakesCompleted += 1
            case .timedOut: s.stats.handshakesTimedOut += 1
            case .failed: s.stats.handshakesFailed += 1
            }
        }
    }

    static func leavePending(_ ticket: Ticket, in s: inout State) {
        s.stats.pending -= 1
        let left = s.perSource[ticket.source, default: 1] - 1
        s.perSource[ticket.source] = left > 0 ? left : nil
    }

    static func remember(_ source: String, now: ContinuousClock.Instant, in s: inout State) {
        if s.memberAddresses[source] == nil, s.memberAddresses.count >= s.limits.memberAddressCapacity,
            let oldest = s.memberAddresses.filter({ $0.value.live == 0 }).min(by: { $0.value.lastSeen < $1.value.lastSeen })?.key
        {
            s.memberAddresses[oldest] = nil
        }
        s.memberAddresses[source, default: MemberAddress(lastSeen: now)].live += 1
        s.memberAddresses[source]?.lastSeen = now
    }

    /// The source a connection from `address` counts against: its IP address (an IPv4-mapped
    /// IPv6 address as the IPv4 one), "?" when unknown.
    public static func source(of address: SocketAddress?) -> String {
        guard let ip = address?.ipAddress else { return "?" }
        let lower = ip.lowercased()
        if lower.hasPrefix("::ffff:"), lower.contains(".") { return String(lower.dropFirst(7)) }
        return lower
    }
}

