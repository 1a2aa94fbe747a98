import Logging
import PostgresClient
import RedisClient

/// How to reach the two servers.
public struct ServerEndpoints: Sendable {
    public var redis: RedisConfiguration
    public var postgresURL: String
    public var postgresPassword: String?

    public init(_ configuration: HistorianConfiguration) throws {
        var redis = try RedisConfiguration(url: configuration.redisURL)
        if let password = configuration.redisPassword { redis.password = password }
        self.redis = redis
        self.postgresURL = configuration.postgresURL
        self.postgresPassword = configuration.postgresPassword
    }

    public func connectRedis(logger: Logger) async throws -> RedisConnection {
        try await RedisConnection.connect(redis, logger: logger)
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
            logger: logger
        )
    }
}

/// One worker's connections, made on first use and made again after they break.
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

// ServiceLifecycle logs its services at debug level; these descriptions keep secrets out.
extension ServerEndpoints: CustomStringConvertible {
    public var description: String {
        "ServerEndpoints(redis: \(redis), postgres: \(HistorianConfiguration.redactURL(postgresURL)), "
            + "postgres_password: \(postgresPassword == nil ? "none" : "***"))"
    }
}
