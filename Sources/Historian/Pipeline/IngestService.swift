import BlockingThread
import Logging
import PostgresClient
import RedisClient
import ServiceLifecycle

/// The daemon's ingest: prepares the schema and the consumer group, then runs the workers.
public struct IngestService: Service, CustomStringConvertible {
    let settings: IngestSettings
    let endpoints: ServerEndpoints
    let metrics: DaemonMetrics
    let health: DaemonHealth
    let logger: Logger

    /// - Parameters:
    ///   - metrics: where the batches, retries and upkeep are counted.
    ///   - health: where the service says it is prepared, and its workers report their calls
    ///     and finished entries.
    public init(
        configuration: HistorianConfiguration,
        once: Bool,
        metrics: DaemonMetrics = .disabled,
        health: DaemonHealth = DaemonHealth(),
        logger: Logger
    ) throws {
        self.settings = IngestSettings(configuration, once: once)
        self.endpoints = try ServerEndpoints(configuration)
        self.metrics = metrics
        self.health = health
        self.logger = logger
    }

    /// What ServiceLifecycle logs for this service: names, never URLs or passwords.
    public var description: String {
        "IngestService(stream: \(settings.stream.stream), group: \(settings.stream.group), "
            + "consumer: \(settings.consumer), workers: \(settings.workers), endpoints: \(endpoints))"
    }

    public func run() async throws {
        do {
            try await prepare()
        } catch is ShuttingDown, is CancellationError {
            return
        }
        health.markPrepared()
        // At once, rather than at the readiness probe's next check (within a second).
        metrics.recordReady(health.snapshot().isReady)
        logger.info(
            "ready: consuming",
            metadata: [
                "stream": "\(settings.stream.stream)", "group": "\(settings.stream.group)",
                "consumer": "\(settings.consumer)", "workers": "\(settings.workers)",
                "stream.shards": "\(settings.shards.count)",
            ]
        )
        // One per shard: each is trimmed and checked for gaps as a single stream is.
        var maintenance = settings.shards.map { shard in
            StreamMaintenance(
                stream: shard,
                ownConsumers: Set((0..<settings.workers).map(settings.consumerName(worker:))),
                forgetConsumersAfter: max(.seconds(3600), settings.claimIdle * 10),
                metrics: metrics,
                logger: logger
            )
        }
        // Before reading: a gap left while no one was reading is found before it is crossed.
        try? await maintain(&maintenance)
        do {
            try await runWorkers(maintenance)
        } catch is CancellationError {
            // The grace period ran out: whatever was in flight stays pending for the next run.
            logger.notice("shutdown grace period over; unfinished batches stay pending")
        }
        logger.info("ingest stopped")
    }

    private func runWorkers(_ maintenance: [StreamMaintenance]) async throws {
        var maintenance = maintenance
        let turn = ReadTurn()
        // Each worker runs on a thread of its own, where its connections block in place (see BlockingThreadExecutor).
        // Its end stage (cache refresh and acknowledgement) runs on a second one.
        let threads = (0..<settings.workers).map { BlockingThreadExecutor(name: "worker-\($0)") }
        let endThreads = (0..<settings.workers).map { BlockingThreadExecutor(name: "worker-\($0)-end") }
        defer { (threads + endThreads).forEach { $0.shutdown() } }
        // The workers' connections, and only theirs, count what they send: what the batches
        // cost the servers, without the schema, upkeep or readiness checks beside them.
        var workerEndpoints = endpoints
        workerEndpoints.postgresTraffic = metrics.postgresTraffic
        workerEndpoints.redisTraffic = metrics.redisTraffic
        try await withThrowingDiscardingTaskGroup { group in
            for index in 0..<settings.workers {
                let worker = IngestWorker(
                    index: index, settings: settings, turn: turn, endpoints: workerEndpoints, metrics: metrics,
                    health: health, endExecutor: endThreads[index], logger: logger
                )
                group.addTask(executorPreference: threads[index]) { try await worker.run() }
            }
            if !settings.once {
                group.addTask { [maintenance] in
                    // Ends (cancelled) as soon as shutdown begins, without waiting out a sleep.
                    try? await cancelWhenGracefulShutdown { try await maintainForever(maintenance) }
                }
            }
        }
        if settings.once { try? await maintain(&maintenance) }
    }

    /// How often the stream is trimmed and checked for gaps.
    static let maintenanceEvery: Duration = .seconds(5)

    private func maintainForever(_ maintenance: [StreamMaintenance]) async throws {
        var maintenance = maintenance
        while true {
            try await Task.sleep(for: Self.maintenanceEvery)
            try? await maintain(&maintenance)
        }
    }

    private func maintain(_ maintenance: inout [StreamMaintenance]) async throws {
        let redis = try await endpoints.connectRouted(logger: logger)
        defer { redis.close() }
        var failure: (any Error)?
        for index in maintenance.indices {
            do {
                try await maintenance[index].run(redis)
            } catch {
                logger.warning(
                    "stream maintenance failed; will try again",
                    metadata: ["stream": "\(maintenance[index].stream.stream)", "error": "\(error)"]
                )
                failure = error
            }
        }
        if let failure { throw failure }
    }

    /// Waits for both servers, brings the schema up to date and makes sure the group exists.
    /// Readiness is this returning, not `run()` being called.
    private func prepare() async throws {
        // A schema newer than this build, or TLS to PostgreSQL that fails, is no outage: waiting
        // cannot fix it, so the start fails.
        try await retrying(.migrate, logger: logger, metrics: metrics, rethrowing: FailureKind.endsStart) {
            let postgres = try await endpoints.connectPostgres(logger: logger)
            defer { postgres.close() }
            let applied = try await Schema.migrate(postgres, logger: logger)
            if !applied.isEmpty {
                logger.info("schema migrated", metadata: ["schema.versions": "\(applied)"])
            }
        }
        try await retrying(.createGroup, logger: logger, metrics: metrics, rethrowing: FailureKind.endsStart) {
            let redis = try await endpoints.connectRouted(logger: logger)
            defer { redis.close() }
            for shard in settings.shards where try await shard.ensureGroup(redis) {
                logger.info("consumer group created", metadata: ["group": "\(shard.group)", "stream": "\(shard.stream)"])
            }
        }
    }
}
