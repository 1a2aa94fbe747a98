import Foundation

/// Samples the whole machine's CPU time from `/proc/stat`, and the page cache's dirty bytes from
/// `/proc/meminfo`, every 100 ms while a phase runs.
///
/// The machine this benchmark was written on is a virtual machine, and its speed varies: the
/// same code has drained a fifth faster or slower from one run to the next, and now and then
/// every process on it, the benchmark's own producer included, stopped for 100 ms at once. The
/// hypervisor counts the time it ran something else while this machine had work to do as
/// *steal*. With the probe beside them, the figures say whether a slow phase or a stall came
/// from there.
///
/// The dirty bytes show when Linux writes back what PostgreSQL left in the page cache: above
/// all the zeroed pages it writes each time it extends a table or index, about 3 MB/s in the
/// latency run, which Linux writes back 30 s after they were first dirtied, all of a file at
/// once. Commits can wait behind such a writeback even when the disk probe's flushes do not.
struct MachineProbe {
    static let interval = Duration.milliseconds(100)
    /// A 100 ms window with more steal than this (summed over the cores) is listed.
    static let spellMilliseconds = 20.0
    /// A fall of the page cache's dirty bytes by more than this, over consecutive samples, is
    /// listed as a writeback. Between writebacks they grow by a fraction of a MiB per sample.
    static let writebackMiB = 16.0

    private let task: Task<[MachineSample], Never>

    init() {
        task = Task {
            var samples: [MachineSample] = []
            while !Task.isCancelled {
                if let sample = MachineSample.now() { samples.append(sample) }
                try? await Task.sleep(for: Self.interval)
            }
            if let sample = MachineSample.now() { samples.append(sample) }
            return samples
        }
    }

    /// Stops sampling; times are in seconds since `origin` (monotonic nanoseconds).
    func stop(origin: UInt64) async -> MachineProbeResult? {
        task.cancel()
        return MachineProbeResult(samples: await task.value, origin: origin)
    }

    /// Stops sampling without waiting for it, as when a phase fails.
    func cancel() {
        task.cancel()
    }
}

/// The first line of `/proc/stat` (every core's time since boot, in clock ticks), the page
/// cache's dirty bytes, and when they were read.
struct MachineSample {
    var at: UInt64
    var busy: Double
    var idle: Double
    var steal: Double
    /// `Dirty` in `/proc/meminfo`, in MiB: data waiting in the page cache to be written back.
    var dirtyMiB: Double?

    static func now() -> MachineSample? {
        guard let text = try? String(contentsOfFile: "/proc/stat", encoding: .utf8),
            let line = text.split(separator: "\n").first, line.hasPrefix("cpu ")
        else { return nil }
        // user nice system idle iowait irq softirq steal guest guest_nice; the guests are in
        // user and nice already.
        let ticks = line.split(separator: " ").dropFirst().compactMap { Double($0) }
        guard ticks.count >= 8 else { return nil }
        return MachineSample(
            at: monotonicNanoseconds(),
            busy: ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6],
            idle: ticks[3] + ticks[4],
            steal: ticks[7],
            dirtyMiB: dirty()
        )
    }

    /// The `Dirty:` line of `/proc/meminfo` ("Dirty:   89376 kB"), in MiB.
    private static func dirty() -> Double? {
        guard let text = try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8),
            let line = text.split(separator: "\n").first(where: { $0.hasPrefix("Dirty:") }),
            let kibibytes = line.split(separator: " ").dropFirst().first.flatMap({ Double($0) })
        else { return nil }
        return kibibytes / 1024
    }
}

struct MachineProbeResult: Codable {
    var seconds: Double
    /// Cores kept busy on average, by every process and the kernel.
    var busyCores: Double
    /// CPU time the hypervisor took while this machine had work, summed over the cores.
    var stealSeconds: Double
    /// `stealSeconds` as a share of all the cores' time.
    var stealFraction: Double
    /// The 100 ms windows with over `MachineProbe.spellMilliseconds` of steal: when each
    /// began, and the steal in it, in ms summed over the cores.
    var spells: [ProbeEvent]
    /// The page cache's writebacks of over `MachineProbe.writebackMiB`.
    var writebacks: [Writeback]

    init?(samples: [MachineSample], origin: UInt64) {
        guard let first = samples.first, let last = samples.last, last.at > first.at else { return nil }
        let tick = 1 / Double(sysconf(Int32(_SC_CLK_TCK)))
        seconds = Double(last.at - first.at) / 1e9
        busyCores = (last.busy - first.busy) * tick / seconds
        stealSeconds = (last.steal - first.steal) * tick
        let total = (last.busy + last.idle + last.steal) - (first.busy + first.idle + first.steal)
        stealFraction = total > 0 ? (last.steal - first.steal) / total : 0
        spells = zip(samples, samples.dropFirst()).compactMap { before, after in
            let milliseconds = (after.steal - before.steal) * tick * 1000
            guard milliseconds > MachineProbe.spellMilliseconds else { return nil }
            return ProbeEvent(at: (Double(before.at) - Double(origin)) / 1e9, milliseconds: milliseconds)
        }
        writebacks = Writeback.find(in: samples, origin: origin)
    }

    /// One line for the table.
    var summary: String {
        var line = String(format: "%.2f cores busy; steal %.2f s (%.1f%% of the cores' time)", busyCores, stealSeconds, stealFraction * 100)
        if !spells.isEmpty {
            line += String(format: ", %d windows of 100 ms with over %.0f ms", spells.count, MachineProbe.spellMilliseconds)
        }
        return line
    }

    enum CodingKeys: String, CodingKey {
        case seconds
        case busyCores = "busy_cores"
        case stealSeconds = "steal_seconds"
        case stealFraction = "steal_fraction"
        case spells = "steal_spells"
        case writebacks
    }
}

/// A fall of the page cache's dirty bytes: Linux writing back what was waiting. When it began
/// (the last sample before the fall, in seconds since the phase began), how long it fell, and
/// by how much. Writes during a writeback make the fall smaller than what was written.
struct Writeback: Codable {
    var at: Double
    var milliseconds: Double
    var mebibytes: Double

    /// Each run of consecutive falls that adds up to over `MachineProbe.writebackMiB`.
    static func find(in samples: [MachineSample], origin: UInt64) -> [Writeback] {
        let dirty = samples.compactMap { sample in sample.dirtyMiB.map { (at: sample.at, mebibytes: $0) } }
        var found: [Writeback] = []
        var first = 0
        while first + 1 < dirty.count {
            var last = first
            while last + 1 < dirty.count, dirty[last + 1].mebibytes < dirty[last].mebibytes { last += 1 }
            let fall = dirty[first].mebibytes - dirty[last].mebibytes
            if fall > MachineProbe.writebackMiB {
                found.append(
                    Writeback(
                        at: (Double(dirty[first].at) - Double(origin)) / 1e9,
                        milliseconds: Double(dirty[last].at - dirty[first].at) / 1e6,
                        mebibytes: fall
                    )
                )
            }
            first = max(last, first + 1)
        }
        return found
    }

    /// "89 MiB at 30.6 s".
    var summary: String {
        String(format: "%.0f MiB at %.1f s", mebibytes, at)
    }

    enum CodingKeys: String, CodingKey {
        case at = "at_s"
        case milliseconds = "ms"
        case mebibytes = "mib"
    }
}
