import KianaCore

/// Ledger blocks and entries as JSON objects for the API and the ledger explorer.
public enum LedgerJSON {
    /// A block header: height, hash, parent, time, signer (device ID and key), entry root and count.
    public static func header(_ b: Block) -> [String: any Sendable] {
        let h = b.header
        var o: [String: any Sendable] = ["height": Int(h.height), "hash": b.hashHex, "parent": Hex.encode(h.parent), "time": Int(h.time),
                                         "signer": Hex.encode(h.signer), "signerDevice": DeviceID(publicKey: h.signer).description,
                                         "entryRoot": Hex.encode(h.entryRoot), "entryCount": Int(h.entryCount),
                                         "signature": Hex.encode(b.signature)]
        if let name = h.name { o["name"] = name }
        if let a = h.authorities { o["authorities"] = a.map(Hex.encode) }
        return o
    }

    /// An entry: its signed fields and, for knowledge operations, the item and fields it sets.
    public static func entry(_ e: Entry) -> [String: any Sendable] {
        var o: [String: any Sendable] = ["id": Hex.encode(e.id), "kind": e.kind.rawValue, "author": Hex.encode(e.author),
                                         "authorDevice": DeviceID(publicKey: e.author).description,
                                         "sequence": Int(e.sequence), "hlc": e.hlc.description, "signature": Hex.encode(e.signature)]
        if let op = try? KnowledgeOp(kind: e.kind, payload: e.payload) {
            switch op {
            case .put(let id, let f):
                var fields: [String: any Sendable] = [:]
                if let v = f.title { fields["title"] = v }
                if let v = f.text { fields["text"] = v }
                if let v = f.tags { fields["tags"] = v }
                if let v = f.source { fields["source"] = v }
                o["item"] = id.description
                o["fields"] = fields
            case .delete(let id):
                o["item"] = id.description
            }
        }
        return o
    }
}
