import Synchronization

/// What the daemon knows of its own health, shared by the parts that find it out (the ingest,
/// the readiness probe) and the parts that report it (`/healthz`, `/readyz`, systemd's notify
/// socket, the `historian_ready` gauge).
public final class DaemonHealth: Sendable {
    /// The loops that report their calls: the ingest workers and the readiness checks.
    public let loops = LoopWatch()
    /// How long a loop may wait for a server's answer before it counts as stuck: half the
    /// systemd watchdog's interval, so that a stuck loop stops the pings in time.
    public let stallLimit: Duration

    /// When no watchdog sets it: longer than any single call's timeout is allowed to make a
    /// healthy loop wait, so only a loop that gets no answer across retries is stuck.
    public static let defaultStallLimit: Duration = .seconds(30)

    private struct State {
        var readiness = Readiness()
        var prepared = false
        var lag: Int?
        var pending: Int?
    }

    private let state = Mutex(State())
    private let processed = Atomic<Int>(0)

    public init(stallLimit: Duration = DaemonHealth.defaultStallLimit) {
        self.stallLimit = stallLimit
    }

    /// What the last readiness checks found.
    public var readiness: Readiness { state.withLock { $0.readiness } }

    /// Records what the readiness checks found; returns what they found before.
    @discardableResult
    func update(_ readiness: Readiness) -> Readiness {
        state.withLock { state in
            defer { state.readiness = readiness }
            return state.readiness
        }
    }

    /// The ingest has migrated the schema and made sure the consumer group exists.
    func markPrepared() {
        state.withLock { $0.prepared = true }
    }

    /// The group's lag and pending entries, as the last check read them (`nil`: unknown).
    func updateStream(lag: Int?, pending: Int?) {
        state.withLock { state in
            state.lag = lag
            state.pending = pending
        }
    }

    /// Entries the workers finished (stored, repeated or dead-lettered), since the start.
    func recordProcessed(_ entries: Int) {
        processed.add(entries, ordering: .relaxed)
    }

    /// Everything at one instant, for a report.
    public struct Snapshot: Sendable {
        public var readiness: Readiness
        /// The ingest has prepared the schema and the group.
        public var prepared: Bool
        /// Loops waiting for an answer for longer than the stall limit.
        public var stuck: [LoopWatch.Stuck]
        /// Entries finished since the start.
        public var processed: Int
        public var lag: Int?
        public var pending: Int?

        /// Ready to do its work: prepared, both servers answer, the schema is current.
        public var isReady: Bool { prepared && readiness.isReady }
        /// Every loop gets answers (or is idle): nothing is wedged.
        public var isLive: Bool { stuck.isEmpty }

        public init(
            readiness: Readiness = Readiness(),
            prepared: Bool = false,
            stuck: [LoopWatch.Stuck] = [],
            processed: Int = 0,
            lag: Int? = nil,
            pending: Int? = nil
        ) {
            self.readiness = readiness
            self.prepared = prepared
            self.stuck = stuck
            self.processed = processed
            self.lag = lag
            self.pending = pending
        }
    }

    public func snapshot(at now: ContinuousClock.Instant = .now) -> Snapshot {
        let stuck = loops.stuck(at: now, limit: stallLimit)
        let processed = processed.load(ordering: .relaxed)
        return state.withLock { state in
            Snapshot(
                readiness: state.readiness,
                prepared: state.prepared,
                stuck: stuck,
                processed: processed,
                lag: state.lag,
                pending: state.pending
            )
        }
    }
}
