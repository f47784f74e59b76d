import Foundation
import KianaAI

/// `kiana bench llm`: prompt processing and generation tokens/s of the embedded engine beside
/// llama.cpp's llama-bench on the same GGUF file and thread counts, in the same run; and the
/// resident memory while generating against the file size and the KV cache.
public struct LLMBench: Sendable {
    public var modelPath: String
    public var threads: [Int]
    public var promptTokens: Int
    public var generateTokens: Int
    public var repeats: Int
    /// llama-bench binary (nil: look in $KIANA_LLAMA_CPP_DIR or ~/.kiana/llama.cpp).
    public var llamaBench: String?

    public init(modelPath: String, threads: [Int] = [1, 2], promptTokens: Int = 128, generateTokens: Int = 64, repeats: Int = 3, llamaBench: String? = nil) {
        self.modelPath = modelPath
        self.threads = threads
        self.promptTokens = promptTokens
        self.generateTokens = generateTokens
        self.repeats = repeats
        self.llamaBench = llamaBench
    }

    public static func defaultLlamaBench() -> String? {
        let env = ProcessInfo.processInfo.environment
        let dir = env["KIANA_LLAMA_CPP_DIR"].flatMap { $0.isEmpty ? nil : $0 } ?? (env["HOME"] ?? NSHomeDirectory()) + "/.kiana/llama.cpp"
        let p = dir + "/build/bin/llama-bench"
        return FileManager.default.isExecutableFile(atPath: p) ? p : nil
    }

    struct Rate {
        var pp: Double
        var tg: Double
    }

    /// Ours: pp = one batched evaluation of `promptTokens` tokens from an empty cache;
    /// tg = `generateTokens` single-token evaluations (argmax fed back), as llama-bench counts them;
    /// the mean tokens/s over the repeats, as llama-bench reports.
    func ours(_ model: LlamaModel, threads: Int) throws -> (Rate, Int) {
        let vocab = Int32(model.config.vocab)
        var gen = SplitMix64(seed: 1)
        let prompt = (0..<promptTokens).map { _ in Int32(gen.next() % UInt64(vocab)) }
        var sumPP = 0.0
        var sumTG = 0.0
        var rss = 0
        for _ in 0..<repeats {
            let s = LlamaSession(model: model, contextSize: promptTokens + generateTokens + 16, threads: threads, batchSize: 512)
            let t0 = DispatchTime.now().uptimeNanoseconds
            try s.eval(prompt)
            let t1 = DispatchTime.now().uptimeNanoseconds
            sumPP += Double(promptTokens) / (Double(t1 - t0) / 1e9)
            let g = LlamaSession(model: model, contextSize: generateTokens + 16, threads: threads)
            var tok: Int32 = model.tokenizer.bos ?? 1
            let t2 = DispatchTime.now().uptimeNanoseconds
            for _ in 0..<generateTokens {
                try g.eval([tok])
                var best = 0
                g.logits.withUnsafeBufferPointer { l in for i in 1..<l.count where l[i] > l[best] { best = i } }
                tok = Int32(best)
            }
            let t3 = DispatchTime.now().uptimeNanoseconds
            sumTG += Double(generateTokens) / (Double(t3 - t2) / 1e9)
            rss = max(rss, ProcessMemory.of().rss)
        }
        return (Rate(pp: sumPP / Double(repeats), tg: sumTG / Double(repeats)), rss)
    }

    /// llama.cpp's llama-bench on the same file (mean tokens/s of its repetitions).
    func llamaCpp(_ bin: String, threads: Int) throws -> Rate? {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: bin)
        p.arguments = ["-m", modelPath, "-t", "\(threads)", "-p", "\(promptTokens)", "-n", "\(generateTokens)", "-r", "\(repeats)", "-o", "json"]
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0, let rows = try? JSONSerialization.jsonObject(with: data) as? [[String: Any]] else { return nil }
        var rate = Rate(pp: 0, tg: 0)
        for r in rows {
            let ts = r["avg_ts"] as? Double ?? 0
            if (r["n_prompt"] as? Int ?? 0) > 0 { rate.pp = ts } else if (r["n_gen"] as? Int ?? 0) > 0 { rate.tg = ts }
        }
        return rate
    }

    public func run(progress: (String) -> Void) throws -> String {
        progress("loading \(modelPath)")
        let model = try LlamaModel(path: modelPath)
        let fileBytes = model.gguf.file.count
        let bin = llamaBench ?? Self.defaultLlamaBench()
        var lines = [
            "LLM engine: \(model.name) (\(model.gguf.quantisation), \(String(format: "%.1f", Double(fileBytes) / 1e6)) MB), prompt \(promptTokens) tokens, generation \(generateTokens) tokens, mean of \(repeats) runs each",
            "threads  ours pp tok/s  llama.cpp pp  ratio   ours tg tok/s  llama.cpp tg  ratio",
        ]
        var peak = 0
        for t in threads {
            progress("ours, \(t) thread(s)")
            let (r, rss) = try ours(model, threads: t)
            peak = max(peak, rss)
            var ref: Rate?
            if let bin {
                progress("llama-bench, \(t) thread(s)")
                ref = try llamaCpp(bin, threads: t)
            }
            func col(_ v: Double?) -> String { v.map { String(format: "%12.1f", $0) } ?? "           -" }
            func ratio(_ a: Double, _ b: Double?) -> String { b.map { $0 > 0 ? String(format: "%5.2fx", a / $0) : "    -" } ?? "    -" }
            lines.append(
                String(format: "%7d  %13.1f", t, r.pp) + "  " + col(ref?.pp) + "  " + ratio(r.pp, ref?.pp)
                    + String(format: "   %13.1f", r.tg) + "  " + col(ref?.tg) + "  " + ratio(r.tg, ref?.tg))
        }
        if bin == nil { lines.append("llama.cpp comparison skipped: llama-bench is not built (run scripts/llama-cpp.sh, or `make bench`)") }
        let kv = model.kvBytesPerToken * (promptTokens + generateTokens + 16)
        let limit = 2 * fileBytes + kv
        lines.append(
            String(
                format: "memory: resident %.1f MB while generating; limit 2 × file + KV cache = %.1f MB (%@)",
                Double(peak) / 1e6, Double(limit) / 1e6, peak < limit ? "within" : "OVER"))
        return lines.joined(separator: "\n")
    }
}
