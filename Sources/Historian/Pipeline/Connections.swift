import Logging
import PostgresClient
import RedisClient

/// One worker's connections, made on first use and made again after they break. They count
/// what they send where `endpoints` say (the ingest service's metrics).
final class WorkerConnections {
    let endpoints: ServerEndpoints
    let logger: Logger
    private var redisConnection: RedisConnection?
    private var postgresConnection: PostgresConnection?

    init(endpoints: ServerEndpoints, logger: Logger) {
        self.endpoints = endpoints
        self.logger = logger
    }

    func redis() async throws -> RedisConnection {
        if let connection = redisConnection, !connection.isBroken { return connection }
        redisConnection?.close()
        redisConnection = nil
        let connection = try await endpoints.connectRedis(logger: logger)
        redisConnection = connection
        return connection
    }

    func postgres() async throws -> PostgresConnection {
        if let connection = postgresConnection, !connection.isBroken { return connection }
        postgresConnection?.close()
        postgresConnection = nil
        let connection = try await endpoints.connectPostgres(logger: logger)
        try await connection.withSession { try MessageStore.prepare($0) }
        postgresConnection = connection
        return connection
    }

    func close() {
        redisConnection?.close()
        postgresConnection?.close()
        redisConnection = nil
        postgresConnection = nil
    }
}
