import Foundation
#if canImport(Glibc)
    import Glibc
#endif

/// A child started with posix_spawn (the node's engines, and the tests' children). Every pipe is created close-on-exec and every descriptor above
/// stderr is closed in the child, so a child (or a daemon it starts) never holds another child's
/// pipes open — Foundation's `Process` leaks them, which made readers wait for an EOF that came
/// only when an unrelated long-lived child exited — and its wait polls every 2 ms where
/// Foundation's run-loop wait took about 50 ms per child.
public final class Spawned: @unchecked Sendable {
    public let pid: pid_t
    /// Write end of the child's stdin, read ends of its stdout and stderr (nil when merged).
    public let stdin: FileHandle, stdout: FileHandle, stderr: FileHandle?
    let lock = NSLock()
    var status: Int32?

    typealias CloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
    static let closeFrom: CloseFrom? = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np")
        .map { unsafeBitCast($0, to: CloseFrom.self) }

    static func pipe() throws -> (read: Int32, write: Int32) {
        var fds: [Int32] = [0, 0]
        guard Glibc.pipe(&fds) == 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        // Not atomic with pipe(), but our own children close everything above stderr anyway.
        for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        return (fds[0], fds[1])
    }

    /// Starts `executable` with `args`; `environment` replaces the inherited one when given.
    public init(_ executable: String, _ args: [String], environment: [String: String]? = nil, mergeStderr: Bool = false) throws {
        let inP = try Self.pipe()
        let outP = try Self.pipe()
        let errP = mergeStderr ? outP : try Self.pipe()
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, inP.read, 0)
        posix_spawn_file_actions_adddup2(&actions, outP.write, 1)
        posix_spawn_file_actions_adddup2(&actions, errP.write, 2)
        if let closeFrom = Self.closeFrom { _ = closeFrom(&actions, 3) }
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        var none = sigset_t()
        var all = sigset_t()
        sigemptyset(&none)
        sigfillset(&all)
        posix_spawnattr_setsigmask(&attr, &none)
        posix_spawnattr_setsigdefault(&attr, &all)
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        let env = (environment ?? ProcessInfo.processInfo.environment).map { "\($0.key)=\($0.value)" }
        let argv = ([executable] + args).map { strdup($0) } + [nil]
        let envp = env.map { strdup($0) } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, executable, &actions, &attr, argv, envp)
        close(inP.read)
        close(outP.write)
        if !mergeStderr { close(errP.write) }
        guard rc == 0 else {
            close(inP.write)
            close(outP.read)
            if !mergeStderr { close(errP.read) }
            throw POSIXError(POSIXErrorCode(rawValue: rc) ?? .EIO)
        }
        self.pid = pid
        stdin = FileHandle(fileDescriptor: inP.write, closeOnDealloc: true)
        stdout = FileHandle(fileDescriptor: outP.read, closeOnDealloc: true)
        stderr = mergeStderr ? nil : FileHandle(fileDescriptor: errP.read, closeOnDealloc: true)
    }

    /// The exit status (128 + signal number when killed), or nil while running.
    public var exitStatus: Int32? {
        lock.lock()
        defer { lock.unlock() }
        if let status { return status }
        var raw: Int32 = 0
        guard waitpid(pid, &raw, WNOHANG) == pid else { return nil }
        let s = raw & 0x7f == 0 ? (raw >> 8) & 0xff : 128 + (raw & 0x7f)
        status = s
        return s
    }

    public var isRunning: Bool { exitStatus == nil }

    /// Blocks until the child exits; returns its status.
    public func waitUntilExit() -> Int32 {
        while true {
            if let s = exitStatus { return s }
            usleep(2000)
        }
    }

    public func signal(_ sig: Int32) { if isRunning { kill(pid, sig) } }
}
