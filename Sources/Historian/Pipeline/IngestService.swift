import Logging
import PostgresClient
import RedisClient
import ServiceLifecycle

/// The daemon's ingest: prepares the schema and the consumer group, then runs the workers.
public struct IngestService: Service {
    let settings: IngestSettings
    let endpoints: ServerEndpoints
    let logger: Logger

    public init(configuration: HistorianConfiguration, once: Bool, logger: Logger) throws {
        self.settings = IngestSettings(configuration, once: once)
        self.endpoints = try ServerEndpoints(configuration)
        self.logger = logger
    }

    public func run() async throws {
        do {
            try await prepare()
        } catch is ShuttingDown {
            return
        }
        logger.info(
            "ready: consuming",
            metadata: [
                "stream": "\(settings.stream.stream)", "group": "\(settings.stream.group)",
                "consumer": "\(settings.consumer)", "workers": "\(settings.workers)",
            ]
        )
        try await withThrowingDiscardingTaskGroup { group in
            for index in 0..<settings.workers {
                let worker = IngestWorker(index: index, settings: settings, endpoints: endpoints, logger: logger)
                group.addTask { try await worker.run() }
            }
        }
        logger.info("ingest stopped")
    }

    /// Waits for both servers, brings the schema up to date and makes sure the group exists.
    /// Readiness is this returning, not `run()` being called.
    private func prepare() async throws {
        try await retrying("preparing PostgreSQL", logger: logger) {
            let postgres = try await endpoints.connectPostgres(logger: logger)
            defer { postgres.close() }
            let applied = try await Schema.migrate(postgres, logger: logger)
            if !applied.isEmpty {
                logger.info("schema migrated", metadata: ["schema.versions": "\(applied)"])
            }
        }
        try await retrying("preparing the consumer group", logger: logger) {
            let redis = try await endpoints.connectRedis(logger: logger)
            defer { redis.close() }
            if try await settings.stream.ensureGroup(redis) {
                logger.info("consumer group created", metadata: ["group": "\(settings.stream.group)"])
            }
        }
    }
}
