import Foundation

/// The one way to run blocking work from async code: SQLite calls, ledger validation, block
/// import, embedding and generation run on a Dispatch thread and are awaited, so Swift's
/// cooperative pool (two threads on two cores) stays free for I/O. It lives in KianaStore, the
/// lowest module that does I/O, so every module above uses the same helper.
public func blocking<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { c in
        DispatchQueue.global(qos: .utility).async { c.resume(with: Result { try body() }) }
    }
}
