import Logging
import Synchronization

/// Decides which refused inbound connections are logged, so that no scan, flood or reconnect
/// loop can fill the log: a notice for the first refusal from a source address, then at most
/// one per `interval` for that source, carrying the number of refusals not logged since; and no
/// more than `maxNotices` notices per `interval` over all sources (a source over that budget
/// keeps its count for its next line). Refusals without a notice are logged at info, at most
/// `maxDetails` per `interval` in all, then not at all. Remembers at most `capacity` sources
/// (the longest unseen are forgotten first), so a scan from many addresses cannot grow it
/// without bound. Nothing is logged per connection above info.
public final class RefusalLog: Sendable {
    /// What to log for one refusal.
    public enum Decision: Sendable, Equatable {
        /// A notice, with the number of refusals from this source not noticed since the last.
        case notice(suppressed: Int)
        /// A line at info (within the detail budget).
        case detail
        /// Nothing.
        case silent
    }

    struct Entry {
        /// When this source last got a notice; nil when it never did (the budget was spent).
        var lastLogged: ContinuousClock.Instant?
        var lastSeen: ContinuousClock.Instant
        var suppressed: Int
    }

    struct State {
        var sources: [String: Entry] = [:]
        var windowStart: ContinuousClock.Instant?
        var notices = 0
        var details = 0
    }

    let interval: Duration
    let capacity: Int
    let maxNotices: Int
    let maxDetails: Int
    private let state = Mutex(State())

    public init(interval: Duration = .seconds(60), capacity: Int = 1024, maxNotices: Int = 20, maxDetails: Int = 100) {
        self.interval = interval
        self.capacity = capacity
        self.maxNotices = maxNotices
        self.maxDetails = maxDetails
    }

    /// What to log for a refusal from `source` now.
    public func decide(source: String, now: ContinuousClock.Instant) -> Decision {
        state.withLock { s -> Decision in
            if s.windowStart.map({ now - $0 >= interval }) ?? true {
                s.windowStart = now
                s.notices = 0
                s.details = 0
            }
            var entry: Entry
            if let e = s.sources[source] {
                entry = e
            } else {
                if s.sources.count >= capacity, let oldest = s.sources.min(by: { $0.value.lastSeen < $1.value.lastSeen })?.key {
                    s.sources[oldest] = nil
                }
                entry = Entry(lastLogged: nil, lastSeen: now, suppressed: 0)
            }
            entry.lastSeen = now
            defer { s.sources[source] = entry }
            let due = entry.lastLogged.map { now - $0 >= interval } ?? true
            if due, s.notices < maxNotices {
                s.notices += 1
                let suppressed = entry.suppressed
                entry.lastLogged = now
                entry.suppressed = 0
                return .notice(suppressed: suppressed)
            }
            entry.suppressed += 1
            guard s.details < maxDetails else { return .silent }
            s.details += 1
            return .detail
        }
    }

    /// nil when this refusal gets no notice; otherwise how many from `source` got none since
    /// the last (`decide`, for callers that log only notices).
    public func shouldLog(source: String, now: ContinuousClock.Instant) -> Int? {
        if case .notice(let suppressed) = decide(source: source, now: now) { return suppressed }
        return nil
    }

    /// Logs one refused inbound connection as `decide` says, as `message` ("inbound connection
    /// refused" unless given) with `metadata` (and `suppressed` on a notice that follows unlogged ones).
    public func log(
        _ logger: Logger, source: String, message: Logger.Message = "inbound connection refused", metadata: Logger.Metadata,
        now: ContinuousClock.Instant = .now
    ) {
        switch decide(source: source, now: now) {
        case .notice(let suppressed):
            var metadata = metadata
            if suppressed > 0 { metadata["suppressed"] = .stringConvertible(suppressed) }
            logger.notice(message, metadata: metadata)
        case .detail:
            logger.info(message, metadata: metadata)
        case .silent:
            break
        }
    }
}
