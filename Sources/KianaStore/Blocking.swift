import Foundation
#if canImport(Glibc)
    import Glibc
#endif

/// The one way to run blocking work from async code: SQLite calls, ledger validation, block
/// import, embedding and generation run on a Dispatch thread and are awaited, so Swift's
/// cooperative pool (two threads on two cores) stays free for I/O. It lives in KianaStore, the
/// lowest module that does I/O, so every module above uses the same helper.
public func blocking<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { c in
        DispatchQueue.global(qos: .utility).async { c.resume(with: Result { try body() }) }
    }
}

/// Runs long blocking work that may wait on an engine (speech synthesis and recognition) on a
/// thread of its own and awaits it. Dispatch's shared pool has about as many threads as cores
/// on Linux, so work that waits there would hold up every `blocking` call (store reads behind
/// /health) until it is done; callers bound how many of these run at once.
public func onOwnThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { c in
        let t = Thread { c.resume(with: Result { try body() }) }
        t.stackSize = 1 << 20
        t.start()
    }
}

/// `onOwnThread` at a lower scheduling priority (nice 10): work done in the background
/// (embedding for the index) yields the cores to requests being served.
public func inBackground<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await onOwnThread {
        #if canImport(Glibc)
            // On Linux the nice value is per thread: 0 names the calling thread (setpriority(2)).
            _ = setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, 10)
        #endif
        return try body()
    }
}
