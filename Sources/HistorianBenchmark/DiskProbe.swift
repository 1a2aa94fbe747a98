import Dispatch
import Foundation
import Synchronization

/// Times `fdatasync` on the disk that PostgreSQL's write-ahead log is on, while a phase runs.
///
/// Every commit waits for its WAL to be flushed, so a disk that takes half a second to flush
/// holds up every message in flight for that long, whatever Historian does. The machine this
/// benchmark was written on had such spells (a second and more to flush 4 KiB, now and then,
/// even with nothing else running). With the probe beside them, the figures say whether a
/// tail came from the disk.
///
/// The probe flushes 4 KiB every 50 ms from a thread of its own, into a file preallocated
/// beside the data directory, as PostgreSQL flushes its preallocated WAL segments. Its 20
/// flushes a second are a few percent of the latency run's commits, and about half as many as
/// the drain's, whose commits carry 500 messages each.
final class DiskProbe: Sendable {
    static let interval: UInt64 = 50_000_000
    /// A flush slower than this is a stall: it alone takes the latency target's budget.
    static let stallNanoseconds: UInt64 = 25_000_000

    private let path: String
    private let state = Mutex(State())
    private let done = DispatchGroup()

    private struct State {
        var stopped = false
        /// When each flush started (monotonic nanoseconds) and how long it took.
        var flushes: [(started: UInt64, nanoseconds: UInt64)] = []
        var failure: String?
    }

    /// Starts probing the file system of `directory`.
    init(directory: String) {
        path = directory + "/disk-probe"
        done.enter()
        let thread = Thread { [self] in
            probe()
            done.leave()
        }
        thread.name = "disk-probe"
        thread.start()
    }

    private func probe() {
        let size = 1 << 20
        let descriptor = open(path, O_CREAT | O_RDWR | O_TRUNC, 0o600)
        guard descriptor >= 0 else {
            state.withLock { $0.failure = "cannot create \(path): errno \(errno)" }
            return
        }
        defer {
            close(descriptor)
            unlink(path)
        }
        let block = [UInt8](repeating: 0x78, count: 4096)
        // Written and flushed once whole, so that later flushes carry data only.
        for offset in stride(from: 0, to: size, by: block.count) { _ = pwrite(descriptor, block, block.count, off_t(offset)) }
        fsync(descriptor)
        var offset = 0
        while !state.withLock({ $0.stopped }) {
            let started = monotonicNanoseconds()
            guard pwrite(descriptor, block, block.count, off_t(offset)) == block.count, fdatasync(descriptor) == 0 else {
                state.withLock { $0.failure = "cannot write \(path): errno \(errno)" }
                return
            }
            let finished = monotonicNanoseconds()
            state.withLock { $0.flushes.append((started, finished - started)) }
            offset = (offset + block.count) % size
            let next = started + Self.interval
            if finished < next { usleep(useconds_t((next - finished) / 1000)) }
        }
    }

    /// Stops the probe without waiting for it, as when a phase fails.
    func cancel() {
        state.withLock { $0.stopped = true }
    }

    /// Stops the probe and sums it up; times are in seconds since `origin` (monotonic nanoseconds).
    func stop(origin: UInt64) async throws -> DiskProbeResult {
        cancel()
        await withCheckedContinuation { continuation in
            done.notify(queue: .global()) { continuation.resume() }
        }
        let (flushes, failure) = state.withLock { ($0.flushes, $0.failure) }
        if let failure { throw BenchmarkError("disk probe: \(failure)") }
        return DiskProbeResult(flushes: flushes, origin: origin)
    }
}

/// Something a probe saw during a phase: when, in seconds since the phase began (for a latency
/// run, since its first message), and how many milliseconds of it (a flush's time, a window's
/// steal).
struct ProbeEvent: Codable {
    var at: Double
    var milliseconds: Double

    enum CodingKeys: String, CodingKey {
        case at = "at_s"
        case milliseconds = "ms"
    }
}

struct DiskProbeResult: Codable {
    var flushes: Int
    var p50: Double
    var p99: Double
    var max: Double
    /// Flushes slower than `DiskProbe.stallNanoseconds`: when each began, and how long it took.
    var stalls: [ProbeEvent]

    init(flushes samples: [(started: UInt64, nanoseconds: UInt64)], origin: UInt64) {
        let sorted = samples.map(\.nanoseconds).sorted()
        flushes = sorted.count
        p50 = percentile(sorted, 0.50)
        p99 = percentile(sorted, 0.99)
        max = Double(sorted.last ?? 0) / 1e6
        stalls = samples.filter { $0.nanoseconds > DiskProbe.stallNanoseconds }.map { sample in
            ProbeEvent(at: (Double(sample.started) - Double(origin)) / 1e9, milliseconds: Double(sample.nanoseconds) / 1e6)
        }
    }

    /// The stalls' total time, in seconds.
    var stalledSeconds: Double { stalls.reduce(0) { $0 + $1.milliseconds } / 1000 }

    /// One line for the table.
    var summary: String {
        var line = "\(format(p50)) / \(format(p99)) / \(format(max)) ms over \(flushes) flushes"
        if !stalls.isEmpty {
            let threshold = DiskProbe.stallNanoseconds / 1_000_000
            line += "; \(stalls.count) over \(threshold) ms, " + String(format: "%.1f s in all", stalledSeconds)
        }
        return line
    }

    enum CodingKeys: String, CodingKey {
        case flushes
        case p50 = "p50_ms"
        case p99 = "p99_ms"
        case max = "max_ms"
        case stalls
    }
}
