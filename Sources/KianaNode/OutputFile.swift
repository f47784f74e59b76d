import Foundation
import KianaAI
import KianaStore
#if canImport(Glibc)
    import Glibc
#endif

/// A file the CLI writes (`say -o`, `export -o`): a new or regular file is written under a
/// temporary name and renamed when complete (a failed write leaves no half file); a device, pipe
/// or symlinked path is written through as it is (never replaced). Opened at once, so a path
/// that cannot be written fails before any work.
public final class OutputFile {
    let path: String
    let handle: FileHandle
    let temporary: String?

    public init(_ given: String) throws {
        guard !given.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else { throw KianaNodeError(.invalidInput, "an empty output file name: give the file to write") }
        // A descriptor this process already has (/dev/stdout, /dev/fd/N, /proc/self/fd/N) is
        // written through that descriptor: appending to `>> file` appends, a pipe is a pipe.
        if let fdNumber = Self.descriptor(given) {
            let copy = dup(fdNumber)
            guard copy >= 0 else { throw KianaNodeError(.io, "cannot write \(given): \(String(cString: strerror(errno)))") }
            self.path = given
            handle = FileHandle(fileDescriptor: copy, closeOnDealloc: true)
            temporary = nil
            return
        }
        // A device, pipe or socket, also behind links, is opened as given and written through.
        var through = stat()
        if stat(given, &through) == 0, ![S_IFREG, S_IFDIR].contains(through.st_mode & S_IFMT) {
            guard let h = FileHandle(forWritingAtPath: given) else { throw KianaNodeError(.io, "cannot write \(given): \(String(cString: strerror(errno)))") }
            self.path = given
            handle = h
            temporary = nil
            return
        }
        // A symlink to a file is followed (also a dangling one): the file it names is written
        // and the link kept.
        let path = FilePlacement.resolved(given)
        self.path = path
        var st = stat()
        let exists = stat(path, &st) == 0
        if exists && st.st_mode & S_IFMT == S_IFDIR { throw KianaNodeError(.invalidInput, "\(given) is a folder; give a file name") }
        if exists && access(path, W_OK) != 0 { throw KianaNodeError(.readOnly, "\(given) cannot be written (\(String(cString: strerror(errno))))") }
        if !exists || st.st_mode & S_IFMT == S_IFREG, let what = Self.protected(path) {
            throw KianaNodeError(.exists, "\(given) is \(what): write to a file elsewhere")
        }
        if exists && st.st_mode & S_IFMT != S_IFREG {
            // A device or a pipe: written through.
            guard let h = FileHandle(forWritingAtPath: path) else { throw KianaNodeError(.io, "cannot write \(given): \(String(cString: strerror(errno)))") }
            handle = h
            temporary = nil
            return
        }
        // What an interrupted earlier run for this file left (its process is gone): removed.
        Leftovers.sweep(beside: path, prefix: (path as NSString).lastPathComponent + ".part-")
        let tmp = path + ".part-\(getpid())"
        if FileManager.default.createFile(atPath: tmp, contents: nil, attributes: exists ? [.posixPermissions: Int(st.st_mode & 0o777)] : nil),
            let h = FileHandle(forWritingAtPath: tmp)
        {
            handle = h
            temporary = tmp
            // Locked while written: another run's sweep leaves it alone (`Leftovers`).
            _ = flock(h.fileDescriptor, LOCK_EX | LOCK_NB)
        } else if exists, let h = FileHandle(forWritingAtPath: path) {
            // A writable file in a folder where no new file can be made: rewritten in place.
            handle = h
            temporary = nil
            inPlace = true
        } else {
            throw KianaNodeError(.io, "cannot write \(given): \(String(cString: strerror(errno)))")
        }
    }
    var inPlace = false

    /// Why output must not go to `path`, if it must not: one of a KI_ana data directory's own
    /// files (database, keys, tokens, settings, locks, marks: there or not yet, since a file
    /// that appears there, such as `ledger.damaged`, changes what the node does), anything in
    /// its folders (index, uploads, models), or an existing SQLite database. Other files right
    /// in a data directory (an export, a recording) are written as anywhere.
    static func protected(_ path: String) -> String? {
        let name = (path as NSString).lastPathComponent
        let parent = URL(fileURLWithPath: (path as NSString).deletingLastPathComponent).standardizedFileURL.resolvingSymlinksInPath().path
        func isDataDirectory(_ folder: String) -> Bool { FileManager.default.fileExists(atPath: (folder == "/" ? "" : folder) + "/identity.key") }
        if isDataDirectory(parent) {
            if name.hasPrefix("kiana.sqlite") || name.hasSuffix(".key") || name.hasSuffix(".tmp") || DataDirectory.ownFileNames.contains(name) {
                return "a file of the KI_ana data directory \(parent)"
            }
        } else {
            var folder = parent
            while folder != "/" && !folder.isEmpty {
                folder = (folder as NSString).deletingLastPathComponent
                if isDataDirectory(folder) { return "inside the folder \(parent) of the KI_ana data directory \(folder)" }
            }
        }
        if let h = FileHandle(forReadingAtPath: path) {
            defer { try? h.close() }
            if let head = try? h.read(upToCount: 16), head == Data("SQLite format 3\0".utf8) { return "an SQLite database" }
        }
        return nil
    }

    /// The descriptor a /dev/stdout-like path names, if it is one.
    static func descriptor(_ path: String) -> Int32? {
        switch path {
        case "/dev/stdout": return 1
        case "/dev/stderr": return 2
        default:
            for prefix in ["/dev/fd/", "/proc/self/fd/"] where path.hasPrefix(prefix) { return Int32(path.dropFirst(prefix.count)) }
            return nil
        }
    }

    /// Writes `audio` as a 16-bit WAV file and puts it in place.
    public func finish(_ audio: PCMAudio) throws { try finish(bytes: Data(WAV.encode(audio))) }

    /// Writes `bytes` and puts the file in place.
    public func finish(bytes: Data) throws {
        do {
            try handle.write(contentsOf: bytes)
            if temporary != nil || inPlace {
                try handle.truncate(atOffset: handle.offsetInFile)
                // On disk before it takes the name: a power loss after the rename must not leave
                // an empty file where the old one was.
                try handle.synchronize()
            }
            try handle.close()
        } catch {
            if let temporary { unlink(temporary) }
            // The reason as the system gave it (FileHandle's errors carry errno underneath).
            let ns = error as NSError
            let code = (ns.userInfo[NSUnderlyingErrorKey] as? NSError).map { $0.domain == NSPOSIXErrorDomain ? Int32($0.code) : 0 } ?? (ns.domain == NSPOSIXErrorDomain ? Int32(ns.code) : 0)
            let why = code == ENOSPC ? "the disk is full" : code != 0 ? String(cString: strerror(code)) : ns.localizedDescription
            throw KianaNodeError(.io, "cannot write \(path): \(why)", cause: error)
        }
        if let temporary {
            guard rename(temporary, path) == 0 else {
                let why = String(cString: strerror(errno))
                unlink(temporary)
                throw KianaNodeError(.io, "cannot write \(path): \(why)")
            }
            FilePlacement.syncFolder((path as NSString).deletingLastPathComponent)
        }
    }

    /// Removes the temporary file (the work failed).
    public func abandon() {
        try? handle.close()
        if let temporary { unlink(temporary) }
    }
}

/// Temporary files of interrupted runs: named after the process that made them
/// (`…PREFIX<pid>`), and locked (`flock`) by it while it runs. One is removed only when both
/// say it is abandoned: the process is gone here, and no process anywhere (another PID
/// namespace: a container sharing the folder) holds its lock.
enum Leftovers {
    /// Removes the entries beside `path` named `prefix` followed by the decimal ID of a process
    /// that no longer exists, whose lock nobody holds. Names are compared byte by byte (a
    /// name's characters may merge with what follows), and only ASCII digits may follow.
    static func sweep(beside path: String, prefix: String) {
        let dir = folder(of: path)
        let head = Array(prefix.utf8)
        for name in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [] {
            let bytes = Array(name.utf8)
            guard bytes.count > head.count, bytes.starts(with: head), let pid = processID(bytes[head.count...]), FilePlacement.processEnded(pid) else { continue }
            let full = dir + "/" + name
            // Never blocks (a FIFO planted under such a name), never follows a link.
            let fd = open(full, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
            guard fd >= 0 else { continue }
            defer { close(fd) }
            var now = stat()
            var seen = stat()
            guard fstat(fd, &now) == 0, lstat(full, &seen) == 0, now.st_dev == seen.st_dev, now.st_ino == seen.st_ino,
                flock(fd, LOCK_EX | LOCK_NB) == 0
            else { continue }
            switch now.st_mode & S_IFMT {
            case S_IFREG: unlink(full)
            case S_IFDIR: try? FileManager.default.removeItem(atPath: full)  // a restore's staging folder (links inside are not followed)
            default: continue
            }
        }
    }

    /// Removes `backup` work folders beside `path` (any backup's: `NAME.kiana-work-PID`) that
    /// no backup holds: a real folder (not a link, also not one swapped in meanwhile) holding
    /// nothing but the database copy, its process gone, its lock free.
    static func sweepWorkFolders(beside path: String) {
        let dir = folder(of: path)
        let marker = Array(".kiana-work-".utf8)
        let allowed: Set<String> = ["kiana.sqlite", "kiana.sqlite-wal", "kiana.sqlite-shm", "kiana.sqlite-journal"]
        for name in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [] {
            let bytes = Array(name.utf8)
            guard let at = lastRange(of: marker, in: bytes), at > 0, let pid = processID(bytes[(at + marker.count)...]), FilePlacement.processEnded(pid)
            else { continue }
            let full = dir + "/" + name
            let fd = open(full, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
            guard fd >= 0 else { continue }
            defer { close(fd) }
            var seen = stat()
            var now = stat()
            guard fstat(fd, &now) == 0, lstat(full, &seen) == 0, seen.st_dev == now.st_dev, seen.st_ino == now.st_ino else { continue }
            guard flock(fd, LOCK_EX | LOCK_NB) == 0 else { continue }
            guard let inside = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd/\(fd)"), Set(inside).isSubset(of: allowed) else { continue }
            // Removed through the descriptor: the folder that was checked, whatever its name is now.
            for entry in inside { unlinkat(fd, entry, 0) }
            rmdir(full)
        }
    }

    /// Takes the lock of a temporary file or work folder for this process's run; the
    /// descriptor (close it when done), or nil if it cannot be opened. Where the file system
    /// has no locks, the descriptor is returned all the same (sweeps then leave it alone).
    static func hold(_ path: String) -> Int32? {
        let fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        _ = flock(fd, LOCK_EX | LOCK_NB)
        return fd
    }

    /// A process ID written as 1 to 9 ASCII digits, nothing else.
    static func processID(_ digits: ArraySlice<UInt8>) -> Int32? {
        guard (1...9).contains(digits.count), digits.allSatisfy({ (0x30...0x39).contains($0) }), let pid = Int32(String(decoding: digits, as: UTF8.self)), pid > 0,
            pid != getpid()
        else { return nil }
        return pid
    }

    static func folder(of path: String) -> String {
        let parent = (path as NSString).deletingLastPathComponent
        return parent.isEmpty ? "." : parent
    }

    static func lastRange(of needle: [UInt8], in bytes: [UInt8]) -> Int? {
        guard bytes.count >= needle.count else { return nil }
        for i in stride(from: bytes.count - needle.count, through: 0, by: -1) where bytes[i..<(i + needle.count)].elementsEqual(needle) { return i }
        return nil
    }
}
