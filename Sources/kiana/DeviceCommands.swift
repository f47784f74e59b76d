import ArgumentParser
import Foundation
import KianaNode

struct DeviceCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "device", abstract: "This device's identity.", subcommands: [DeviceRotate.self])
}

/// `kiana device rotate`: moves this device's authority seat to a new key (decision 99).
struct DeviceRotate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rotate",
        abstract: "Replace this device's identity key with a new one, keeping its place in the network.",
        discussion: """
            The old key writes a vote that the new key co-signs; the other devices need not vote. \
            With other authorities in the network, run it while the node serves and is linked to them: \
            it waits until one of them holds the rotation, then the new key takes over and the node \
            must be restarted. Run it again to finish a rotation that timed out.
            """)
    @OptionGroup var data: DataOptions
    @Option(help: "Seconds to wait for another authority to hold the rotation.") var wait: Int = 60

    func run() throws {
        try perform {
            let dir = try data.directory
            // Not serving: hold the lock, so no node starts with half-rotated keys.
            var lock: DirectoryLock?
            do { lock = try dir.lockForServing() } catch let e as KianaNodeError where e.code == .locked { lock = nil }
            let serving = lock == nil
            let p = try KeyRotation.begin(directory: dir, serving: serving)
            say("Rotation from \(p.old) to \(p.new) is in block \(p.block).")
            if serving && p.othersExist {
                say("Waiting for another authority to hold it…")
                let deadline = Date().addingTimeInterval(TimeInterval(max(0, wait)))
                while !(try KeyRotation.acknowledged(directory: dir, height: p.block)) {
                    guard Date() < deadline else {
                        throw KianaNodeError(
                            .timeout,
                            "no other authority holds the rotation yet (is the node linked to one? `kiana peers`); run `kiana device rotate` again to finish")
                    }
                    Thread.sleep(forTimeInterval: 0.5)
                }
            }
            try KeyRotation.promoteIfRotated(directory: dir)
            withExtendedLifetime(lock) {}
            say("This device is now \(p.new).")
            if serving { say("Restart the node to use the new key (`systemctl restart kiana`, or stop `kiana serve` and start it again).") }
        }
    }
}
