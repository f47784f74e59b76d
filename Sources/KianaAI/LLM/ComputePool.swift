import Foundation
import Synchronization

/// A fixed set of worker threads for the engine's parallel loops. A token's forward pass has a
/// few hundred parallel steps of tens of microseconds each, too short for a dispatch queue's
/// hand-off: the workers spin briefly on a generation counter between steps and sleep on a
/// condition when the engine is idle. The caller always takes part as worker 0.
/// `@unchecked`: its threads synchronise through atomics and a condition, not through Swift's checker.
public final class ComputePool: @unchecked Sendable {
    public let threads: Int
    private let generation = Atomic<Int>(0)
    private let pending = Atomic<Int>(0)
    private let sleepers = Atomic<Int>(0)
    private let stopping = Atomic<Bool>(false)
    private let condition = NSCondition()
    private var job: ((Int) -> Void)?
    private var workers: [Thread] = []
    /// Serialises callers: one parallel loop at a time.
    private let busy = NSLock()

    /// `threads` ≥ 1 workers in total, the caller included.
    public init(threads: Int) {
        self.threads = max(1, threads)
        for index in 1..<self.threads {
            let t = Thread { self.work(index) }  // the workers keep the pool alive until shutdown()
            t.name = "kiana-llm-\(index)"
            t.stackSize = 1 << 20
            workers.append(t)
            t.start()
        }
    }

    /// Stops the workers (they exit after their current step). Called by the owner when done.
    public func shutdown() {
        stopping.store(true, ordering: .sequentiallyConsistent)
        condition.lock()
        generation.add(1, ordering: .sequentiallyConsistent)
        condition.broadcast()
        condition.unlock()
    }

    private func work(_ index: Int) {
        var seen = 0
        while true {
            var spins = 0
            var g = generation.load(ordering: .acquiring)
            while g == seen {
                spins += 1
                if spins < 20_000 {
                    g = generation.load(ordering: .acquiring)
                    continue
                }
                condition.lock()
                sleepers.add(1, ordering: .sequentiallyConsistent)
                while generation.load(ordering: .sequentiallyConsistent) == seen { condition.wait() }
                sleepers.subtract(1, ordering: .sequentiallyConsistent)
                condition.unlock()
                g = generation.load(ordering: .acquiring)
            }
            seen = g
            if stopping.load(ordering: .acquiring) { return }
            job?(index)
            pending.subtract(1, ordering: .releasing)
        }
    }

    /// Runs `body(worker)` on every worker (0..<threads) and returns when all are done.
    public func run(_ body: (Int) -> Void) {
        if threads == 1 {
            body(0)
            return
        }
        busy.lock()
        defer { busy.unlock() }
        withoutActuallyEscaping(body) { b in
            job = b
            pending.store(threads - 1, ordering: .sequentiallyConsistent)
            generation.add(1, ordering: .sequentiallyConsistent)
            if sleepers.load(ordering: .sequentiallyConsistent) > 0 {
                condition.lock()
                condition.broadcast()
                condition.unlock()
            }
            b(0)
            while pending.load(ordering: .acquiring) > 0 {}
            job = nil
        }
    }

    /// Splits 0..<count into one contiguous range per worker (in multiples of `grain`).
    public func parallelFor(_ count: Int, grain: Int = 1, _ body: (Range<Int>) -> Void) {
        guard count > 0 else { return }
        let units = (count + grain - 1) / grain
        let n = min(threads, units)
        if n == 1 {
            body(0..<count)
            return
        }
        run { w in
            guard w < n else { return }
            let lo = units * w / n * grain
            let hi = min(count, units * (w + 1) / n * grain)
            if lo < hi { body(lo..<hi) }
        }
    }
}
