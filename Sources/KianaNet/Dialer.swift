import Foundation
import KianaCore
import KianaStore
import Logging
import ServiceLifecycle

/// Which addresses to dial and when: known addresses (added by the owner) and same-network
/// devices found by mDNS, each with exponential backoff and full jitter (1 s to 60 s) after a
/// failure, never one already connected or being dialled.
actor DialPlan {
    /// Addresses found by mDNS: address → (device ID text, whether its network tag matches ours, name).
    var discovered: [String: (device: String, sameNetwork: Bool, name: String?)] = [:]
    var backoff: [String: (next: ContinuousClock.Instant, delay: Duration)] = [:]
    var dialing: Set<String> = []
    /// The device a dial of an address last reached: an address added by hand is not dialled
    /// again while that device is linked another way (it dialled us), or every dial would make
    /// a duplicate link that the tie-break drops, every `dialInterval`, for good.
    var reached: [String: String] = [:]
    /// Why the last dial of an address failed (cleared when one succeeds), for `kiana peers`.
    var failures: [String: String] = [:]

    func targets(known: [String], connectedAddresses: Set<String>, connectedDevices: Set<String>) -> [String] {
        var addresses = Set(known)
        for (addr, d) in discovered where d.sameNetwork { addresses.insert(addr) }
        let now = ContinuousClock.now
        var out: [String] = []
        for a in addresses.sorted() where !dialing.contains(a) && !connectedAddresses.contains(a) {
            if let d = discovered[a], connectedDevices.contains(d.device) { continue }
            if let d = reached[a], connectedDevices.contains(d) { continue }
            if let b = backoff[a], b.next > now { continue }
            dialing.insert(a)
            out.append(a)
        }
        return out
    }

    func finished(_ address: String, failure: String?) {
        dialing.remove(address)
        guard let failure else {
            backoff[address] = nil
            failures[address] = nil
            return
        }
        failures[address] = failure
        let prev = backoff[address]?.delay ?? .milliseconds(500)
        let cap = min(prev * 2, .seconds(60))
        let wait = Duration.milliseconds(Int64.random(in: 0...Int64(cap / .milliseconds(1))))
        backoff[address] = (ContinuousClock.now + wait, cap)
    }

    func connected(_ address: String) {
        backoff[address] = nil
        failures[address] = nil
    }

    func reached(_ address: String, device: String) { reached[address] = device }

    func discovered(_ address: String, device: String, sameNetwork: Bool, name: String?) -> Bool {
        let isNew = discovered[address] == nil
        discovered[address] = (device, sameNetwork, name)
        return isNew
    }

    func lost(_ address: String) { discovered[address] = nil }
}

/// Keeps links to known and discovered members up: every `dialInterval` it dials the addresses
/// the plan gives, until graceful shutdown.
public struct Dialer: Service, CustomStringConvertible {
    /// The name ServiceLifecycle logs (not the default dump of every stored property).
    public var description: String { "Dialer" }

    let network: PeerNetwork

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { group in
                while !Task.isCancelled {
                    for address in await network.dialTargets() {
                        group.addTask { await network.dial(address) }
                    }
                    try? await Task.sleep(for: network.config.dialInterval)
                }
                group.cancelAll()
            }
        }
    }
}

/// Tells members about new heads (`PeerNetwork.announce`): woken at once by this process's
/// own chain changes (writes, seals, imports), and every `headInterval` to notice writes by
/// other processes on the same data directory; runs the node's upkeep (`Hooks.tick`) each time.
/// Ends at graceful shutdown.
public struct HeadAnnouncer: Service, CustomStringConvertible {
    public var description: String { "HeadAnnouncer" }

    let network: PeerNetwork

    public func run() async throws {
        let network = self.network
        let watch = network.store.watchChain { network.wake() }
        await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { group in
                group.addTask {
                    while !Task.isCancelled {
                        try? await Task.sleep(for: network.config.headInterval)
                        network.wake()
                    }
                }
                var last: SyncHead?
                for await _ in network.wakeups {
                    if Task.isCancelled { break }
                    // Not while pulling: entries a reorg returned would be sealed on every
                    // intermediate head, forking against the next batch (the pull's end seals).
                    if await !network.book.pulling { await network.hooks.tick() }
                    guard let head = try? await network.sync.head(), head != last else { continue }
                    // Each member's send runs beside the loop: the next head waits for them (so a
                    // member gets pushed blocks in order) at most `announceWait`, and a member that
                    // stopped reading is skipped until its send went out, not waited for.
                    let (message, targets) = await network.announcement(head, previous: last)
                    let round = AnnouncementRound(sends: targets.count)
                    for link in targets {
                        group.addTask {
                            try? await link.send(message)
                            await link.endAnnounce()
                            round.sent()
                        }
                    }
                    await round.wait(upTo: network.config.announceWait)
                    last = head
                }
                group.cancelAll()
            }
        }
        withExtendedLifetime(watch) {}
    }
}
