import Logging
import PostgresClient
import RedisClient

/// How to reach the two servers.
public struct ServerEndpoints: Sendable {
    public var redis: RedisConfiguration
    public var postgresURL: String
    public var postgresPassword: String?
    /// Told what each connection made from here sends; nil counts nothing. Only the ingest
    /// workers' connections count (see `IngestService`).
    var postgresTraffic: PostgresTrafficObserver?
    var redisTraffic: RedisTrafficObserver?

    public init(_ configuration: HistorianConfiguration) throws {
        var redis = try RedisConfiguration(url: configuration.redisURL)
        if let password = configuration.redisPassword { redis.password = password }
        self.redis = redis
        self.postgresURL = configuration.postgresURL
        self.postgresPassword = configuration.postgresPassword
    }

    public func connectRedis(logger: Logger) async throws -> RedisConnection {
        try await RedisConnection.connect(redis, logger: logger, traffic: redisTraffic)
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
        "ServerEndpoints(redis: \(redis), postgres: \(HistorianConfiguration.redactURL(postgresURL)), "
            + "postgres_password: \(postgresPassword == nil ? "none" : "***"))"
    }
}
