import Logging
import PostgresClient
import RedisClient

/// One worker's connections, made on first use and made again after they break. They count
/// what they send where `endpoints` say (the ingest service's metrics).
final class WorkerConnections {
    let endpoints: ServerEndpoints
    let logger: Logger
    private var redisConnection: RedisConnection?
    private var clusterClient: RedisClusterClient?
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

    /// Where the stream's and the cache's keyed commands go, as the deployment has it.
    enum Route {
        /// The connection of `redis()`: one Redis.
        case single(RedisConnection)
        /// A cluster client (`redis_cluster`), which connects to the nodes as calls need them.
        case cluster(RedisClusterClient)
    }

    /// The one place a worker's stages learn whether Redis is a cluster.
    func route() async throws -> Route {
        guard let configuration = endpoints.redisCluster else { return .single(try await redis()) }
        if let client = clusterClient, !client.isBroken { return .cluster(client) }
        clusterClient?.close()
        let client = try RedisClusterClient(configuration, logger: logger, traffic: endpoints.redisTraffic)
        clusterClient = client
        return .cluster(client)
    }

    /// `route()` for commands that are the same either way.
    func routed() async throws -> any RoutedRedis {
        switch try await route() {
        case .single(let connection): connection
        case .cluster(let client): client
        }
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
        clusterClient?.close()
        postgresConnection?.close()
        redisConnection = nil
        clusterClient = nil
        postgresConnection = nil
    }
}
