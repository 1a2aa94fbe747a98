import Logging
import PostgresClient
import RedisClient

/// A batch whose messages all have an outcome: what its end needs.
struct StoredBatch: Sendable {
    var machine: BatchStateMachine
    /// The stream (shard) its entries were read from, where they are acknowledged.
    var stream: IngestStream
    var entries: Int
    var bytes: Int
    var started: ContinuousClock.Instant
    var stored: ContinuousClock.Instant
}

/// A worker's end stage: carries out the end of each stored batch (snapshots, cache refresh,
/// rebuilds, acknowledgement, dead letters) as its state machine's actions say, on connections
/// of its own, while the worker reads and stores the next batch.
final class BatchEnd {
    /// What the stage is made of; sent to the task it runs in.
    struct Parts: Sendable {
        var settings: IngestSettings
        var endpoints: ServerEndpoints
        var metrics: DaemonMetrics
        var health: DaemonHealth
        var loop: LoopWatch.Loop
        var logger: Logger
    }

    private let parts: Parts
    private let connections: WorkerConnections
    private var settings: IngestSettings { parts.settings }
    private var logger: Logger { parts.logger }

    init(_ parts: Parts) {
        self.parts = parts
        self.connections = WorkerConnections(endpoints: parts.endpoints, logger: parts.logger)
    }

    func close() {
        connections.close()
    }

    func run(_ batch: StoredBatch) async throws {
        var machine = batch.machine
        let began = ContinuousClock.now
        var cached: ContinuousClock.Instant?
        while true {
            switch machine.nextAction() {
            case .store, .restore:
                // The worker's store stage does these before handing the batch over.
                throw HistorianError(.unexpectedReply, "a batch reached its end with messages left to store")
            case .readSnapshots(let conversations):
                let read = try await attempt(.cache) { try await snapshots(conversations) }
                machine.snapshotsRead(read)
            case .refreshCache(let refresh):
                let applied = try await attempt(.cache) {
                    let acknowledge = RecentCache.Acknowledge(
                        stream: batch.stream.stream,
                        group: batch.stream.group,
                        ids: refresh.acknowledge
                    )
                    switch try await connections.route() {
                    case .single(let redis):
                        return try await RecentCache.apply(
                            refresh.writes,
                            sessions: refresh.sessions,
                            acknowledge: acknowledge,
                            settings: settings.cache,
                            redis: redis
                        )
                    case .cluster(let cluster):
                        // Each conversation's keys are a call of their own, in their slot.
                        return try await ClusterCache.apply(
                            refresh.writes,
                            sessions: refresh.sessions,
                            acknowledge: [acknowledge],
                            settings: settings.cache,
                            cluster: cluster
                        )
                    }
                }
                reportRepaired(applied.repaired)
                if !applied.stale.isEmpty {
                    logger.debug("recent lists behind; rebuilding from PostgreSQL", metadata: ["conversations": "\(applied.stale.count)"])
                }
                machine.cacheRefreshed(acknowledged: applied.acknowledged, stale: applied.stale)
            case .finish(let rest):
                cached = cached ?? .now
                var lettersAdded = false
                try await attempt(.acknowledge) {
                    switch try await connections.route() {
                    case .single(let redis):
                        // Dead letters and acknowledgement in one transaction.
                        try await batch.stream.finish(redis, rest, at: Timestamp.now)
                    case .cluster(let cluster):
                        // Their keys lie in different slots: two steps, and a retry of the
                        // acknowledgement does not add the dead letters again.
                        if !lettersAdded {
                            try await batch.stream.addDeadLetters(cluster, rest.deadLetters, at: Timestamp.now)
                            lettersAdded = true
                        }
                        try await batch.stream.acknowledge(cluster, rest)
                    }
                }
                machine.finished()
            case .done(let acknowledgement):
                let finished = ContinuousClock.now
                let cachedAt = cached ?? finished
                parts.health.recordProcessed(batch.entries)
                parts.metrics.recordBatch(
                    acknowledgement,
                    store: batch.stored - batch.started,
                    cache: cachedAt - began,
                    acknowledge: finished - cachedAt
                )
                for letter in acknowledgement.deadLetters {
                    logger.warning(
                        "entry dead-lettered",
                        metadata: [
                            "stream.entry": "\(letter.entry.id)",
                            "dlq.reason": "\(letter.rejection.reason)",
                            "dlq.detail": "\(letter.rejection.detail)",
                        ]
                    )
                }
                logger.debug(
                    "batch done",
                    metadata: [
                        "entries": "\(batch.entries)", "bytes": "\(batch.bytes)",
                        "stored": "\(acknowledgement.stored.count)", "dead_letters": "\(acknowledgement.deadLetters.count)",
                        "store_ms": "\((batch.stored - batch.started).milliseconds)",
                        "cache_ms": "\((cachedAt - began).milliseconds)",
                        "ack_ms": "\((finished - cachedAt).milliseconds)",
                    ]
                )
                return
            }
        }
    }

    /// Cache keys that held another type, removed so that the cache could be written: someone
    /// else writes under Historian's key names, which an operator should know.
    private func reportRepaired(_ keys: [String]) {
        guard !keys.isEmpty else { return }
        logger.warning(
            "cache keys held another type than Historian writes there; removed and rebuilt",
            metadata: ["redis.keys": "\(keys.joined(separator: " "))"]
        )
    }

    private func snapshots(_ conversations: [String]) async throws -> [CacheWrite] {
        let postgres = try await connections.postgres()
        let size = settings.cache.recentSize
        return try await postgres.withSession { try RecentCache.snapshots(of: conversations, size: size, in: $0) }
    }

    /// `retrying`, with this stage's logger, metrics and loop.
    private func attempt<T>(_ operation: RetriedOperation, _ body: () async throws -> T) async throws -> T {
        try await retrying(operation, logger: logger, metrics: parts.metrics, loop: parts.loop, body)
    }
}
