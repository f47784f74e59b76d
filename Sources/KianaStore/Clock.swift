import Foundation

/// Milliseconds since 1970 by the wall clock: the ledger's time unit, read in this one place
/// (block times, entry clocks, "now" for validation, peer address times).
public func currentMillis() -> UInt64 {
    UInt64(Date().timeIntervalSince1970 * 1000)
}
