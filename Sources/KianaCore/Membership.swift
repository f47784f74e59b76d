/// A membership vote, carried by an entry of kind `authority.vote`: add (`authorize`) or
/// drop `target` as an authority.
public struct Vote: Hashable, Sendable {
    public var target: [UInt8]
    public var authorize: Bool
    /// A key rotation: the device whose seat `target` takes (always the entry's author), and
    /// `target`'s signature over `Vote.rotationMessage`, the signed link between old and new key.
    public var replaces: [UInt8]?
    public var proof: [UInt8]?

    public init(target: [UInt8], authorize: Bool) {
        self.target = target
        self.authorize = authorize
    }

    /// A rotation from `old` (the author of the entry carrying it) to `new`, which signs the link.
    public static func rotation(network: [UInt8], old: [UInt8], new: DeviceIdentity) -> Vote {
        var v = Vote(target: new.publicKey, authorize: true)
        v.replaces = old
        v.proof = new.sign(rotationMessage(network: network, old: old, new: new.publicKey))
        return v
    }

    /// What the new key signs: a domain tag, the network, the old key and itself.
    public static func rotationMessage(network: [UInt8], old: [UInt8], new: [UInt8]) -> [UInt8] {
        Array("KIANA-ROTATE-1".utf8) + network + old + new
    }

    public var isRotation: Bool { replaces != nil }

    public var payload: CBOR {
        var m: [CBOR: CBOR] = ["target": .bytes(target), "authorize": .bool(authorize)]
        if let replaces, let proof {
            m["replaces"] = .bytes(replaces)
            m["proof"] = .bytes(proof)
        }
        return .map(m)
    }

    public init(payload: CBOR) throws(KianaCoreError) {
        let m = try payload.mapValue("vote payload")
        try m.onlyKeys(KeySets.vote, in: "vote payload")
        target = try m.required("target", in: "vote payload").bytesValue("vote target", count: 32)
        guard case .bool(let a) = try m.required("authorize", in: "vote payload") else {
            throw KianaCoreError(.invalidStructure, "vote authorize must be a boolean")
        }
        authorize = a
        if let r = m[.text("replaces")] {
            replaces = try r.bytesValue("vote replaces", count: 32)
            proof = try m.required("proof", in: "vote payload").bytesValue("vote proof", count: 64)
            guard authorize else { throw KianaCoreError(.invalidStructure, "a rotation must authorize its new key") }
            guard replaces != target else { throw KianaCoreError(.invalidStructure, "a rotation must name a new key") }
        } else if m[.text("proof")] != nil {
            throw KianaCoreError(.invalidStructure, "a vote proof needs replaces")
        }
    }

    /// Why this vote cannot stand in an entry by `author` of `network`, or nil. A rotation must
    /// be authored by the key it replaces and carry the new key's signature of the link.
    public func problem(author: [UInt8], network: [UInt8]) -> String? {
        guard let replaces, let proof else { return nil }
        guard replaces == author else { return "a rotation must be written by the key it replaces" }
        guard Signature.verify(proof, message: Self.rotationMessage(network: network, old: replaces, new: target), publicKey: target) else {
            return "the rotation's proof is not the new key's signature"
        }
        return nil
    }
}

extension KeySets {
    static let vote: Set<String> = ["target", "authorize", "replaces", "proof"]
}

/// The set of authorities and the pending votes, tallied with Clique (EIP-225) semantics:
/// a proposal passes with more than half of the current authorities, only the voted device
/// changes, a signer's newer vote on the same target replaces its older one, votes cast by a
/// dropped device are discarded, and a checkpoint resets all pending votes.
///
/// Unlike Clique there is no "recently signed" limit: an offline device must be able to seal its
/// own writes one block after another (docs/decisions.md).
public struct Membership: Hashable, Sendable {
    /// Blocks per epoch: a block whose height is a multiple of this is a checkpoint.
    public static let epoch: UInt64 = 1024

    public struct Cast: Hashable, Sendable {
        public var signer: [UInt8]
        public var vote: Vote
    }

    public struct Tally: Hashable, Sendable {
        public var authorize: Bool
        public var count: Int
    }

    public private(set) var authorities: Set<[UInt8]>
    /// Votes cast and not yet decided, oldest first.
    public private(set) var votes: [Cast] = []
    public private(set) var tally: [[UInt8]: Tally] = [:]

    public init<S: Sequence>(authorities: S) where S.Element == [UInt8] {
        self.authorities = Set(authorities)
    }

    /// Forgets all pending votes (checkpoint).
    public mutating func checkpoint() {
        votes = []
        tally = [:]
    }

    /// A vote only counts if it would change something.
    func meaningful(_ v: Vote) -> Bool {
        authorities.contains(v.target) != v.authorize
    }

    mutating func cast(_ v: Vote) -> Bool {
        guard meaningful(v) else { return false }
        if var t = tally[v.target] {
            t.count += 1
            tally[v.target] = t
        } else {
            tally[v.target] = Tally(authorize: v.authorize, count: 1)
        }
        return true
    }

    mutating func uncast(_ v: Vote) {
        guard var t = tally[v.target], t.authorize == v.authorize else { return }
        if t.count > 1 {
            t.count -= 1
            tally[v.target] = t
        } else {
            tally[v.target] = nil
        }
    }

    /// A device moves its own seat to a new key (decision 99): no vote by others, because the
    /// number of authorities and who holds power do not change. The seat keeps its votes:
    /// votes the old key cast count as the new key's, and pending votes about the old key
    /// (a drop under way) now concern the new one, so rotating cannot shake off a drop. Pending
    /// votes to add the new key are settled (it holds a seat now). A rotation to a key that
    /// already is an authority, or by a key that is not the one it names, changes nothing.
    mutating func rotate(from signer: [UInt8], to vote: Vote) {
        let new = vote.target
        guard vote.replaces == signer, !authorities.contains(new) else { return }
        authorities.remove(signer)
        authorities.insert(new)
        votes.removeAll { $0.vote.target == new }
        tally[new] = nil
        votes = votes.map { c in
            var c = c
            if c.signer == signer { c.signer = new }
            if c.vote.target == signer { c.vote.target = new }
            return c
        }
        if let t = tally.removeValue(forKey: signer) { tally[new] = t }
    }

    /// Applies a vote found in the ledger: a vote by a device that is no longer an authority
    /// (dropped earlier in the same block) is discarded, as Clique discards a dropped signer's votes.
    public mutating func applyIfAuthority(signer: [UInt8], vote: Vote) {
        guard authorities.contains(signer) else { return }
        try! apply(signer: signer, vote: vote)
    }

    /// Membership after replaying votes in canonical-chain order, with a checkpoint at every
    /// epoch boundary. `votes` holds (block height, signer, vote).
    public static func replay(genesisAuthorities: [[UInt8]], votes: [(height: UInt64, signer: [UInt8], vote: Vote)], tipHeight: UInt64) -> Membership {
        var m = Membership(authorities: genesisAuthorities)
        var epochIndex: UInt64 = 0
        for v in votes {
            if v.height / epoch != epochIndex {
                epochIndex = v.height / epoch
                m.checkpoint()
            }
            m.applyIfAuthority(signer: v.signer, vote: v.vote)
        }
        if tipHeight / epoch != epochIndex { m.checkpoint() }
        return m
    }

    /// Applies `vote` cast by `signer`. Throws if `signer` is not an authority.
    public mutating func apply(signer: [UInt8], vote: Vote) throws(KianaCoreError) {
        guard authorities.contains(signer) else {
            throw KianaCoreError(.invalidEntry, "vote by \(DeviceID(publicKey: signer)), which is not an authority", rule: .authority)
        }
        if vote.isRotation {
            rotate(from: signer, to: vote)
            return
        }
        // A signer's previous vote on the same target is replaced.
        if let i = votes.firstIndex(where: { $0.signer == signer && $0.vote.target == vote.target }) {
            uncast(votes[i].vote)
            votes.remove(at: i)
        }
        if cast(vote) { votes.append(Cast(signer: signer, vote: vote)) }
        guard let t = tally[vote.target], t.count > authorities.count / 2 else { return }
        if t.authorize {
            authorities.insert(vote.target)
        } else {
            authorities.remove(vote.target)
            // Votes the dropped device cast no longer count.
            for c in votes where c.signer == vote.target { uncast(c.vote) }
            votes.removeAll { $0.signer == vote.target }
        }
        // Every pending vote about the changed device is settled.
        votes.removeAll { $0.vote.target == vote.target }
        tally[vote.target] = nil
    }
}
