import Foundation
import KianaServer
import KianaTestSupport
import Synchronization
import Testing

/// The HTTP connection book as pure logic: per-source and pool caps, what a newcomer may
/// displace (idle first, then head-less, never a connection serving a request), the trusted
/// reserve, token-earned trust and its expiry, and the invariants under random traffic.
struct ConnectionBookTests {
    /// Records which connections were closed by displacement.
    final class Closed: Sendable {
        let ids = Mutex<[Int]>([])
        func closer(_ n: Int) -> @Sendable () -> Void { { self.ids.withLock { $0.append(n) } } }
        var all: [Int] { ids.withLock { $0 } }
    }

    struct Refused: Error { var reason: HTTPConnectionBook.Refusal }

    static func limits(max: Int, perSource: Int, reserve: Int) -> HTTPLimits {
        var l = HTTPLimits()
        l.maxConnections = max
        l.maxPerSource = perSource
        l.trustedReserve = reserve
        return l
    }

    @discardableResult
    static func admit(_ book: HTTPConnectionBook, _ source: String, _ n: Int, _ closed: Closed, now: ContinuousClock.Instant = .now) throws
        -> HTTPConnectionBook.Ticket
    {
        switch book.open(source: source, now: now, close: closed.closer(n)) {
        case .admitted(let t, let displaced):
            for d in displaced { d.close() }
            return t
        case .refused(let r):
            throw Refused(reason: r)
        }
    }

    static func refusal(_ opening: HTTPConnectionBook.Opening) -> HTTPConnectionBook.Refusal? {
        if case .refused(let r) = opening { return r }
        return nil
    }

    @Test("Over its share, a source displaces its own oldest head-less connection; never one serving a request")
    func perSourceDisplacesOldestHeadless() throws {
        let book = HTTPConnectionBook(limits: Self.limits(max: 100, perSource: 3, reserve: 10))
        let closed = Closed()
        let a = try Self.admit(book, "10.0.0.5", 1, closed)
        try Self.admit(book, "10.0.0.5", 2, closed)
        try Self.admit(book, "10.0.0.5", 3, closed)
        book.set(a, .active)
        try Self.admit(book, "10.0.0.5", 4, closed)  // displaces 2 (1 is serving a request)
        #expect(closed.all == [2])
        try Self.admit(book, "10.0.0.5", 5, closed)  // displaces 3
        #expect(closed.all == [2, 3])
        let s = book.stats
        #expect(s.open == 3 && s.active == 1 && s.awaitingHead == 2)
        #expect(s.evictedAwaitingHead == 2 && s.refused == 0)
        // Another source is untouched by this one's share.
        try Self.admit(book, "10.0.0.6", 6, closed)
        #expect(closed.all == [2, 3])
    }

    @Test("Idle keep-alive connections go before head-less ones; when every connection serves a request, the newcomer is refused")
    func idleFirstThenRefuse() throws {
        let book = HTTPConnectionBook(limits: Self.limits(max: 100, perSource: 3, reserve: 10))
        let closed = Closed()
        let t1 = try Self.admit(book, "10.0.0.5", 1, closed)
        let t2 = try Self.admit(book, "10.0.0.5", 2, closed)
        let t3 = try Self.admit(book, "10.0.0.5", 3, closed)
        book.set(t2, .active)
        book.set(t2, .idle)  // answered, kept alive: the least useful now
        try Self.admit(book, "10.0.0.5", 4, closed)
        #expect(closed.all == [2])
        #expect(book.stats.evictedIdle == 1)
        book.set(t1, .active)
        book.set(t3, .active)
        let t4 = try Self.admit(book, "10.0.0.5", 5, closed)  // displaces 4, the only head-less one
        #expect(closed.all == [2, 4])
        book.set(t4, .active)
        #expect(Self.refusal(book.open(source: "10.0.0.5", close: {})) == .sourceFull)
        #expect(book.stats.refusedPerSource == 1 && book.stats.open == 3)
        // Closing gives the share back; closing twice changes nothing.
        book.close(t1)
        book.close(t1)
        #expect(book.stats.open == 2)
        try Self.admit(book, "10.0.0.5", 6, closed)
        #expect(book.stats.open == 3)
    }

    @Test("Strangers fill at most the pool less the reserve and displace only strangers; loopback takes the reserve")
    func trustedReserve() throws {
        let book = HTTPConnectionBook(limits: Self.limits(max: 6, perSource: 100, reserve: 2))
        let closed = Closed()
        var strangers: [HTTPConnectionBook.Ticket] = []
        for i in 1...4 { strangers.append(try Self.admit(book, "192.168.1.\(i)", i, closed)) }
        for t in strangers { book.set(t, .active) }
        // The stranger pool (6 - 2) is full of requests in progress: a fifth stranger is refused…
        #expect(Self.refusal(book.open(source: "192.168.1.9", close: {})) == .full)
        // …while loopback gets the reserve, twice, without displacing anyone.
        let l1 = try Self.admit(book, "127.0.0.1", 11, closed)
        try Self.admit(book, "::1", 12, closed)
        #expect(closed.all.isEmpty)
        #expect(book.stats.trusted == 2 && book.stats.open == 6)
        // The pool is full: a trusted newcomer displaces a trusted head-less one (no stranger can go).
        try Self.admit(book, "127.0.0.1", 13, closed)
        #expect(closed.all == [11])
        _ = l1
        // A head-less stranger is displaced by a trusted newcomer before any trusted connection.
        book.close(strangers[0])
        try Self.admit(book, "192.168.1.7", 14, closed)
        try Self.admit(book, "127.0.0.1", 15, closed)
        #expect(closed.all == [11, 14])
    }

    @Test("An address that sent the token is trusted for its next connections until trustMemory passes")
    func tokenTrustExpires() throws {
        var limits = Self.limits(max: 3, perSource: 100, reserve: 1)
        limits.trustMemory = .seconds(60)
        let book = HTTPConnectionBook(limits: limits)
        let closed = Closed()
        let t0 = ContinuousClock.now
        let a = try Self.admit(book, "10.1.1.1", 1, closed, now: t0)
        book.set(a, .active)
        book.authenticated(a, now: t0)
        #expect(book.stats.trusted == 1)
        let b = try Self.admit(book, "10.2.2.2", 2, closed, now: t0)
        book.set(b, .active)
        // Strangers' room (3 - 1 = 2) is taken by b alone now (a moved to trusted), so one more
        // stranger fits; then the reserve is the token holder's.
        let c = try Self.admit(book, "10.3.3.3", 3, closed, now: t0)
        book.set(c, .active)
        #expect(Self.refusal(book.open(source: "10.4.4.4", now: t0, close: {})) == .full)
        #expect(Self.refusal(book.open(source: "10.1.1.1", now: t0 + .seconds(30), close: {})) == .full)  // pool of 3 full
        book.close(c)
        try Self.admit(book, "10.1.1.1", 4, closed, now: t0 + .seconds(30))
        #expect(book.stats.trusted == 2)
        book.close(b)
        // After trustMemory the address is a stranger again.
        book.close(a)
        let late = try Self.admit(book, "10.1.1.1", 5, closed, now: t0 + .seconds(120))
        _ = late
        #expect(book.stats.trusted == 1)
    }

    @Test("Random traffic keeps the caps: total, per source, strangers; no connection serving a request is ever displaced", arguments: [1, 2, 3, 4, 5] as [UInt64])
    func invariantsUnderRandomTraffic(seed: UInt64) throws {
        var rng = SeededRandom(seed: seed)
        let limits = Self.limits(max: 40, perSource: 8, reserve: 6)
        let book = HTTPConnectionBook(limits: limits)
        let sources = (1...12).map { "10.0.0.\($0)" } + ["127.0.0.1"]
        struct Live { var ticket: HTTPConnectionBook.Ticket; var phase: HTTPConnectionBook.Phase }
        let displacedIDs = Mutex<Set<Int>>([])
        var live: [Int: Live] = [:]
        var next = 0
        for _ in 0..<5000 {
            let roll = Int.random(in: 0..<10, using: &rng)
            if roll < 5 || live.isEmpty {
                let source = sources.randomElement(using: &rng)!
                next += 1
                let n = next
                switch book.open(source: source, close: { displacedIDs.withLock { _ = $0.insert(n) } }) {
                case .admitted(let t, let displaced):
                    for d in displaced { d.close() }
                    live[n] = Live(ticket: t, phase: .awaitingHead)
                case .refused:
                    break
                }
                for id in displacedIDs.withLock({ $0 }) where live[id] != nil {
                    #expect(live[id]!.phase != .active, "a connection serving a request was displaced")
                    live[id] = nil
                }
            } else {
                let key = live.keys.randomElement(using: &rng)!
                let phase: HTTPConnectionBook.Phase? = [.active, .idle, .awaitingHead, nil].randomElement(using: &rng)!
                if let phase {
                    book.set(live[key]!.ticket, phase)
                    live[key]!.phase = phase
                } else {
                    book.close(live[key]!.ticket)
                    live[key] = nil
                }
            }
            let s = book.stats
            #expect(s.open == live.count)
            #expect(s.open <= limits.maxConnections)
            #expect(s.open - s.trusted <= limits.strangerCap)
            let perSource = Dictionary(grouping: live.values, by: { $0.ticket.source }).mapValues(\.count)
            #expect(perSource.values.allSatisfy { $0 <= limits.maxPerSource })
            #expect(s.active == live.values.filter { $0.phase == .active }.count)
        }
    }
}
