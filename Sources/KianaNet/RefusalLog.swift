import Synchronization

/// Decides which refused inbound connections are logged: the first from a source address, then
/// at most one per `interval` for that source, with the number of refusals not logged since.
/// Remembers at most `capacity` sources (the oldest are forgotten first), so a scan from many
/// addresses cannot grow it without bound.
public final class RefusalLog: Sendable {
    struct Entry {
        var lastLogged: ContinuousClock.Instant
        var suppressed: Int
    }

    let interval: Duration
    let capacity: Int
    private let state = Mutex<[String: Entry]>([:])

    public init(interval: Duration = .seconds(60), capacity: Int = 1024) {
        self.interval = interval
        self.capacity = capacity
    }

    /// nil when this refusal is not to be logged; otherwise how many from `source` were not
    /// logged since the last line.
    public func shouldLog(source: String, now: ContinuousClock.Instant) -> Int? {
        state.withLock { seen -> Int? in
            if var e = seen[source] {
                guard now - e.lastLogged >= interval else {
                    e.suppressed += 1
                    seen[source] = e
                    return nil
                }
                seen[source] = Entry(lastLogged: now, suppressed: 0)
                return e.suppressed
            }
            if seen.count >= capacity, let oldest = seen.min(by: { $0.value.lastLogged < $1.value.lastLogged })?.key {
                seen[oldest] = nil
            }
            seen[source] = Entry(lastLogged: now, suppressed: 0)
            return 0
        }
    }
}
