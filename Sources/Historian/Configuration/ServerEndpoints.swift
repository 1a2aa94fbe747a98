import Logging
import PostgresClient
import RedisClient

/// How to reach the two servers.
public struct ServerEndpoints: Sendable {
    /// The Redis server; with `redis_cluster`, the first seed (what a ping or a check reaches).
    public var redis: RedisConfiguration
    /// With `redis_cluster`, the seeds the cluster client learns the slot map from.
    public var redisCluster: RedisClusterConfiguration?
    public var postgresURL: String
    public var postgresPassword: String?
    /// Told what each connection made from here sends; nil counts nothing. Only the ingest
    /// workers' connections count (see `IngestService`).
    var postgresTraffic: PostgresTrafficObserver?
    var redisTraffic: RedisTrafficObserver?

    public init(_ configuration: HistorianConfiguration) throws {
        if configuration.redisCluster {
            var cluster = try RedisClusterConfiguration(url: configuration.redisURL)
            if let password = configuration.redisPassword {
                for index in cluster.seeds.indices { cluster.seeds[index].password = password }
            }
            self.redisCluster = cluster
            self.redis = cluster.seeds[0]
        } else {
            var redis = try RedisConfiguration(url: configuration.redisURL)
            if let password = configuration.redisPassword { redis.password = password }
            self.redis = redis
        }
        self.postgresURL = configuration.postgresURL
        self.postgresPassword = configuration.postgresPassword
    }

    public func connectRedis(logger: Logger) async throws -> RedisConnection {
        try await RedisConnection.connect(redis, logger: logger, traffic: redisTraffic)
    }

    /// Where keyed commands go: a cluster client with `redis_cluster` (it connects to the nodes
    /// as calls need them), otherwise a connection to the one server.
    public func connectRouted(logger: Logger) async throws -> any RoutedRedis {
        if let redisCluster {
            return try RedisClusterClient(redisCluster, logger: logger, traffic: redisTraffic)
        }
        return try await connectRedis(logger: logger)
    }

    public func connectPostgres(
        logger: Logger,
        applicationName: String = "historian",
        connectTimeout: Duration = .seconds(10),
        queryTimeout: Duration = .seconds(30)
    ) async throws -> PostgresConnection {
        try await PostgresConnection.connect(
            conninfo: postgresURL,
            password: postgresPassword,
            applicationName: applicationName,
            connectTimeout: connectTimeout,
            queryTimeout: queryTimeout,
            logger: logger,
            traffic: postgresTraffic
        )
    }
}

// ServiceLifecycle logs its services at debug level; these descriptions keep secrets out.
extension ServerEndpoints: CustomStringConvertible {
    public var description: String {
        "ServerEndpoints(redis: \(redis), redis_cluster: \(redisCluster == nil ? "no" : "yes"), postgres: \(HistorianConfiguration.redactURL(postgresURL)), "
            + "postgres_password: \(postgresPassword == nil ? "none" : "***"))"
    }
}
