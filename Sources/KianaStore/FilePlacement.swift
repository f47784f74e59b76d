import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Putting a finished file in place under its final name without ever replacing a file that is
/// there: `link(2)`, which fails if the name exists, then the temporary name removed. On a file
/// system without hard links (vfat, exFAT, some network and FUSE mounts) it falls back to a
/// rename after checking that the name is free (a narrow race there, which those file
/// systems leave no way to close).
public enum FilePlacement {
    /// 0 when `source` now has the name `target`; `EEXIST` when `target` exists (then `source`
    /// is left as it is); another `errno` when it could not be done.
    public static func placeWithoutReplacing(_ source: String, at target: String) -> Int32 {
        if link(source, target) == 0 {
            unlink(source)
            return 0
        }
        let failed = errno
        guard [EPERM, ENOTSUP, EOPNOTSUPP, ENOSYS, EMLINK].contains(failed) else { return failed }
        var st = stat()
        if lstat(target, &st) == 0 { return EEXIST }
        return rename(source, target) == 0 ? 0 : errno
    }

    /// Makes a rename or link in `folder` durable (best effort).
    public static func syncFolder(_ folder: String) {
        let dir = open(folder.isEmpty ? "." : folder, O_RDONLY | O_DIRECTORY)
        if dir >= 0 {
            fsync(dir)
            close(dir)
        }
    }

    /// `path` with symbolic links followed (also a dangling one, whose target is where a new
    /// file goes): a database file linked elsewhere (another disk) is made and replaced there,
    /// and the link kept.
    public static func resolved(_ path: String) -> String {
        var path = path
        for _ in 0..<8 {
            var st = stat()
            guard lstat(path, &st) == 0, st.st_mode & S_IFMT == S_IFLNK, let dest = try? FileManager.default.destinationOfSymbolicLink(atPath: path) else { break }
            let folder = (path as NSString).deletingLastPathComponent
            path = dest.hasPrefix("/") || folder.isEmpty ? dest : folder + "/" + dest
        }
        return path
    }

    /// Whether process `pid` is gone (in this PID namespace).
    public static func processEnded(_ pid: Int32) -> Bool {
        kill(pid, 0) != 0 && errno == ESRCH
    }
}
