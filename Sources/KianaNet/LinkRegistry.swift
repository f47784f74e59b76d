import Foundation
import KianaCore
import Logging

/// The live links of a node, one per device: admission decides who gets a link, the registry
/// keeps the one that survives a duplicate (both sides apply the same tie-break), and sends
/// notifications to every member link.
public actor LinkRegistry {
    let identity: DeviceIdentity
    let logger: Logger
    var links: [[UInt8]: PeerLink] = [:]
    /// The port the link listener bound, once it listens.
    public private(set) var listeningPort: Int?

    init(identity: DeviceIdentity, logger: Logger) {
        self.identity = identity
        self.logger = logger
    }

    func setListening(_ port: Int) { listeningPort = port }

    /// Registers a live link; of two links to one device the one dialled by the smaller
    /// identity key survives. False when this link is the one to drop.
    func attach(_ link: PeerLink) -> Bool {
        if let old = links[link.remoteKey] {
            func dialer(_ l: PeerLink) -> [UInt8] { l.initiatedLocally ? identity.publicKey : l.remoteKey }
            if dialer(link).lexicographicallyPrecedes(dialer(old)) {
                old.close()
            } else {
                return false
            }
        }
        links[link.remoteKey] = link
        logger.info("peer connected", metadata: ["peer": .string(link.deviceID.description), "address": .string(link.remoteAddress)])
        return true
    }

    func detach(_ link: PeerLink) {
        if links[link.remoteKey] === link {
            links[link.remoteKey] = nil
            logger.info("peer disconnected", metadata: ["peer": .string(link.deviceID.description)])
        }
    }

    /// Whether a link to this device is up.
    public func isConnected(_ key: [UInt8]) -> Bool { links[key] != nil }

    /// The live links.
    public var all: [PeerLink] { Array(links.values) }
    var connectedAddresses: Set<String> { Set(links.values.map(\.remoteAddress)) }
    var connectedDevices: Set<String> { Set(links.keys.map { DeviceID(publicKey: $0).description }) }
}
