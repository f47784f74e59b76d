import Foundation
import KianaAI
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
        var path = given
        for _ in 0..<8 {
            var st = stat()
            guard lstat(path, &st) == 0, st.st_mode & S_IFMT == S_IFLNK,
                let dest = try? FileManager.default.destinationOfSymbolicLink(atPath: path)
            else { break }
            let folder = (path as NSString).deletingLastPathComponent  // "" for a link in the current folder
            path = dest.hasPrefix("/") || folder.isEmpty ? dest : folder + "/" + dest
        }
        self.path = path
        var st = stat()
        let exists = stat(path, &st) == 0
        if exists && st.st_mode & S_IFMT == S_IFDIR { throw KianaNodeError(.invalidInput, "\(given) is a folder; give a file name") }
        if exists && access(path, W_OK) != 0 { throw KianaNodeError(.readOnly, "\(given) cannot be written (\(String(cString: strerror(errno))))") }
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
            throw KianaNodeError(.io, "cannot write \(path)", cause: error)
        }
        if let temporary {
            guard rename(temporary, path) == 0 else {
                let why = String(cString: strerror(errno))
                unlink(temporary)
                throw KianaNodeError(.io, "cannot write \(path): \(why)")
            }
            DataDirectory.syncFolder((path as NSString).deletingLastPathComponent.isEmpty ? "." : (path as NSString).deletingLastPathComponent)
        }
    }

    /// Removes the temporary file (the work failed).
    public func abandon() {
        try? handle.close()
        if let temporary { unlink(temporary) }
    }
}

/// Temporary files of interrupted runs (their names end in the ID of the process that made them).
enum Leftovers {
    /// Removes the entries beside `path` named `prefix` followed by the decimal ID of a process
    /// that no longer exists. Names are compared byte by byte (a name's characters may merge
    /// with what follows), and nothing but ASCII digits may follow the prefix.
    static func sweep(beside path: String, prefix: String) {
        let dir = folder(of: path)
        let head = Array(prefix.utf8)
        for name in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [] {
            let bytes = Array(name.utf8)
            guard bytes.count > head.count, bytes.count - head.count <= 9, bytes.starts(with: head) else { continue }
            let digits = bytes[head.count...]
            guard digits.allSatisfy({ (0x30...0x39).contains($0) }), let pid = Int32(String(decoding: digits, as: UTF8.self)), pid > 0, pid != getpid()
            else { continue }
            if kill(pid, 0) != 0 && errno == ESRCH { try? FileManager.default.removeItem(atPath: dir + "/" + name) }
        }
    }

    /// Removes `backup` work folders beside `path` (any backup's: `NAME.kiana-work-PID`) that
    /// no backup holds: a real folder (not a link) holding nothing but the database copy, whose
    /// lock can be taken (a running backup holds it, in whatever PID namespace it runs).
    static func sweepWorkFolders(beside path: String) {
        let dir = folder(of: path)
        let marker = Array(".kiana-work-".utf8)
        let allowed: Set<String> = ["kiana.sqlite", "kiana.sqlite-wal", "kiana.sqlite-shm", "kiana.sqlite-journal"]
        for name in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [] {
            let bytes = Array(name.utf8)
            guard let at = lastRange(of: marker, in: bytes), at > 0 else { continue }
            let digits = bytes[(at + marker.count)...]
            guard !digits.isEmpty, digits.count <= 9, digits.allSatisfy({ (0x30...0x39).contains($0) }) else { continue }
            let full = dir + "/" + name
            var st = stat()
            guard lstat(full, &st) == 0, st.st_mode & S_IFMT == S_IFDIR else { continue }
            guard let inside = try? FileManager.default.contentsOfDirectory(atPath: full), Set(inside).isSubset(of: allowed) else { continue }
            guard let lock = holdWorkFolder(full, wait: false) else { continue }
            for entry in inside { unlink(full + "/" + entry) }
            rmdir(full)
            close(lock)
        }
    }

    /// Takes the lock of a backup work folder (held by the backup for its whole run); the
    /// descriptor, or nil if another process holds it (with `wait: false`).
    static func holdWorkFolder(_ path: String, wait: Bool) -> Int32? {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        guard flock(fd, wait ? LOCK_EX : LOCK_EX | LOCK_NB) == 0 else {
            close(fd)
            return nil
        }
        return fd
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
