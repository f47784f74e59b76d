import Foundation
import KianaCore
import KianaServer
import KianaAI
import KianaStore

// What the read commands show, as Codable values: the CLI prints them as text or, with
// `--json`, as they are. Field names are the JSON names; times are milliseconds since 1970.
// Where the REST API shows the same thing, the CLI uses the same type, so `--json` and the API
// agree field for field.

/// A knowledge item (`kiana list`, `kiana show`; `GET /api/v1/knowledge/{id}`).
public typealias ItemView = ItemDTO
/// A ledger entry as listed in a block.
public typealias EntryView = EntryDTO
/// A block (`kiana ledger show`; `GET /api/v1/ledger/blocks/{height}`); entries when shown in full.
public typealias BlockView = BlockDTO
/// A conversation (`kiana conversations`).
public typealias ConversationView = ConversationDTO
/// A message of a conversation (`kiana conversations ID`).
public typealias MessageView = MessageDTO

/// `kiana status`.
public struct StatusView: Codable, Sendable {
    public struct Head: Codable, Sendable {
        public var height: UInt64
        public var hash: String
    }
    public struct PendingVote: Codable, Sendable {
        public var action: String
        public var device: String
        public var by: String
    }
    public var device: String
    public var identityKey: String
    public var network: String
    public var head: Head?
    public var blocks: Int
    public var entries: Int
    public var items: Int
    public var forgottenItems: Int
    public var pending: Int
    /// This device's writes signed again because their sequence numbers had been used for other
    /// entries (a directory restored from an older copy, decision 111).
    public var signedAgain: Int
    /// Pending entries that can never be sealed as they are, per author (device ID): writes,
    /// which only that device can sign again, and votes, which it must cast again.
    public var stuck: [String: StuckCount]
    public struct StuckCount: Codable, Sendable, Equatable {
        public var writes: Int
        public var votes: Int
    }
    public var authorities: [String]
    public var votes: [PendingVote]
    public var dataDirectory: String
    /// True when this process cannot write the data directory (a read-only mount).
    public var readOnly: Bool
    /// The height that last passed verification (`ledger verify` or a node's start), if any.
    public var verifiedHeight: UInt64?
    /// When a node serves this directory: its connections by listener and its descriptors.
    public var connections: ConnectionsDTO?
    /// Why the ledger is marked damaged, if it is (writes and `serve` are refused then).
    public var damage: String?
}

/// `kiana ledger forks`.
public struct ForksView: Codable, Sendable {
    public struct Branch: Codable, Sendable {
        public var tipHeight: UInt64
        public var tipHash: String
        public var forkHeight: UInt64
    }
    public struct Gap: Codable, Sendable {
        public var device: String
        public var missing: [UInt64]
    }
    public struct Conflict: Codable, Sendable {
        public var device: String
        public var sequence: UInt64
        public var entries: [String]
    }
    public var head: StatusView.Head?
    public var sideBranches: [Branch]
    public var orphans: Int
    public var maxOrphans: Int
    public var gaps: [Gap]
    public var equivocations: [Conflict]
}

/// `kiana index status`.
public struct IndexStatusView: Codable, Sendable {
    public var items: Int
    public var embedded: Int
    public var waiting: Int
    /// "hnsw" or "exact".
    public var vectorSearch: String
    public var indexFile: String?
}

/// The outcome of a write command.
public struct WriteView: Codable, Sendable {
    public var item: String?
    public var entry: String
    public var block: UInt64
}

/// `kiana ledger verify`.
public struct VerifyView: Codable, Sendable {
    public var valid: Bool
    public var blocks: Int
    public var entries: Int
    public var height: UInt64
    public var head: String
    public var historyRoot: String
    public var authorities: Int

    public init(_ s: LedgerState) {
        valid = true
        blocks = s.blockCount
        entries = s.entryCount
        height = s.height
        head = Hex.encode(s.tipHash)
        historyRoot = Hex.encode(s.historyRoot)
        authorities = s.authorities.count
    }
}

extension Node {
    public func status() throws -> StatusView {
        let damage = directory.damage
        // A damaged ledger may not even count; status still says what it can, and why.
        let head = damage == nil ? try store.head() : try? store.head()
        let c = damage == nil ? try store.counts() : (try? store.counts()) ?? StoreCounts(blocks: 0, entries: 0, items: 0, deletedItems: 0, pending: 0)
        // A damaged ledger may not replay its votes; status still says what it can, and why.
        let m: Membership? = damage == nil ? try store.membership() : try? store.membership()
        let report = try? store.stuckReport(identity: identity.publicKey)
        return StatusView(
            device: identity.deviceID.description, identityKey: Hex.encode(identity.publicKey),
            network: Hex.encode((damage == nil ? try store.network() : try? store.network()) ?? []),
            head: head.map { .init(height: $0.height, hash: Hex.encode($0.hash)) },
            blocks: c.blocks, entries: c.entries, items: c.items, forgottenItems: c.deletedItems, pending: c.pending,
            signedAgain: report?.signedAgain ?? 0,
            stuck: Dictionary(
                uniqueKeysWithValues: (report?.stuck ?? []).map { (DeviceID(publicKey: $0.author).description, StatusView.StuckCount(writes: $0.writes, votes: $0.votes)) }),
            authorities: (m?.authorities ?? []).map { DeviceID(publicKey: $0).description }.sorted(),
            votes: (m?.votes ?? []).map {
                .init(
                    action: $0.vote.authorize ? "add" : "drop", device: DeviceID(publicKey: $0.vote.target).description,
                    by: DeviceID(publicKey: $0.signer).description)
            },
            dataDirectory: directory.path, readOnly: !directory.isWritable, verifiedHeight: try? store.lastVerified()?.height, damage: damage)
    }

    public func items(includeDeleted: Bool) throws -> [ItemView] {
        try store.items(includeDeleted: includeDeleted).map(ItemView.init)
    }

    public func item(idPrefix: String) throws -> ItemView {
        ItemView(try store.item(idPrefix: idPrefix))
    }

    /// One block in full; `.notFound` names the head when there is no such height.
    public func block(height: UInt64) throws -> BlockView {
        guard let b = try store.blocks(from: height, through: height).first else {
            throw KianaNodeError(.notFound, "no block at height \(height) (head is \(try store.head()?.height ?? 0))")
        }
        return BlockView(b, withEntries: true)
    }

    /// The newest `limit` blocks, oldest first.
    public func recentBlocks(limit: Int) throws -> [BlockView] {
        guard let head = try store.head() else { return [] }
        let n = UInt64(max(limit, 1))
        let from = head.height >= n ? head.height - n + 1 : 0
        return try store.blocks(from: from, through: head.height).map { BlockView($0, withEntries: false) }
    }

    public func forks() throws -> ForksView {
        let head = try store.head()
        return ForksView(
            head: head.map { .init(height: $0.height, hash: Hex.encode($0.hash)) },
            sideBranches: try store.sideBranches().map { .init(tipHeight: $0.tipHeight, tipHash: Hex.encode($0.tipHash), forkHeight: $0.forkHeight) },
            orphans: try store.orphanCount(), maxOrphans: LedgerStore.maxOrphans,
            gaps: try store.sequenceGaps().map { .init(device: DeviceID(publicKey: $0.author).description, missing: $0.missing) },
            equivocations: try store.equivocations().map {
                .init(device: DeviceID(publicKey: $0.author).description, sequence: $0.sequence, entries: $0.entryIDs.map(Hex.encode))
            })
    }

    public func indexStatus() throws -> IndexStatusView {
        let file = FileManager.default.fileExists(atPath: vectorIndexPath)
        return IndexStatusView(
            items: try store.counts().items, embedded: try searchStore.vectorCount(model: Embedder.modelName),
            waiting: try searchStore.countNeedingVectors(model: Embedder.modelName),
            vectorSearch: file ? "hnsw" : "exact", indexFile: file ? vectorIndexPath : nil)
    }

    public func conversationList() throws -> [ConversationView] {
        try conversations.list().map { ConversationView(id: $0.id, title: $0.title, updated: $0.updated, created: $0.created) }
    }

    /// The messages of a conversation (its ID or a unique prefix of 4 or more characters); `.notFound` if there is none.
    public func conversationMessages(_ id: String) throws -> [MessageView] {
        guard let found = try conversations.conversation(idPrefix: id) else { throw KianaNodeError(.notFound, "no conversation \(id)") }
        return try conversations.messages(found.id).map { MessageView(role: $0.role, content: $0.content, citations: $0.citations, created: $0.created) }
    }

    /// Deletes a conversation (its ID or a unique prefix of 4 or more characters) and its
    /// messages; `.notFound` if there is none. Returns the full ID.
    public func deleteConversation(_ id: String) throws -> String {
        try requireWritable()
        guard let found = try conversations.conversation(idPrefix: id) else { throw KianaNodeError(.notFound, "no conversation \(id)") }
        try conversations.delete(found.id)
        return found.id
    }

    /// What a membership vote did: its block, the device voted on, and the tally.
    public struct VoteOutcome: Sendable {
        public var block: UInt64
        public var device: String
        public var passed: Bool
        /// Votes for the proposal so far and how many it needs (more than half of the authorities).
        public var votes: Int
        public var needed: Int
        /// The vote took back this device's own pending vote the other way (nothing else changed).
        public var withdrew = false
    }

    /// Casts a membership vote on `target`: an identity key (64 hex characters) or a device ID
    /// (for a drop, of an authority; for an add, of a device another authority proposed).
    /// Dropping a device that is not an authority is refused. A first vote that would add a key
    /// at once (this device the only authority) and that no pairing proposed needs `force`: a
    /// mistyped key would become an authority that never votes, and could not be dropped again.
    public func vote(add: Bool, target: String, force: Bool = false, now: UInt64 = currentMillis()) throws -> VoteOutcome {
        let before = try store.membership()
        // This device's own pending votes: their targets can be named by device ID, to withdraw.
        let mine = before.votes.filter { $0.signer == identity.publicKey }
        let key = try Self.voteTarget(target, add: add, membership: before, own: mine.map(\.vote.target))
        let pending = mine.first { $0.vote.target == key }
        if let pending, pending.vote.authorize == add {
            let t = before.tally[key]?.count ?? 1
            throw KianaNodeError(
                .conflict,
                "this device has already voted to \(add ? "add" : "drop") \(DeviceID(publicKey: key)) (\(t) of the \(before.authorities.count / 2 + 1) votes needed): the other authorities vote now (`kiana vote \(add ? "add" : "drop") \(DeviceID(publicKey: key))` there)")
        }
        // The opposite vote on a target this device has a pending vote for takes that vote back
        // (the ledger keeps one vote per signer and target).
        let withdrawing = pending != nil && before.authorities.contains(key) == add
        if withdrawing {
            try requireWritable()
            let r = try store.write(vote: Vote(target: key, authorize: add), identity: identity, now: now)
            let after = try store.membership()
            return VoteOutcome(
                block: r.block.height, device: DeviceID(publicKey: key).description, passed: false,
                votes: after.tally[key]?.count ?? 0, needed: after.authorities.count / 2 + 1, withdrew: true)
        }
        if !add, !before.authorities.contains(key) {
            throw KianaNodeError(.invalidInput, "\(DeviceID(publicKey: key)) is not an authority of this network (`kiana status` lists them)")
        }
        if add, before.authorities.contains(key) {
            throw KianaNodeError(.conflict, "\(DeviceID(publicKey: key)) is already an authority of this network: nothing to vote on")
        }
        // With no authority left nobody could ever write, vote or pair again: never, not even forced.
        if !add, before.authorities.count == 1 {
            throw KianaNodeError(
                .conflict,
                "\(DeviceID(publicKey: key)) is the network's only authority: dropping it would leave no device that can write, vote or pair, for good. Pair another device first (`kiana pair`), then drop this one")
        }
        if !add, key == identity.publicKey, !force {
            throw KianaNodeError(
                .conflict,
                "this vote is to drop this device itself: once it passes, this device can no longer write, vote or pair (only the others can add it again). If that is what you want, vote again with --force")
        }
        let proposed = before.tally[key].map { $0.authorize == add && $0.count > 0 } ?? false
        if add, !force, !proposed, !before.authorities.contains(key), 1 > before.authorities.count / 2 {
            throw KianaNodeError(
                .conflict,
                "this vote alone would make \(DeviceID(publicKey: key)) an authority, and no pairing proposed it. Devices join by pairing (`kiana pair` here, `kiana join` there). If this key is right (`kiana status` on that device prints it), vote again with --force")
        }
        try requireWritable()
        let r = try store.write(vote: Vote(target: key, authorize: add), identity: identity, now: now)
        let after = try store.membership()
        let passed = after.authorities.contains(key) == add
        let tally = after.tally[key].map { $0.authorize == add ? $0.count : 0 } ?? 0
        return VoteOutcome(
            block: r.block.height, device: DeviceID(publicKey: key).description, passed: passed, votes: passed ? 0 : tally,
            needed: after.authorities.count / 2 + 1)
    }

    /// The identity key a vote names: 64 hex characters, or a device ID among the authorities
    /// (drop) or the devices proposed for adding (add).
    static func voteTarget(_ text: String, add: Bool, membership: Membership, own: [[UInt8]] = []) throws -> [UInt8] {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        if trimmed.count == 64 {
            guard let key = Hex.decode(trimmed) else { throw KianaNodeError(.invalidInput, "the key must be 64 hex characters") }
            return key
        }
        let device: DeviceID
        do { device = try DeviceID(parsing: trimmed) } catch {
            throw KianaNodeError(
                .invalidInput, "give the device's identity key (64 hex characters, `kiana status` on that device) or its device ID: \(error.message)")
        }
        // An add names a proposed device, or an authority (to be told it is one already).
        let candidates = (add ? membership.tally.filter { $0.value.authorize }.map(\.key) : []) + Array(membership.authorities) + own
        guard let key = candidates.first(where: { DeviceID(publicKey: $0) == device }) else {
            throw KianaNodeError(
                .notFound,
                add
                    ? "no authority has proposed adding \(device); give its identity key (64 hex characters, `kiana status` on that device)"
                    : "\(device) is not an authority of this network (`kiana status` lists them)")
        }
        return key
    }

    /// Remembers a peer's address (HOST:PORT, checked) for the dialer; false if it was known.
    /// Refuses the running node's own link listener (it would dial itself forever).
    public func addPeer(address: String, now: UInt64 = currentMillis()) throws -> Bool {
        try Discovery.checkPeerAddress(address)
        if let rt = directory.readRuntime(), let (host, port) = Discovery.hostAndPort(address), port == rt.p2pPort,
            ["127.0.0.1", "localhost", "::1", "0.0.0.0", "::", rt.p2pHost].contains(host.lowercased().hasSuffix(".") ? String(host.lowercased().dropLast()) : host.lowercased())
        {
            throw KianaNodeError(.invalidInput, "\(address) is this device's own link listener; add the other device's address")
        }
        try requireWritable()
        return try store.addPeerAddress(address, now: now)
    }

    /// Forgets a peer address added with `addPeer`; false if it was not known.
    public func removePeer(address: String) throws -> Bool {
        try requireWritable()
        return try store.removePeerAddress(address)
    }

    public var isAuthority: Bool { get throws { try store.authorities().contains(identity.publicKey) } }
    public func counts() throws -> StoreCounts { try store.counts() }
    public func head() throws -> LedgerHead? { try store.head() }
    public func network() throws -> [UInt8]? { try store.network() }
}

/// `kiana search`: the query, the mode, and the hits best first.
public struct SearchView: Codable, Sendable {
    public struct Hit: Codable, Sendable {
        public var id: String
        public var score: Double
        public var keywordRank: Int?
        public var bm25: Double?
        public var vectorRank: Int?
        public var cosine: Double?
        public var title: String?
        public var source: String?
        public var text: String?
    }
    public var query: String
    public var mode: String
    public var results: [Hit]
    /// Why the search ran otherwise than asked (hybrid without the embedding model: keyword only).
    public var note: String?
}

extension Node {
    /// Searches the knowledge base: `mode` is hybrid, vector or keyword; `tag` and `source`
    /// (a path prefix: relative paths are made absolute) filter. Vector modes load the embedder.
    public func search(
        _ query: String, k: Int, mode: String, tag: String?, source: String?, modelDirectory: String,
        progress: ProgressHandler? = nil
    ) throws -> SearchView {
        guard let m = SearchMode(rawValue: mode) else { throw KianaNodeError(.invalidInput, "--mode must be hybrid, vector or keyword") }
        guard (1...1000).contains(k) else { throw KianaNodeError(.invalidInput, "--k must be 1…1000") }
        guard !query.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else { throw KianaNodeError(.invalidInput, "the search query is empty") }
        let filter = SearchFilter(
            tag: tag,
            sourcePrefix: try source.map { s in
                // A path as typed in a shell: absolute, ~ or ./ always; a bare name (`notes` after
                // `kiana ingest notes`) when it exists here and items were ingested from it, else
                // it is matched as typed (a free-text source such as `chat`).
                let absolute = URL(fileURLWithPath: (s as NSString).expandingTildeInPath).standardizedFileURL.path
                if s.hasPrefix("/") || s.hasPrefix("~") || s.hasPrefix(".") { return absolute }
                guard !s.contains("://"), FileManager.default.fileExists(atPath: s) else { return s }
                let ingested = try searchStore.hasItems(sourcePrefix: absolute)
                return ingested ? absolute : s
            })
        var hits: [SearchHit] = []
        var note: String?
        func keyword() throws -> [SearchHit] {
            try searchStore.keywordSearch(query, limit: k, filter: filter).enumerated().map {
                SearchHit(id: $1.0, score: $1.1, keywordRank: $0 + 1, keywordScore: $1.1)
            }
        }
        if m == .keyword {
            hits = try keyword()
        } else {
            do {
                let embedder = try Node.loadEmbedder(modelDirectory: modelDirectory)
                hits = try retriever(embedder, progress: progress).search(query, k: k, mode: m, filter: filter)
            } catch let e as KianaAIError where m == .hybrid && e.code == .modelMissing {
                // Hybrid without the embedding model is keyword search, said (as a node serves it).
                note = "\(e.message); searched by keyword only"
                hits = try keyword()
            }
        }
        let items = try searchStore.items(hits.map(\.id))
        return SearchView(
            query: query, mode: m.rawValue,
            results: hits.map { h in
                let i = items[h.id]
                return SearchView.Hit(
                    id: h.id.description, score: h.score, keywordRank: h.keywordRank, bm25: h.keywordScore,
                    vectorRank: h.vectorRank, cosine: h.vectorScore, title: i?.title, source: i?.source, text: i?.text)
            }, note: note)
    }
}
