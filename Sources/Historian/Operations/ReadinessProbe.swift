import Logging
import PostgresClient
import RedisClient
import ServiceLifecycle

/// Checks, every second, that both servers answer, that the schema is the one this build needs,
/// and how far behind the consumer group is; records what it finds in `DaemonHealth` and the
/// metrics. `/readyz`, systemd's `READY=1` and `STATUS=`, and `historian_ready` read it there.
///
/// It keeps a connection to each server of its own, with short timeouts, so that what it finds
/// is at most a couple of seconds old whatever the workers are doing.
public struct ReadinessProbe: Service, CustomStringConvertible {
    let endpoints: ServerEndpoints
    let stream: IngestStream
    /// The stream's shards (the stream alone when there is one), whose lags and pending
    /// entries add up.
    let shards: [IngestStream]
    let health: DaemonHealth
    let metrics: DaemonMetrics
    let logger: Logger
    /// Time between checks.
    let interval: Duration = .seconds(1)
    /// Each check's connect and call timeout.
    static let timeout: Duration = .seconds(2)

    public init(
        configuration: HistorianConfiguration,
        health: DaemonHealth,
        metrics: DaemonMetrics,
        logger: Logger
    ) throws {
        var endpoints = try ServerEndpoints(configuration)
        endpoints.redis.connectTimeout = Self.timeout
        endpoints.redis.commandTimeout = Self.timeout
        if var cluster = endpoints.redisCluster {
            for index in cluster.seeds.indices {
                cluster.seeds[index].connectTimeout = Self.timeout
                cluster.seeds[index].commandTimeout = Self.timeout
            }
            endpoints.redisCluster = cluster
        }
        self.endpoints = endpoints
        self.stream = IngestStream(stream: configuration.stream, group: configuration.group, dlqStream: configuration.dlqStream)
        self.shards = StreamShard.streams(of: stream, count: configuration.streamShards)
        self.health = health
        self.metrics = metrics
        self.logger = logger
    }

    public var description: String { "ReadinessProbe(stream: \(stream.stream), group: \(stream.group))" }

    public func run() async throws {
        // Ends (cancelled) as soon as shutdown begins, without waiting out a sleep.
        try? await cancelWhenGracefulShutdown { [self] in
            var checks = Checks(probe: self)
            defer { checks.close() }
            while !Task.isCancelled {
                await checks.run()
                try await Task.sleep(for: interval)
            }
        }
        // Stopping: no longer ready, whatever the servers say.
        metrics.recordReady(false)
    }

    /// One round of checks, with the connections they keep between rounds.
    private struct Checks {
        let probe: ReadinessProbe
        let postgresLoop: LoopWatch.Loop
        let redisLoop: LoopWatch.Loop
        var postgres: PostgresConnection?
        var redis: (any RoutedRedis)?

        init(probe: ReadinessProbe) {
            self.probe = probe
            postgresLoop = probe.health.loops.register("probe-postgres")
            redisLoop = probe.health.loops.register("probe-redis")
        }

        mutating func run() async {
            var readiness = Readiness()
            (readiness.postgres, readiness.schema) = await checkPostgres()
            let (redisState, lag, pending) = await checkRedis()
            readiness.redis = redisState
            let health = probe.health
            let before = health.update(readiness)
            health.updateStream(lag: lag, pending: pending)
            probe.metrics.recordStream(lag: lag, pending: pending)
            probe.metrics.recordReady(health.snapshot().isReady)
            if readiness != before { report(readiness) }
        }

        private mutating func checkPostgres() async -> (Readiness.Server, Readiness.Schema) {
            postgresLoop.awaiting()
            do {
                let recorded = try await postgresConnection().withSession { try Schema.recordedVersion($0) }
                postgresLoop.answered()
                return (.reachable, Readiness.Schema(recorded: recorded))
            } catch {
                if !FailureKind.isUnanswered(error) { postgresLoop.answered() }
                probe.logger.debug("readiness: PostgreSQL check failed", metadata: ["error": "\(error)"])
                return (.unreachable, .unknown)
            }
        }

        private mutating func checkRedis() async -> (Readiness.Server, lag: Int?, pending: Int?) {
            redisLoop.awaiting()
            do {
                let redis = try await redisConnection()
                var lag: Int? = 0
                var pending: Int? = 0
                for shard in probe.shards {
                    let group = try await shard.groupState(redis)
                    lag = lag.flatMap { total in group?.lag.map { total + $0 } }
                    pending = pending.flatMap { total in group.map { total + $0.pending } }
                }
                redisLoop.answered()
                return (.reachable, lag, pending)
            } catch {
                if !FailureKind.isUnanswered(error) { redisLoop.answered() }
                probe.logger.debug("readiness: Redis check failed", metadata: ["error": "\(error)"])
                return (.unreachable, nil, nil)
            }
        }

        /// The check's own PostgreSQL connection, made again once broken.
        private mutating func postgresConnection() async throws -> PostgresConnection {
            if let connection = postgres, !connection.isBroken { return connection }
            postgres?.close()
            postgres = nil
            let connection = try await probe.endpoints.connectPostgres(
                logger: probe.logger,
                applicationName: "historian-probe",
                connectTimeout: ReadinessProbe.timeout,
                queryTimeout: ReadinessProbe.timeout
            )
            postgres = connection
            return connection
        }

        /// The check's own Redis connection, made again once broken.
        private mutating func redisConnection() async throws -> any RoutedRedis {
            if let connection = redis, !connection.isBroken { return connection }
            redis?.close()
            redis = nil
            let connection = try await probe.endpoints.connectRouted(logger: probe.logger)
            redis = connection
            return connection
        }

        /// Logs a change: a warning once the daemon has been prepared, plain information while
        /// it starts (a fresh database has no schema until the ingest migrates it).
        private func report(_ readiness: Readiness) {
            if readiness.isReady {
                probe.logger.info("readiness: PostgreSQL and Redis answer, schema current")
                return
            }
            var metadata: Logger.Metadata = ["missing": "\(readiness.missing.joined(separator: ","))"]
            for check in readiness.checks where !check.ok { metadata["readiness.\(check.name)"] = "\(check.detail)" }
            let level: Logger.Level = probe.health.snapshot().prepared ? .warning : .info
            probe.logger.log(level: level, "readiness: not ready", metadata: metadata)
        }

        func close() {
            postgres?.close()
            redis?.close()
        }
    }
}
