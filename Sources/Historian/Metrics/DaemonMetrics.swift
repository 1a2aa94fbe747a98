import Foundation
import Metrics
import PostgresClient
import RedisClient

/// The daemon's metrics, made once from a metrics factory and shared by its parts.
///
/// Figures are added once per batch, upkeep pass, archived conversation or retry, never once
/// per message: the ingest path is benchmarked. The one exception is the ingest workers'
/// traffic, added once per call to a server, by an atomic add. No label holds a message's content or a user,
/// conversation or session ID; every label has a small, fixed set of values.
/// docs/contract.md ("Metrics") lists each metric.
public struct DaemonMetrics: Sendable {
    let messagesStored: Counter
    let messagesDuplicate: Counter
    let deadLetters: [DeadLetterReason: Counter]
    let batches: Counter
    let batchDuration: Timer
    let postgresStatements: Counter
    let postgresRoundTrips: Counter
    let redisCommands: Counter
    let redisRoundTrips: Counter
    let storeDuration: Timer
    let cacheDuration: Timer
    let acknowledgeDuration: Timer
    let retries: [RetryKey: Counter]
    let streamTrimmed: Counter
    let streamGap: Counter
    let archived: Counter
    let archiveFailures: Counter
    let restored: Counter
    let ready: Gauge
    let streamLag: Gauge
    let streamPending: Gauge
    let startTime: Gauge

    struct RetryKey: Hashable {
        var operation: RetriedOperation
        var kind: RetryKind
    }

    /// What a retried failure was, as the `kind` label gives it.
    enum RetryKind: String, CaseIterable {
        case transient
        /// A failure retrying cannot fix by itself (`FailureKind.needsOperator`, and data that
        /// PostgreSQL refuses outside the store, where it cannot be dead-lettered).
        case needsOperator = "needs_operator"

        init(_ kind: FailureKind) {
            self = kind == .transient ? .transient : .needsOperator
        }
    }

    /// Makes every metric now, from `factory`, so that each series is there, at zero, from the
    /// first scrape on.
    /// - Parameter factory: the process's bootstrapped factory by default; without a bootstrap,
    ///   swift-metrics' no-op one.
    public init(factory: any MetricsFactory = MetricsSystem.factory) {
        messagesStored = Counter(label: "historian_messages_stored_total", factory: factory)
        messagesDuplicate = Counter(label: "historian_messages_duplicate_total", factory: factory)
        var deadLetters: [DeadLetterReason: Counter] = [:]
        for reason in DeadLetterReason.allCases {
            deadLetters[reason] = Counter(
                label: "historian_dead_letters_total",
                dimensions: [("reason", reason.rawValue)],
                factory: factory
            )
        }
        self.deadLetters = deadLetters
        batches = Counter(label: "historian_batches_total", factory: factory)
        batchDuration = Timer(
            label: "historian_batch_duration_seconds",
            preferredDisplayUnit: .seconds,
            factory: factory
        )
        postgresStatements = Counter(label: "historian_postgres_statements_total", factory: factory)
        postgresRoundTrips = Counter(label: "historian_postgres_round_trips_total", factory: factory)
        redisCommands = Counter(label: "historian_redis_commands_total", factory: factory)
        redisRoundTrips = Counter(label: "historian_redis_round_trips_total", factory: factory)
        func phase(_ name: String) -> Timer {
            Timer(
                label: "historian_batch_phase_duration_seconds",
                dimensions: [("phase", name)],
                preferredDisplayUnit: .seconds,
                factory: factory
            )
        }
        storeDuration = phase("store")
        cacheDuration = phase("cache")
        acknowledgeDuration = phase("ack")
        var retries: [RetryKey: Counter] = [:]
        for operation in RetriedOperation.allCases {
            for kind in RetryKind.allCases {
                retries[RetryKey(operation: operation, kind: kind)] = Counter(
                    label: "historian_retries_total",
                    dimensions: [("operation", operation.rawValue), ("kind", kind.rawValue)],
                    factory: factory
                )
            }
        }
        self.retries = retries
        streamTrimmed = Counter(label: "historian_stream_trimmed_entries_total", factory: factory)
        streamGap = Counter(label: "historian_stream_gap_entries_total", factory: factory)
        archived = Counter(label: "historian_archived_conversations_total", factory: factory)
        archiveFailures = Counter(label: "historian_archive_failures_total", factory: factory)
        restored = Counter(label: "historian_restored_conversations_total", factory: factory)
        ready = Gauge(label: "historian_ready", factory: factory)
        ready.record(0)
        streamLag = Gauge(label: "historian_stream_lag_entries", factory: factory)
        streamLag.record(Double.nan)
        streamPending = Gauge(label: "historian_stream_pending_entries", factory: factory)
        streamPending.record(Double.nan)
        // The name Prometheus's own clients give it, so that dashboards and `changes()` find restarts.
        startTime = Gauge(label: "process_start_time_seconds", factory: factory)
        startTime.record(Date().timeIntervalSince1970)
    }

    /// Records nothing: for commands, tests and benchmarks that serve no metrics.
    public static let disabled = DaemonMetrics(factory: NOOPMetricsHandler.instance)

    /// One finished batch: what became of its entries, and how long each step took after the
    /// read (the whole batch, read to acknowledgement, is their sum).
    func recordBatch(_ acknowledgement: Acknowledgement, store: Duration, cache: Duration, acknowledge: Duration) {
        batches.increment()
        messagesStored.increment(by: acknowledgement.stored.count)
        messagesDuplicate.increment(by: acknowledgement.alreadyStored.count)
        if !acknowledgement.deadLetters.isEmpty {
            var byReason: [DeadLetterReason: Int] = [:]
            for letter in acknowledgement.deadLetters { byReason[letter.rejection.reason, default: 0] += 1 }
            for (reason, count) in byReason { deadLetters[reason]?.increment(by: count) }
        }
        storeDuration.record(duration: store)
        cacheDuration.record(duration: cache)
        acknowledgeDuration.record(duration: acknowledge)
        batchDuration.record(duration: store + cache + acknowledge)
    }

    /// Counts what an ingest worker's PostgreSQL connection sends (see `PostgresTraffic`).
    var postgresTraffic: PostgresTrafficObserver {
        { [postgresStatements, postgresRoundTrips] traffic in
            if traffic.statements > 0 { postgresStatements.increment(by: traffic.statements) }
            postgresRoundTrips.increment(by: traffic.roundTrips)
        }
    }

    /// Counts what an ingest worker's Redis connection sends (see `RedisTraffic`).
    var redisTraffic: RedisTrafficObserver {
        { [redisCommands, redisRoundTrips] traffic in
            redisCommands.increment(by: traffic.commands)
            redisRoundTrips.increment(by: traffic.roundTrips)
        }
    }

    func recordRetry(_ operation: RetriedOperation, _ kind: FailureKind) {
        retries[RetryKey(operation: operation, kind: RetryKind(kind))]?.increment()
    }

    func recordTrimmed(entries: Int) {
        streamTrimmed.increment(by: entries)
    }

    func recordGap(entries: Int) {
        streamGap.increment(by: entries)
    }

    func recordArchived() {
        archived.increment()
    }

    func recordArchiveFailure() {
        archiveFailures.increment()
    }

    func recordRestored() {
        restored.increment()
    }

    func recordReady(_ isReady: Bool) {
        ready.record(isReady ? 1 : 0)
    }

    /// The group's lag and pending entries as the readiness probe read them; NaN while unknown.
    func recordStream(lag: Int?, pending: Int?) {
        streamLag.record(lag.map(Double.init) ?? .nan)
        streamPending.record(pending.map(Double.init) ?? .nan)
    }
}
