import Logging
import PostgresClient
import RedisClient

/// One worker's connections, made on first use and made again after they break. They count
/// what they send where `endpoints` say (the ingest service's metrics).
final class WorkerConnections {
    let endpoints: ServerEndpoints
    let logger: Logger
    private var redisConnection: RedisConnection?
    private var routedRedis: (any RoutedRedis)?
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

    /// Where the stream's and the cache's keyed commands go: the connection of `redis()` on a
    /// single Redis, a cluster client with `redis_cluster`.
    func routed() async throws -> any RoutedRedis {
        guard endpoints.redisCluster != nil else { return try await redis() }
        if let client = routedRedis, !client.isBroken { return client }
        routedRedis?.close()
        let client = try await endpoints.connectRouted(logger: logger)
        routedRedis = client
        return client
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
        routedRedis?.close()
        postgresConnection?.close()
        redisConnection = nil
        routedRedis = nil
        postgresConnection = nil
    }
}
