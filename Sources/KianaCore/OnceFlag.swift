import Synchronization

/// A flag set once from any thread and read from any other (a handshake deadline that fired,
/// a link that came up, a join the owner confirmed, an upload's "stop embedding").
public final class OnceFlag: Sendable {
    private let flag = Mutex(false)
    public init() {}
    /// Sets the flag; it stays set.
    public func set() { flag.withLock { $0 = true } }
    public var isSet: Bool { flag.withLock { $0 } }
}
