import Logging
import PostgresClient
import RedisClient
import Synchronization

/// The connections that history reads share: a few PostgreSQL connections, taken in turn, and
/// one Redis connection. Each is made on first use and made again once it breaks.
///
/// A connection runs one session at a time on its own thread and queues the others, so
/// requests beyond `postgresCount` wait for a turn rather than open more connections: the API
/// never takes more of PostgreSQL's connection slots than it was given.
public final class HistoryConnections: Sendable {
    let endpoints: ServerEndpoints
    let logger: Logger
    private let postgresSlots: Mutex<[PostgresConnection?]>
    private let nextSlot = Atomic<Int>(0)
    private let redisConnection = Mutex<RedisConnection?>(nil)

    /// The `application_name` the connections show in `pg_stat_activity`.
    static let applicationName = "historian-api"

    public init(endpoints: ServerEndpoints, postgresCount: Int = 4, logger: Logger) {
        self.endpoints = endpoints
        self.logger = logger
        postgresSlots = Mutex(Array(repeating: nil, count: max(1, postgresCount)))
    }

    /// Runs `body` with a PostgreSQL connection whose sessions print timestamps in UTC (as
    /// archive lines have them). A connection that had been made before and turns out to have
    /// lost its server (a restart while it sat idle) is replaced and `body` runs again: history
    /// reads can run twice.
    public func withPostgres<T>(_ body: (PostgresConnection) async throws -> T) async throws -> T {
        let count = postgresSlots.withLock { $0.count }
        for _ in 0..<count {
            let (connection, reused) = try await postgres()
            do {
                return try await body(connection)
            } catch let error as PostgresError where reused && Self.lost(error) {
                logger.debug("history read found its PostgreSQL connection lost; trying a new one")
            }
        }
        return try await body(try await postgres().connection)
    }

    /// Runs `body` with the Redis connection; like `withPostgres`, once more on a new connection
    /// when a connection made before turns out to be lost.
    public func withRedis<T>(_ body: (RedisConnection) async throws -> T) async throws -> T {
        let (connection, reused) = try await redis()
        do {
            return try await body(connection)
        } catch let error as RedisError where reused && (error.code == .connectionClosed || error.code == .io) {
            return try await body(try await redis().connection)
        }
    }

    private static func lost(_ error: PostgresError) -> Bool {
        error.code == .connectionLost || error.code == .closed
    }

    /// The next slot's connection, made if it has none or a broken one; `reused` when it was
    /// there already.
    private func postgres() async throws -> (connection: PostgresConnection, reused: Bool) {
        let count = postgresSlots.withLock { $0.count }
        let slot = nextSlot.wrappingAdd(1, ordering: .relaxed).oldValue % count
        if let connection = postgresSlots.withLock({ $0[slot] }), !connection.isBroken { return (connection, true) }
        let connection = try await endpoints.connectPostgres(logger: logger, applicationName: Self.applicationName)
        do {
            try await connection.withSession { try Archiver.prepare($0) }
        } catch {
            connection.close()
            throw error
        }
        // Another request may have connected the slot meanwhile: the first one stays.
        let (kept, replaced) = postgresSlots.withLock { slots -> (PostgresConnection, PostgresConnection?) in
            if let current = slots[slot], !current.isBroken { return (current, nil) }
            let old = slots[slot]
            slots[slot] = connection
            return (connection, old)
        }
        replaced?.close()
        if kept !== connection { connection.close() }
        return (kept, false)
    }

    private func redis() async throws -> (connection: RedisConnection, reused: Bool) {
        if let connection = redisConnection.withLock({ $0 }), !connection.isBroken { return (connection, true) }
        let connection = try await endpoints.connectRedis(logger: logger)
        let (kept, replaced) = redisConnection.withLock { current -> (RedisConnection, RedisConnection?) in
            if let current, !current.isBroken { return (current, nil) }
            let old = current
            current = connection
            return (connection, old)
        }
        replaced?.close()
        if kept !== connection { connection.close() }
        return (kept, false)
    }

    /// Closes every connection; one asked for afterwards is made anew.
    public func close() {
        let postgres = postgresSlots.withLock { slots -> [PostgresConnection] in
            defer { slots = Array(repeating: nil, count: slots.count) }
            return slots.compactMap { $0 }
        }
        for connection in postgres { connection.close() }
        redisConnection.withLock { current in
            current?.close()
            current = nil
        }
    }
}
