import Historian

/// What to tell systemd, and when: decisions only, from the time and a snapshot of the
/// daemon's health; `SystemdNotifier` does the sending.
///
/// - `READY=1` once, when the ingest is prepared and both servers answer with the schema current.
/// - `WATCHDOG=1` every half watchdog interval after that, but only while no loop is stuck
///   waiting for a server's answer; a stuck loop stops the pings and systemd restarts the service.
/// - `STATUS=` whenever what it says changes, and every `statusEvery` with the rate and the lag.
/// - `STOPPING=1` when shutdown begins (`stopping`).
public struct NotifyStateMachine: Sendable {
    public enum Phase: Sendable, Equatable {
        case starting
        case ready
    }

    /// What to send now (`nil`: nothing), and when to look again.
    public struct Action: Sendable, Equatable {
        public var message: String?
        public var next: ContinuousClock.Instant
    }

    public private(set) var phase: Phase = .starting
    /// `$WATCHDOG_USEC`, when systemd asked for pings.
    let watchdogInterval: Duration?
    /// How often the status line is refreshed with the rate and the lag.
    let statusEvery: Duration
    /// How often the state is looked at before ready.
    static let startingEvery: Duration = .seconds(1)

    private var nextWatchdog: ContinuousClock.Instant?
    private var nextStatus: ContinuousClock.Instant?
    private var lastStatus: String?
    /// Where the last rate was measured from, and what it was.
    private var rateBase: (at: ContinuousClock.Instant, processed: Int)?
    private var lastRate: Int?

    public init(watchdogInterval: Duration?, statusEvery: Duration = .seconds(5)) {
        self.watchdogInterval = watchdogInterval
        self.statusEvery = statusEvery
    }

    /// The half interval at which pings go out.
    var pingEvery: Duration? { watchdogInterval.map { $0 / 2 } }

    public mutating func tick(at now: ContinuousClock.Instant, _ health: DaemonHealth.Snapshot) -> Action {
        switch phase {
        case .starting:
            guard health.isReady else {
                let text = Self.startingStatus(health)
                defer { lastStatus = text }
                return Action(message: text == lastStatus ? nil : "STATUS=" + text, next: now + Self.startingEvery)
            }
            phase = .ready
            rateBase = (now, health.processed)
            nextStatus = now + statusEvery
            nextWatchdog = pingEvery.map { now + $0 }
            let text = Self.runningStatus(health, rate: nil)
            lastStatus = text
            return Action(message: "READY=1\nSTATUS=" + text, next: nextTick(after: now))
        case .ready:
            var lines: [String] = []
            if let due = nextWatchdog, let every = pingEvery, now >= due {
                if health.isLive { lines.append("WATCHDOG=1") }
                // Due a half interval after the last one, however late this tick came.
                nextWatchdog = max(due + every, now)
            }
            var refresh = false
            if let due = nextStatus, now >= due, let base = rateBase {
                let seconds = Self.seconds(now - base.at)
                if seconds > 0 { lastRate = Int((Double(health.processed - base.processed) / seconds).rounded()) }
                rateBase = (now, health.processed)
                nextStatus = now + statusEvery
                refresh = true
            }
            let text = Self.runningStatus(health, rate: lastRate)
            if refresh || text != lastStatus {
                lastStatus = text
                lines.append("STATUS=" + text)
            }
            return Action(message: lines.isEmpty ? nil : lines.joined(separator: "\n"), next: nextTick(after: now))
        }
    }

    /// What is sent when shutdown begins.
    public static let stopping = "STOPPING=1\nSTATUS=stopping: finishing the batches in progress"

    private func nextTick(after now: ContinuousClock.Instant) -> ContinuousClock.Instant {
        [nextWatchdog, nextStatus].compactMap { $0 }.min() ?? now + statusEvery
    }

    /// Before ready: what the start waits for.
    static func startingStatus(_ health: DaemonHealth.Snapshot) -> String {
        let readiness = health.readiness
        var servers: [String] = []
        if readiness.postgres == .unreachable { servers.append("PostgreSQL") }
        if readiness.redis == .unreachable { servers.append("Redis") }
        if !servers.isEmpty { return "waiting for " + servers.joined(separator: " and ") }
        switch readiness.schema {
        case .ahead:
            return "cannot start: schema \(Readiness.describe(readiness.schema)); upgrade Historian"
        case .missing, .behind:
            return "waiting for the schema migration"
        case .unknown:
            return "checking PostgreSQL and Redis"
        case .current:
            return readiness.redis == .reachable ? "preparing the consumer group" : "checking Redis"
        }
    }

    /// After ready: what it is doing, the rate and the backlog.
    static func runningStatus(_ health: DaemonHealth.Snapshot, rate: Int?) -> String {
        var head = "consuming"
        if let stuck = health.stuck.first {
            head = "stalled: \(stuck.name) has waited \(Int(seconds(stuck.waited))) s for a server's answer"
        } else if !health.readiness.isReady {
            head = startingStatus(health)
        }
        let rateText = rate.map { "\($0) messages/s" } ?? "measuring the rate"
        let lagText = health.lag.map { "lag \($0)" } ?? "lag unknown"
        return "\(head): \(rateText), \(lagText)"
    }

    static func seconds(_ duration: Duration) -> Double {
        let (seconds, attoseconds) = duration.components
        return Double(seconds) + Double(attoseconds) / 1e18
    }
}
