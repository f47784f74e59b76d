/// A knowledge item's ID: 16 random bytes, shown as 32 lowercase hex characters.
public struct ItemID: Hashable, Comparable, Sendable, CustomStringConvertible {
    public let bytes: [UInt8]

    public init(bytes: [UInt8]) throws(KianaCoreError) {
        guard bytes.count == 16 else { throw KianaCoreError(.invalidStructure, "item ID must be 16 bytes") }
        self.bytes = bytes
    }

    public static func random() -> ItemID {
        var g = SystemRandomNumberGenerator()
        return try! ItemID(bytes: (0..<16).map { _ in UInt8.random(in: 0...255, using: &g) })
    }

    /// All zeros (a placeholder for measuring a payload's size).
    public static let zero = try! ItemID(bytes: [UInt8](repeating: 0, count: 16))

    public var description: String { Hex.encode(bytes) }
    public static func < (a: ItemID, b: ItemID) -> Bool { a.bytes.lexicographicallyPrecedes(b.bytes) }
}

/// The total order that decides every last-writer-wins conflict: HLC, then author key, then
/// entry ID (so even a buggy author reusing a timestamp cannot make devices disagree).
public struct Stamp: Hashable, Comparable, Sendable {
    public let hlc: HLC
    public let author: [UInt8]
    public let entryID: [UInt8]

    public init(hlc: HLC, author: [UInt8], entryID: [UInt8]) {
        self.hlc = hlc
        self.author = author
        self.entryID = entryID
    }

    public init(_ e: Entry) { self.init(hlc: e.hlc, author: e.author, entryID: e.id) }

    public static func < (a: Stamp, b: Stamp) -> Bool {
        if a.hlc != b.hlc { return a.hlc < b.hlc }
        if a.author != b.author { return a.author.lexicographicallyPrecedes(b.author) }
        return a.entryID.lexicographicallyPrecedes(b.entryID)
    }

    var cbor: CBOR { .array([hlc.cbor, .bytes(author), .bytes(entryID)]) }

    init(cbor: CBOR) throws(KianaCoreError) {
        let a = try cbor.arrayValue("stamp")
        guard a.count == 3 else { throw KianaCoreError(.invalidStructure, "stamp must have 3 parts") }
        hlc = try HLC(cbor: a[0])
        author = try a[1].bytesValue("stamp author", count: 32)
        entryID = try a[2].bytesValue("stamp entry", count: 32)
    }
}

/// A last-writer-wins register.
public struct Register<Value: Hashable & Sendable>: Hashable, Sendable {
    public var value: Value
    public var stamp: Stamp

    public init(_ value: Value, _ stamp: Stamp) {
        self.value = value
        self.stamp = stamp
    }

    static func merge(_ a: Register?, _ b: Register?) -> Register? {
        guard let a else { return b }
        guard let b else { return a }
        return b.stamp > a.stamp ? b : a
    }
}

/// A knowledge operation, parsed and validated from an entry's payload.
public enum KnowledgeOp: Hashable, Sendable {
    /// Sets the given fields (nil = leave as is).
    case put(ItemID, KnowledgeFields)
    case delete(ItemID)

    public static let maxTextBytes = 512 * 1024
    public static let maxTitleBytes = 1024
    public static let maxTags = 64
    public static let maxTagBytes = 128
    /// Largest put payload a local write creates, leaving room in the entry for its envelope.
    public static let maxPutPayloadBytes = LedgerLimits.maxEntryBytes - 4096
    /// Longest `source` a new local write may set (a path or URL). Not a ledger rule: entries
    /// from peers are bounded by `LedgerLimits.maxEntryBytes` alone.
    public static let maxSourceBytes = 4096

    public var itemID: ItemID {
        switch self {
        case .put(let id, _), .delete(let id): return id
        }
    }

    public var kind: EntryKind {
        switch self {
        case .put: return .knowledgePut
        case .delete: return .knowledgeDelete
        }
    }

    public var payload: CBOR {
        switch self {
        case .delete(let id):
            return .map(["id": .bytes(id.bytes)])
        case .put(let id, let f):
            var m: [CBOR: CBOR] = ["id": .bytes(id.bytes)]
            if let t = f.title { m["title"] = .text(t) }
            if let t = f.text { m["text"] = .text(t) }
            if let t = f.tags { m["tags"] = .array(t.map { .text($0) }) }
            if let t = f.source { m["source"] = .text(t) }
            return .map(m)
        }
    }

    /// Parses an entry of a knowledge kind; throws `.invalidStructure` for a bad payload.
    public init(kind: EntryKind, payload: CBOR) throws(KianaCoreError) {
        let m = try payload.mapValue("knowledge payload")
        let id = try ItemID(bytes: m.required("id", in: "knowledge payload").bytesValue("item id", count: 16))
        switch kind {
        case .knowledgeDelete:
            try m.onlyKeys(KeySets.deletePayload, in: "delete payload")
            self = .delete(id)
        case .knowledgePut:
            try m.onlyKeys(KeySets.putPayload, in: "put payload")
            var f = KnowledgeFields()
            f.title = try m["title"].map { (c: CBOR) throws(KianaCoreError) in try c.textValue("title") }
            f.text = try m["text"].map { (c: CBOR) throws(KianaCoreError) in try c.textValue("text") }
            f.source = try m["source"].map { (c: CBOR) throws(KianaCoreError) in try c.textValue("source") }
            f.tags = try m["tags"].map { (c: CBOR) throws(KianaCoreError) in
                try c.arrayValue("tags").map { (t: CBOR) throws(KianaCoreError) in try t.textValue("tag") }
            }
            guard f.title != nil || f.text != nil || f.tags != nil || f.source != nil else {
                throw KianaCoreError(.invalidStructure, "put payload sets no field")
            }
            try f.validate()
            self = .put(id, f)
        default:
            throw KianaCoreError(.invalidStructure, "\(kind) is not a knowledge kind")
        }
    }
}

/// The user-visible fields of a knowledge item; in a put, nil means "unchanged".
public struct KnowledgeFields: Hashable, Sendable {
    public var title: String?
    public var text: String?
    public var tags: [String]?
    public var source: String?

    public init(title: String? = nil, text: String? = nil, tags: [String]? = nil, source: String? = nil) {
        self.title = title
        self.text = text
        self.tags = tags
        self.source = source
    }

    /// The ledger's rule for a put's fields (also applied to entries from other devices).
    public func validate() throws(KianaCoreError) {
        if let text, text.utf8.count > KnowledgeOp.maxTextBytes {
            throw KianaCoreError(.tooLarge, "text is longer than \(KnowledgeOp.maxTextBytes) bytes")
        }
        if let title, title.utf8.count > KnowledgeOp.maxTitleBytes {
            throw KianaCoreError(.tooLarge, "title is longer than \(KnowledgeOp.maxTitleBytes) bytes")
        }
        if let tags {
            guard tags.count <= KnowledgeOp.maxTags else { throw KianaCoreError(.tooLarge, "more than \(KnowledgeOp.maxTags) tags") }
            for t in tags where t.isEmpty || t.utf8.count > KnowledgeOp.maxTagBytes {
                throw KianaCoreError(.invalidInput, "a tag must have 1 to \(KnowledgeOp.maxTagBytes) bytes")
            }
        }
        // NUL cannot be stored as SQL text faithfully (it ends a C string): an item holding one
        // would read back different from its entry and fail every verification after it.
        for (name, value) in [("text", text), ("title", title), ("source", source)] where value?.utf8.contains(0) == true {
            throw KianaCoreError(.invalidInput, "\(name) must not contain NUL characters")
        }
        if tags?.contains(where: { $0.utf8.contains(0) }) == true {
            throw KianaCoreError(.invalidInput, "tags must not contain NUL characters")
        }
    }

    /// The rule for fields entering through this device (CLI, HTTP, ingest): the ledger's rule,
    /// plus a bounded `source`, no control characters in title, tags and source, and a put that
    /// fits in one entry. The one place input fields are checked.
    public func validateInput() throws(KianaCoreError) {
        try validate()
        if let source, source.utf8.count > KnowledgeOp.maxSourceBytes {
            throw KianaCoreError(.tooLarge, "source is longer than \(KnowledgeOp.maxSourceBytes) bytes")
        }
        for (name, value) in [("title", title), ("source", source)] {
            if let value, value.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) {
                throw KianaCoreError(.invalidInput, "\(name) must not contain control characters")
            }
        }
        for t in tags ?? [] where t.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) {
            throw KianaCoreError(.invalidInput, "tags must not contain control characters")
        }
        let size = KnowledgeOp.put(ItemID.zero, self).payload.encoded.count
        guard size <= KnowledgeOp.maxPutPayloadBytes else {
            throw KianaCoreError(.tooLarge, "the item's fields take \(size) bytes, more than one ledger entry holds (\(KnowledgeOp.maxPutPayloadBytes))")
        }
    }
}

/// The CRDT state of one knowledge item. Every field is a join-semilattice, so merging is
/// commutative, associative and idempotent.
public struct ItemState: Hashable, Sendable {
    public let id: ItemID
    public var title: Register<String>?
    public var text: Register<String>?
    public var tags: Register<[String]>?
    public var source: Register<String>?
    /// Earliest and latest put, and latest delete.
    public var firstPut: Stamp?
    public var lastPut: Stamp?
    public var lastDelete: Stamp?

    public init(id: ItemID) { self.id = id }

    /// A put after the latest delete revives the item; otherwise the tombstone wins.
    public var isDeleted: Bool {
        guard let lastPut else { return true }
        guard let lastDelete else { return false }
        return lastDelete > lastPut
    }

    /// The same state with every stamp of entry `old` naming entry `new` instead (an entry
    /// superseded by a copy of it: same clock, author and content, decision 111).
    public func renamingEntry(_ old: [UInt8], to new: [UInt8]) -> ItemState {
        func rename(_ s: Stamp?) -> Stamp? {
            guard let s, s.entryID == old else { return s }
            return Stamp(hlc: s.hlc, author: s.author, entryID: new)
        }
        func rename<V>(_ r: Register<V>?) -> Register<V>? {
            guard let r, r.stamp.entryID == old else { return r }
            return Register(r.value, Stamp(hlc: r.stamp.hlc, author: r.stamp.author, entryID: new))
        }
        var s = self
        s.title = rename(title)
        s.text = rename(text)
        s.tags = rename(tags)
        s.source = rename(source)
        s.firstPut = rename(firstPut)
        s.lastPut = rename(lastPut)
        s.lastDelete = rename(lastDelete)
        return s
    }

    public var created: HLC? { firstPut?.hlc }
    public var updated: HLC? { [lastPut, lastDelete].compactMap { $0 }.max()?.hlc }

    public mutating func apply(_ op: KnowledgeOp, stamp: Stamp) {
        switch op {
        case .delete:
            lastDelete = max(lastDelete ?? stamp, stamp)
        case .put(_, let f):
            if let v = f.title { title = Register.merge(title, Register(v, stamp)) }
            if let v = f.text { text = Register.merge(text, Register(v, stamp)) }
            if let v = f.tags { tags = Register.merge(tags, Register(v, stamp)) }
            if let v = f.source { source = Register.merge(source, Register(v, stamp)) }
            firstPut = min(firstPut ?? stamp, stamp)
            lastPut = max(lastPut ?? stamp, stamp)
        }
    }

    public func merged(with o: ItemState) -> ItemState {
        precondition(id == o.id, "merging different items")
        var r = self
        r.title = Register.merge(title, o.title)
        r.text = Register.merge(text, o.text)
        r.tags = Register.merge(tags, o.tags)
        r.source = Register.merge(source, o.source)
        r.firstPut = [firstPut, o.firstPut].compactMap { $0 }.min()
        r.lastPut = [lastPut, o.lastPut].compactMap { $0 }.max()
        r.lastDelete = [lastDelete, o.lastDelete].compactMap { $0 }.max()
        return r
    }

    /// Canonical CBOR, used by the store to persist the full register state.
    public var cbor: CBOR {
        var m: [CBOR: CBOR] = ["id": .bytes(id.bytes)]
        func reg(_ r: Register<String>?) -> CBOR? { r.map { .array([.text($0.value), $0.stamp.cbor]) } }
        m["title"] = reg(title)
        m["text"] = reg(text)
        m["source"] = reg(source)
        m["tags"] = tags.map { .array([.array($0.value.map { .text($0) }), $0.stamp.cbor]) }
        m["first"] = firstPut?.cbor
        m["lastPut"] = lastPut?.cbor
        m["lastDel"] = lastDelete?.cbor
        return .map(m)
    }

    /// `cbor.encoded`, written directly (no map built and sorted): every item row stores it and
    /// the start-up check encodes every item. Keys in deterministic order (length, then bytes):
    /// id, tags, text, first, title, source, lastDel, lastPut.
    public var encoded: [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(256 + (self.text?.value.utf8.count ?? 0) + (title?.value.utf8.count ?? 0))
        func text(_ s: String) {
            CBOR.head(3, UInt64(s.utf8.count), &out)
            out.append(contentsOf: s.utf8)
        }
        func stamp(_ st: Stamp) {
            CBOR.head(4, 3, &out)
            CBOR.head(4, 2, &out)
            CBOR.head(0, st.hlc.wall, &out)
            CBOR.head(0, UInt64(st.hlc.logical), &out)
            CBOR.head(2, UInt64(st.author.count), &out)
            out.append(contentsOf: st.author)
            CBOR.head(2, UInt64(st.entryID.count), &out)
            out.append(contentsOf: st.entryID)
        }
        func register(_ key: String, _ r: Register<String>?) {
            guard let r else { return }
            text(key)
            CBOR.head(4, 2, &out)
            text(r.value)
            stamp(r.stamp)
        }
        let present = [tags != nil, self.text != nil, firstPut != nil, title != nil, source != nil, lastDelete != nil, lastPut != nil]
        CBOR.head(5, UInt64(1 + present.filter { $0 }.count), &out)
        text("id")
        CBOR.head(2, UInt64(id.bytes.count), &out)
        out.append(contentsOf: id.bytes)
        if let tags {
            text("tags")
            CBOR.head(4, 2, &out)
            CBOR.head(4, UInt64(tags.value.count), &out)
            for t in tags.value { text(t) }
            stamp(tags.stamp)
        }
        register("text", self.text)
        if let firstPut {
            text("first")
            stamp(firstPut)
        }
        register("title", title)
        register("source", source)
        if let lastDelete {
            text("lastDel")
            stamp(lastDelete)
        }
        if let lastPut {
            text("lastPut")
            stamp(lastPut)
        }
        return out
    }

    public init(cbor: CBOR) throws(KianaCoreError) {
        let m = try cbor.mapValue("item state")
        id = try ItemID(bytes: m.required("id", in: "item state").bytesValue("id", count: 16))
        func reg(_ k: String) throws(KianaCoreError) -> Register<String>? {
            guard let c = m[.text(k)] else { return nil }
            let a = try c.arrayValue(k)
            guard a.count == 2 else { throw KianaCoreError(.invalidStructure, "\(k) register must have 2 parts") }
            return Register(try a[0].textValue(k), try Stamp(cbor: a[1]))
        }
        title = try reg("title")
        text = try reg("text")
        source = try reg("source")
        if let c = m["tags"] {
            let a = try c.arrayValue("tags")
            guard a.count == 2 else { throw KianaCoreError(.invalidStructure, "tags register must have 2 parts") }
            let v = try a[0].arrayValue("tags").map { (t: CBOR) throws(KianaCoreError) in try t.textValue("tag") }
            tags = Register(v, try Stamp(cbor: a[1]))
        }
        firstPut = try m["first"].map { (c: CBOR) throws(KianaCoreError) in try Stamp(cbor: c) }
        lastPut = try m["lastPut"].map { (c: CBOR) throws(KianaCoreError) in try Stamp(cbor: c) }
        lastDelete = try m["lastDel"].map { (c: CBOR) throws(KianaCoreError) in try Stamp(cbor: c) }
    }
}

/// The knowledge base as a state-based CRDT: a pure function of the set of entries applied.
public struct KnowledgeState: Hashable, Sendable {
    public private(set) var items: [ItemID: ItemState] = [:]

    public init() {}

    /// Room for `items` items without growing (a state rebuilt from a whole ledger).
    public mutating func reserveCapacity(_ items: Int) { self.items.reserveCapacity(items) }

    /// The state for a set of entries; order and duplicates do not matter.
    public init<S: Sequence>(entries: S) where S.Element == Entry {
        for e in entries { apply(e) }
    }

    /// Applies a knowledge entry; entries of other kinds are ignored. Payloads were validated
    /// with the block, so an invalid one here is skipped rather than trusted.
    public mutating func apply(_ entry: Entry) {
        guard EntryKind.known.contains(entry.kind),
            let op = try? KnowledgeOp(kind: entry.kind, payload: entry.payload)
        else { return }
        items[op.itemID, default: ItemState(id: op.itemID)].apply(op, stamp: Stamp(entry))
    }

    public func merged(with other: KnowledgeState) -> KnowledgeState {
        var r = self
        for (id, s) in other.items {
            r.items[id] = r.items[id].map { $0.merged(with: s) } ?? s
        }
        return r
    }

    /// Items that are not deleted, newest update first.
    public var visible: [ItemState] {
        items.values.filter { !$0.isDeleted }.sorted { ($0.updated ?? .zero, $0.id) > ($1.updated ?? .zero, $1.id) }
    }
}

/// Allowed map keys, built once.
extension KeySets {
    static let deletePayload: Set<String> = ["id"]
    static let putPayload: Set<String> = ["id", "title", "text", "tags", "source"]
}
