import Synchronization

/// Which of the daemon's loops are waiting on a server that does not answer.
///
/// Each loop (an ingest worker, a readiness check) registers once and reports each attempt of
/// its calls: `awaiting()` before, `answered()` after any answer, success or error. A call that
/// times out is no answer, so the loop keeps waiting from the first unanswered call on, through
/// its retries, until a server answers again. A loop that waited longer than a limit is stuck:
/// the watchdog stops its pings and `/healthz` says so.
///
/// A server that refuses (connection refused, an error reply) answers: that is an outage, which
/// readiness reports; restarting the process would not end it. A frozen server, or a
/// connection whose packets vanish, does not answer: that is what a restart can clear.
public final class LoopWatch: Sendable {
    private struct Entry {
        var name: String
        var waitingSince: ContinuousClock.Instant?
    }

    private let entries = Mutex<[Entry]>([])

    public init() {}

    /// One registered loop's handle.
    public struct Loop: Sendable {
        let watch: LoopWatch
        let index: Int

        /// An attempt begins: the loop waits for an answer, unless it has been waiting already.
        public func awaiting(at now: ContinuousClock.Instant = .now) {
            watch.entries.withLock { entries in
                if entries[index].waitingSince == nil { entries[index].waitingSince = now }
            }
        }

        /// A server answered (with a result or an error): the loop no longer waits.
        public func answered() {
            watch.entries.withLock { $0[index].waitingSince = nil }
        }
    }

    /// Registers a loop under `name` (`worker-0`, `probe-postgres`), not waiting.
    public func register(_ name: String) -> Loop {
        entries.withLock { entries in
            entries.append(Entry(name: name))
            return Loop(watch: self, index: entries.count - 1)
        }
    }

    /// A loop that has waited for an answer for longer than the limit.
    public struct Stuck: Sendable, Equatable {
        public var name: String
        public var waited: Duration
    }

    /// The loops that have waited longer than `limit` at `now`, in registration order.
    public func stuck(at now: ContinuousClock.Instant = .now, limit: Duration) -> [Stuck] {
        entries.withLock { entries in
            entries.compactMap { entry in
                guard let since = entry.waitingSince, now - since > limit else { return nil }
                return Stuck(name: entry.name, waited: now - since)
            }
        }
    }
}
