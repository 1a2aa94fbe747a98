import Foundation
import Hummingbird
import HummingbirdTesting
import LocalServers
import Logging
import MetricsTestKit
import PostgresClient
import RedisClient
import Synchronization
import Testing

@testable import Historian
@testable import HistoryAPI

/// A real Redis and a real PostgreSQL (migrated) for one test, an archive directory, and the
/// history API's router over them, served in-process: no port, no daemon.
final class APIServers: Sendable {
    let redisServer: RedisServer
    let postgresServer: PostgresServer
    let database = "historian"
    let archiveDir = FileManager.default.temporaryDirectory.appendingPathComponent("historian-api-\(UUID().uuidString)")
        .path
    let logger = Logger(label: "test")
    /// The token every request of `request(…)` carries unless told otherwise.
    static let token = "test-token-1f2e3d"

    var postgresURL: String { postgresServer.url(database: database) }

    private init(redis: RedisServer, postgres: PostgresServer) {
        redisServer = redis
        postgresServer = postgres
    }

    /// Runs `body` with fresh servers, migrated, and removes them afterwards, whatever happens.
    static func with<T>(_ body: (APIServers) async throws -> T) async throws -> T {
        async let redis = RedisServer.start()
        async let postgres = PostgresServer.start()
        let servers = APIServers(redis: try await redis, postgres: try await postgres)
        do {
            try await servers.postgresServer.createDatabase(servers.database)
            let connection = try await servers.postgres()
            defer { connection.close() }
            try await Schema.migrate(connection, logger: servers.logger)
            let result = try await body(servers)
            await servers.destroy()
            return result
        } catch {
            await servers.destroy()
            throw error
        }
    }

    func destroy() async {
        try? await redisServer.destroy()
        try? await postgresServer.destroy()
        try? FileManager.default.removeItem(atPath: archiveDir)
    }

    /// The configuration a daemon pointed at these servers would load.
    func configuration(
        recentSize: Int = 10,
        keyPrefix: String = "",
        postgresURL: String? = nil
    ) throws -> HistorianConfiguration {
        try HistorianConfiguration(
            value: { name in
                switch name {
                case "redis_url": self.redisServer.url
                case "postgres_url": postgresURL ?? self.postgresURL
                case "archive_dir": self.archiveDir
                case "recent_size": String(recentSize)
                case "key_prefix": keyPrefix
                default: HistorianConfiguration.keys.first { $0.name == name }!.defaultValue
                }
            },
            environment: [:]
        )
    }

    /// A reader as the daemon makes one; `postgresURL` to read as another role.
    func reader(recentSize: Int = 10, keyPrefix: String = "", postgresURL: String? = nil) throws -> HistoryReader {
        let configuration = try configuration(recentSize: recentSize, keyPrefix: keyPrefix, postgresURL: postgresURL)
        return HistoryReader(
            connections: HistoryConnections(
                endpoints: try ServerEndpoints(configuration),
                postgresCount: 2,
                logger: logger
            ),
            cache: CacheSettings(configuration),
            logger: logger
        )
    }

    /// The router, served in-process to `body`.
    func serve(
        reader: HistoryReader? = nil,
        eraser: (any HistoryEraser)? = nil,
        token: String? = APIServers.token,
        metrics: APIMetrics = APIMetrics(factory: TestMetrics()),
        logger: Logger? = nil,
        _ body: @escaping @Sendable (any TestClientProtocol) async throws -> Void
    ) async throws {
        let reader = try reader ?? self.reader()
        defer { reader.connections.close() }
        let router = try HistoryRouter.build(
            reader: reader,
            eraser: eraser,
            token: token,
            metrics: metrics,
            logger: logger ?? self.logger
        )
        try await Application(router: router).test(.router, body)
    }

    func postgres() async throws -> PostgresConnection {
        try await PostgresConnection.connect(conninfo: postgresURL, logger: logger)
    }

    func redis() async throws -> RedisConnection {
        try await RedisConnection.connect(RedisConfiguration(url: redisServer.url), logger: logger)
    }

    /// Runs SQL statements in one session.
    func execute(_ sql: String, _ parameters: [String?] = []) async throws {
        let postgres = try await postgres()
        defer { postgres.close() }
        _ = try await postgres.withSession { try $0.query(sql, parameters) }
    }

    func rows(_ sql: String, _ parameters: [String?] = []) async throws -> [[String?]] {
        let postgres = try await postgres()
        defer { postgres.close() }
        return try await postgres.withSession { try $0.query(sql, parameters).rows }
    }

    /// Archives the conversation as an archive pass does: file written, verified, rows deleted.
    @discardableResult
    func archive(_ id: String) async throws -> String {
        let postgres = try await postgres()
        defer { postgres.close() }
        let outcome = try await postgres.withSession { session in
            try Archiver.prepare(session)
            return try Archiver(layout: ArchiveLayout(root: archiveDir)).archive(CanonicalUUID(id)!, in: session)
        }
        guard case .archived(let path, _) = outcome else {
            Issue.record("conversation \(id) was not archived: \(outcome)")
            return ""
        }
        return path
    }
}

/// A conversation and its messages, written straight into PostgreSQL's tables.
struct SeedConversation {
    var id: String
    var user: String
    var title: String?
    var metadata = #"{"channel":"web"}"#
    var messages: [SeedMessage]

    /// Inserts it with `updated_at` at its last message and `cache_version` 1.
    func insert(_ servers: APIServers) async throws {
        let postgres = try await servers.postgres()
        defer { postgres.close() }
        try await postgres.withSession { session in
            try session.transaction { _ in
                let times = messages.map { Timestamp(rfc3339: $0.createdAt)! }
                let first = (times.min() ?? Timestamp(microseconds: 0)).rfc3339
                let last = (times.max() ?? Timestamp(microseconds: 0)).rfc3339
                _ = try session.query(
                    """
                    INSERT INTO conversations (id, user_id, title, created_at, updated_at, metadata, cache_version)
                    VALUES ($1::uuid, $2, $3, $4::timestamptz, $5::timestamptz, $6::jsonb, 1)
                    """,
                    [id, user, title, first, last, metadata]
                )
                for (index, message) in messages.enumerated() {
                    _ = try session.query(
                        """
                        INSERT INTO messages (id, conversation_id, role, content, tokens_used, latency_ms, created_at,
                            metadata, session_id, stream_entry)
                        VALUES ($1::uuid, $2::uuid, $3, $4, $5::integer, $6::integer, $7::timestamptz, $8::jsonb, $9, $10)
                        """,
                        [
                            message.id, id, message.role, message.content, message.tokensUsed.map(String.init),
                            message.latencyMs.map(String.init), message.createdAt, message.metadata, "s-1",
                            "1-\(index)",
                        ]
                    )
                    for (position, context) in message.contexts.enumerated() {
                        _ = try session.query(
                            """
                            INSERT INTO message_contexts (id, message_id, position, doc_id, content, score, metadata)
                            VALUES (gen_random_uuid(), $1::uuid, $2::integer, $3, $4, $5::double precision, $6::jsonb)
                            """,
                            [
                                message.id, String(position), context.docID, context.content, String(context.score),
                                #"{"page":\#(position + 1)}"#,
                            ]
                        )
                    }
                }
            }
        }
    }
}

struct SeedMessage {
    var id: String
    var role = "user"
    var content: String
    var createdAt: String
    var tokensUsed: Int?
    var latencyMs: Int?
    var metadata: String?
    var contexts: [(docID: String, content: String, score: Double)] = []
}

/// UUIDs that tell tests' objects apart: `kind` in the first group, `number` at the end.
func testUUID(_ kind: Int, _ number: Int) -> String {
    String(format: "%08x-0000-4000-8000-%012x", kind, number)
}

/// A test request with the token, unless `token` says otherwise.
extension TestClientProtocol {
    func request(
        _ uri: String,
        method: HTTPRequest.Method = .get,
        token: String? = APIServers.token,
        authorization: String? = nil
    ) async throws -> TestResponse {
        var headers: HTTPFields = [:]
        if let authorization {
            headers[.authorization] = authorization
        } else if let token {
            headers[.authorization] = "Bearer \(token)"
        }
        return try await execute(uri: uri, method: method, headers: headers)
    }
}

extension TestResponse {
    /// The body as a JSON object.
    var object: [String: Any] {
        get throws {
            try #require(
                try JSONSerialization.jsonObject(with: Data(buffer: body)) as? [String: Any],
                "\(String(buffer: body))"
            )
        }
    }

    /// The error code of an error body.
    var errorCode: String? { (try? object)?["error"] as? String }
}

/// Log lines kept in memory, to check what they hold and what they never do.
final class LogRecorder: Sendable {
    struct Line: Sendable {
        var level: Logger.Level
        var message: String
        var metadata: [String: String]

        var text: String {
            ([message] + metadata.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }).joined(separator: " ")
        }
    }

    private let lines = Mutex<[Line]>([])

    var recorded: [Line] { lines.withLock { $0 } }

    var logger: Logger {
        Logger(label: "api-test") { _ in Handler(recorder: self) }
    }

    fileprivate func append(_ line: Line) { lines.withLock { $0.append(line) } }

    private struct Handler: LogHandler {
        let recorder: LogRecorder
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        func log(event: LogEvent) {
            var all = metadata
            for (key, value) in event.metadata ?? [:] { all[key] = value }
            recorder.append(Line(level: event.level, message: "\(event.message)", metadata: all.mapValues { "\($0)" }))
        }
    }
}
