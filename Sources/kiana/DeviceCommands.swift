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
            must be restarted. Until then the node keeps its old key (also across restarts), so it can \
            pass the rotation on; run the command again to finish.
            """)
    @OptionGroup var data: DataOptions
    @Option(help: "Seconds to wait for another authority to hold the rotation.") var wait: Int = 60

    func run() throws {
        try perform {
            let dir = try data.directory
            guard dir.hasIdentity else { throw KianaNodeError(.notInitialized, "no KI_ana data in \(dir.path): run `kiana init` first") }
            let rotating = try KeyRotation.lock(dir)
            // Not serving: hold the node's lock, so no node starts meanwhile. Held by something
            // else (a restore, a backup): refuse rather than guess.
            var serveLock: DirectoryLock?
            var serving = false
            do {
                serveLock = try dir.lockForServing()
            } catch let e as KianaNodeError where e.code == .locked {
                guard (try? NodeControl.connect(dir).peers()) != nil else {
                    throw KianaNodeError(.locked, "\(dir.path) is locked by another process that is not an answering node (a restore, a `kiana join`, or a node still starting); try again when it is done")
                }
                serving = true
            }
            let p = try KeyRotation.begin(directory: dir, serving: serving)
            say("Rotation from \(p.old) to \(p.new) is in block \(p.block).")
            guard let next = try KeyRotation.loadNext(dir) else {
                throw KianaNodeError(.internal, "the new keys are missing from \(dir.path)")
            }
            if p.othersExist {
                guard serving else {
                    throw KianaNodeError(
                        .notRunning,
                        "the other devices must receive the rotation from this one before it switches keys: start the node (`kiana serve`), then run `kiana device rotate` again")
                }
                say("Waiting for another authority to hold it…")
                let deadline = Date().addingTimeInterval(TimeInterval(max(0, wait)))
                while !(try KeyRotation.acknowledged(directory: dir, height: p.block)) {
                    guard Date() < deadline else {
                        throw KianaNodeError(
                            .timeout,
                            "no other authority holds the rotation yet (is the node linked to one? `kiana peers`). The node keeps its old key until one does, even if restarted; run `kiana device rotate` again to finish")
                    }
                    Thread.sleep(forTimeInterval: 0.5)
                }
            }
            try KeyRotation.markConfirmed(directory: dir, next: next)
            guard try KeyRotation.promoteIfRotated(directory: dir) else {
                throw KianaNodeError(.internal, "the rotation is confirmed but the new keys did not take over; run `kiana device rotate` again")
            }
            withExtendedLifetime((rotating, serveLock)) {}
            say("This device is now \(p.new).")
            if serving {
                say("Restart the node to use the new key (`systemctl restart kiana`, or stop `kiana serve` and start it again); until then it refuses writes.")
            }
        }
    }
}
