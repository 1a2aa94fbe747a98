import Foundation
import Historian
import PostgresClient
import RedisClient
import Testing

/// The PostgreSQL side of the contract (§2): upgrades with data in place, a database newer than
/// the binary, the tables readers use, and what `updated_at` means.
@Suite(.serialized)
struct SchemaTests {
    /// Every row of these tables, every column, as PostgreSQL prints it.
    static func snapshot(_ environment: TestEnvironment, tables: [String]) async throws -> [String] {
        var lines: [String] = []
        for table in tables {
            // Nulls left out: a column a migration adds, empty in every old row, changes no row.
            lines += try await environment.rows("SELECT '\(table) ' || jsonb_strip_nulls(to_jsonb(t))::text FROM \(table) AS t ORDER BY 1")
                .map { $0[0] ?? "NULL" }
        }
        return lines
    }

    /// The lines only one of two snapshots has, marked `-` (gone) and `+` (new).
    static func changes(from before: [String], to after: [String]) -> [String] {
        before.filter { !after.contains($0) }.map { "- " + $0 } + after.filter { !before.contains($0) }.map { "+ " + $0 }
    }

    static let readerTables = ["conversations", "messages", "message_contexts", "archived_conversations"]

    // MARK: - Upgrade from version 1

    /// Applies migration 1 and records it, as `Schema.migrate` does: the migrations table, then
    /// the migration and its row in one transaction.
    static func applyVersionOne(_ environment: TestEnvironment) async throws {
        let migration = try #require(Schema.migrations.first { $0.version == 1 })
        let postgres = try await environment.postgres()
        defer { postgres.close() }
        try await postgres.withSession { session in
            _ = try session.execute(
                """
                CREATE TABLE IF NOT EXISTS historian_schema_migrations (
                    version integer PRIMARY KEY,
                    name text NOT NULL,
                    applied_at timestamptz NOT NULL DEFAULT now()
                )
                """
            )
            _ = try session.execute("BEGIN")
            _ = try session.execute(migration.sql)
            _ = try session.query(
                "INSERT INTO historian_schema_migrations (version, name) VALUES ($1, $2)",
                [String(migration.version), migration.name]
            )
            _ = try session.execute("COMMIT")
        }
    }

    static let oldConversation = "0193d000-0000-7000-8000-000000000001"
    static let otherOldConversation = "0193d000-0000-7000-8000-000000000002"

    /// Rows as version 1 wrote them: two conversations (a derived and an explicit title), three
    /// messages (one with every optional column, one with none), two contexts, and the record
    /// of an archived conversation.
    static let versionOneRows = """
        INSERT INTO conversations (id, user_id, dept_id, title, title_derived_from, created_at, updated_at, metadata, cache_version)
        VALUES
            ('\(oldConversation)', 'u-old', 'd-1', 'How do I request vacation?', '2023-01-01T10:00:00.123456Z',
             '2023-01-01T10:00:00.123456Z', '2023-01-01T10:05:00.5Z', '{}', 2),
            ('\(otherOldConversation)', 'u-other', NULL, 'Explicit title', NULL,
             '2023-02-01T00:00:00Z', '2023-02-01T00:00:01Z', '{"imported":true}', 1);
        INSERT INTO messages (id, conversation_id, role, content, tokens_used, latency_ms, created_at, metadata, session_id, stream_entry)
        VALUES
            ('0193d100-0000-7000-8000-000000000001', '\(oldConversation)', 'user', 'How do I request vacation?',
             NULL, NULL, '2023-01-01T10:00:00.123456Z', NULL, 's-old', '1672567200123-0'),
            ('0193d100-0000-7000-8000-000000000002', '\(oldConversation)', 'assistant',
             E'Grüße aus München 🚀\\nsecond line\\t"quoted"', 42, 1200, '2023-01-01T10:00:05Z',
             '{"model":"m-1","temperature":0.2}', 's-old', '1672567205000-0'),
            ('0193d100-0000-7000-8000-000000000003', '\(otherOldConversation)', 'system', 'You are helpful.',
             0, 0, '2023-02-01T00:00:00Z', '{}', NULL, '1675209600000-3');
        INSERT INTO message_contexts (id, message_id, position, doc_id, content, score, metadata)
        VALUES
            (md5('0193d100-0000-7000-8000-000000000002/1')::uuid, '0193d100-0000-7000-8000-000000000002', 1,
             'handbook-7', 'Vacation requests go to …', 0.875, '{"page":12}'),
            (md5('0193d100-0000-7000-8000-000000000002/2')::uuid, '0193d100-0000-7000-8000-000000000002', 2,
             NULL, NULL, NULL, NULL);
        INSERT INTO archived_conversations (id, user_id, archived_at, path, message_count, sha256)
        VALUES ('0193d000-0000-7000-8000-000000000003', 'u-old', '2023-03-01T00:00:00Z',
            '/var/lib/historian/archive/2023/03/01/0193d000-0000-7000-8000-000000000003.jsonl.gz', 4,
            'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
        """

    @Test("version 1 with data upgrades to the current version: every row unchanged, then run --once stores into it")
    func upgradeFromVersionOne() async throws {
        try await TestEnvironment.with { environment in
            try await Self.applyVersionOne(environment)
            let postgres = try await environment.postgres()
            defer { postgres.close() }
            _ = try await postgres.execute(Self.versionOneRows)
            let before = try await Self.snapshot(environment, tables: Self.readerTables)
            #expect(before.count == 8)

            let migrate = try await HistorianProcess.run(["migrate"], environment: environment.historianEnvironment)
            #expect(migrate.status == 0, "\(migrate.errors)")
            #expect(migrate.output.contains("schema version \(Schema.currentVersion)"), "\(migrate.output)")
            let versions = try await environment.rows("SELECT version FROM historian_schema_migrations ORDER BY version")
            #expect(versions.map { $0[0] } == Schema.migrations.map { String($0.version) })
            let upgraded = Self.changes(from: before, to: try await Self.snapshot(environment, tables: Self.readerTables))
            #expect(upgraded.isEmpty, "rows changed by the upgrade: \(upgraded)")

            let check = try await HistorianProcess.run(["check"], environment: environment.historianEnvironment)
            #expect(check.status == 0, "\(check.output)")
            #expect(check.output.contains("ok: schema version \(Schema.currentVersion) (current)"))

            // A new message for the old conversation, from its owner.
            let redis = try await environment.redis()
            defer { redis.close() }
            let newMessage = "0193d100-0000-7000-8000-000000000004"
            try await Producer.appendRaw(
                [[
                    ("message_id", newMessage), ("conversation_id", Self.oldConversation), ("user_id", "u-old"),
                    ("role", "user"), ("content", "And sick leave?"), ("created_at", "2023-01-02T09:00:00Z"),
                    ("session_id", "s-new"),
                ]],
                redis: redis
            )
            let run = try await HistorianProcess.run(["run", "--once"], environment: environment.historianEnvironment)
            #expect(run.status == 0, "\(run.errors)")
            #expect(try await environment.pendingCount() == 0)
            #expect(try await redis.send("EXISTS", "chat:messages:dlq").int == 0)

            // The old rows are as they were, the new one is there, the conversation moved on.
            let oldRows = try await Self.snapshot(environment, tables: ["messages", "message_contexts", "archived_conversations"])
                .filter { !$0.contains(newMessage) }
            let changedOld = Self.changes(from: before.filter { !$0.hasPrefix("conversations ") }, to: oldRows)
            #expect(changedOld.isEmpty, "old rows changed by run --once: \(changedOld)")
            let conversation = try await environment.rows(
                """
                SELECT count(m.id), c.user_id, c.title, c.cache_version, c.updated_at > '2023-01-01T10:05:00.5Z',
                    c.created_at = '2023-01-01T10:00:00.123456Z'
                FROM conversations AS c JOIN messages AS m ON m.conversation_id = c.id
                WHERE c.id = '\(Self.oldConversation)'
                GROUP BY c.id
                """
            )
            #expect(conversation == [["3", "u-old", "How do I request vacation?", "3", "t", "t"]])
            let untouched = try await Self.snapshot(environment, tables: ["conversations"])
                .filter { $0.contains(Self.otherOldConversation) }
            #expect(untouched == before.filter { $0.hasPrefix("conversations ") && $0.contains(Self.otherOldConversation) })

            // The recent list holds the conversation's latest messages, old ones included.
            let recent = try await redis.send("LRANGE", RedisArgument("history:\(Self.oldConversation):recent"), "0", "-1")
            let ids = try (recent.array ?? []).map { element -> String in
                let object = try JSONSerialization.jsonObject(with: Data((element.string ?? "").utf8)) as? [String: Any]
                return object?["id"] as? String ?? "?"
            }
            #expect(
                ids == ["0193d100-0000-7000-8000-000000000001", "0193d100-0000-7000-8000-000000000002", newMessage]
            )
        }
    }

    // MARK: - A database newer than the binary

    @Test("a schema newer than the binary: run, run --once, migrate and check refuse, name both versions, exit non-zero, touch nothing")
    func newerSchemaIsRefused() async throws {
        try await TestEnvironment.with { environment in
            let redis = try await environment.redis()
            defer { redis.close() }
            // A database with data, migrated and written by this build.
            let stored = Producer.workload(count: 3, conversations: 1, seed: 41)
            try await Producer.append(stored, redis: redis)
            let first = try await HistorianProcess.run(["run", "--once"], environment: environment.historianEnvironment)
            #expect(first.status == 0, "\(first.errors)")
            #expect(try await environment.scalar("SELECT count(*) FROM messages") == 3)

            // Then a newer Historian migrated it further; a new entry waits in the stream.
            let newer = Schema.currentVersion + 1
            _ = try await environment.rows(
                "INSERT INTO historian_schema_migrations (version, name) VALUES (\(newer), 'from a newer Historian')"
            )
            try await Producer.append(Producer.workload(count: 1, conversations: 1, seed: 42), redis: redis)

            let postgresBefore = try await Self.databaseState(environment)
            let redisBefore = try await Self.redisState(redis)

            for arguments in [["run"], ["run", "--once"], ["migrate"], ["check"]] {
                let result = try await HistorianProcess.run(arguments, environment: environment.historianEnvironment, timeout: .seconds(20))
                let said = result.output + result.errors
                #expect(result.status != 0, "historian \(arguments) exited \(result.status)")
                if arguments.first == "run" {
                    // The status the systemd units do not restart on (RestartPreventExitStatus=78).
                    #expect(result.status == 78, "historian \(arguments) exited \(result.status)")
                }
                let namesBoth = said.contains("version \(newer)") && said.contains("\(Schema.currentVersion)") && said.contains("newer")
                #expect(namesBoth, "historian \(arguments) said: \(said)")
                let postgresChanges = Self.changes(from: postgresBefore, to: try await Self.databaseState(environment))
                #expect(postgresChanges.isEmpty, "historian \(arguments) changed PostgreSQL: \(postgresChanges)")
                let redisChanges = Self.changes(from: redisBefore, to: try await Self.redisState(redis))
                #expect(redisChanges.isEmpty, "historian \(arguments) changed Redis: \(redisChanges)")
            }
        }
    }

    /// The rows of every table in the public schema, and the tables' and indexes' definitions.
    static func databaseState(_ environment: TestEnvironment) async throws -> [String] {
        let tables = try await environment.rows(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
        ).compactMap { $0[0] }
        let definitions = try await environment.rows(
            """
            SELECT c.relname || ' ' || c.relkind::text || ' ' || coalesce(array_to_string(c.reloptions, ','), '')
                || ' ' || coalesce(CASE WHEN c.relkind = 'i' THEN pg_get_indexdef(c.oid) END, '')
            FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
            WHERE n.nspname = 'public' ORDER BY c.relname
            """
        ).map { $0[0] ?? "" }
        return try await snapshot(environment, tables: tables) + definitions
    }

    /// The keys, the streams' entries and the groups with their pending entries.
    static func redisState(_ redis: RedisConnection) async throws -> [String] {
        var state: [String] = []
        let keys = (try await redis.send("KEYS", "*").array ?? []).compactMap(\.string).sorted()
        for key in keys {
            let type = try await redis.send("TYPE", RedisArgument(key)).string ?? "?"
            state.append("\(key) \(type)")
            if type == "stream" {
                state.append("\(try await redis.send("XRANGE", RedisArgument(key), "-", "+"))")
                let groups = try await redis.send("XINFO", "GROUPS", RedisArgument(key)).array ?? []
                for group in groups {
                    let name = group.fieldPairs["name"]?.string ?? "?"
                    state.append("\(group)")
                    state.append("\(try await redis.send("XPENDING", RedisArgument(key), RedisArgument(name), "-", "+", "100"))")
                }
            }
        }
        return state
    }

    // MARK: - The tables readers use

    @Test("the reader-facing columns, types, keys and cascading deletes of contract §2")
    func readerFacingTables() async throws {
        try await TestEnvironment.with { environment in
            try await environment.migrate()
            let expected: [String: [String: String]] = [
                "conversations": [
                    "id": "uuid", "user_id": "text", "dept_id": "text", "title": "text",
                    "created_at": "timestamp with time zone", "updated_at": "timestamp with time zone", "metadata": "jsonb",
                ],
                "messages": [
                    "id": "uuid", "conversation_id": "uuid", "role": "text", "content": "text", "tokens_used": "integer",
                    "latency_ms": "integer", "created_at": "timestamp with time zone", "metadata": "jsonb",
                ],
                "message_contexts": [
                    "id": "uuid", "message_id": "uuid", "doc_id": "text", "content": "text", "score": "double precision",
                    "metadata": "jsonb",
                ],
                "archived_conversations": [
                    "id": "uuid", "user_id": "text", "archived_at": "timestamp with time zone", "path": "text",
                    "message_count": "integer", "sha256": "text",
                ],
            ]
            for (table, columns) in expected.sorted(by: { $0.key < $1.key }) {
                let rows = try await environment.rows(
                    """
                    SELECT column_name, data_type FROM information_schema.columns
                    WHERE table_schema = 'public' AND table_name = '\(table)'
                    """
                )
                var found: [String: String] = [:]
                for row in rows { found[row[0]!] = row[1]! }
                for (column, type) in columns.sorted(by: { $0.key < $1.key }) {
                    #expect(found[column] == type, "\(table).\(column): \(found[column] ?? "missing"), expected \(type)")
                }
                let primaryKey = try await environment.rows(
                    """
                    SELECT array_to_string(array(SELECT a.attname FROM unnest(k.conkey) AS n (attnum)
                        JOIN pg_attribute AS a ON a.attrelid = k.conrelid AND a.attnum = n.attnum), ',')
                    FROM pg_constraint AS k WHERE k.contype = 'p' AND k.conrelid = '\(table)'::regclass
                    """
                )
                #expect(primaryKey == [["id"]], "\(table)'s primary key: \(primaryKey)")
            }

            let foreignKeys = try await environment.rows(
                """
                SELECT k.conrelid::regclass::text, a.attname, k.confrelid::regclass::text, r.attname, k.confdeltype::text
                FROM pg_constraint AS k
                JOIN pg_attribute AS a ON a.attrelid = k.conrelid AND a.attnum = k.conkey[1]
                JOIN pg_attribute AS r ON r.attrelid = k.confrelid AND r.attnum = k.confkey[1]
                WHERE k.contype = 'f' AND cardinality(k.conkey) = 1
                ORDER BY 1, 2
                """
            )
            // confdeltype 'c': ON DELETE CASCADE.
            #expect(foreignKeys.contains(["messages", "conversation_id", "conversations", "id", "c"]), "\(foreignKeys)")
            #expect(foreignKeys.contains(["message_contexts", "message_id", "messages", "id", "c"]), "\(foreignKeys)")

            // And the cascade does what it says, on rows Historian stored.
            let redis = try await environment.redis()
            defer { redis.close() }
            let messages = Producer.workload(count: 44, conversations: 2, seed: 43)
            try await Producer.append(messages, redis: redis)
            let run = try await HistorianProcess.run(["run", "--once"], environment: environment.historianEnvironment)
            #expect(run.status == 0, "\(run.errors)")
            let doomed = messages[0].conversationID
            let kept = messages[1].conversationID
            func counts(_ conversation: String) async throws -> [String?] {
                try await environment.rows(
                    """
                    SELECT (SELECT count(*) FROM conversations WHERE id = '\(conversation)'),
                        (SELECT count(*) FROM messages WHERE conversation_id = '\(conversation)'),
                        (SELECT count(*) FROM message_contexts AS x JOIN messages AS m ON m.id = x.message_id
                            WHERE m.conversation_id = '\(conversation)')
                    """
                )[0]
            }
            #expect(try await counts(doomed) == ["1", "22", "2"])
            #expect(try await counts(kept) == ["1", "22", "2"])
            let contextsBefore = try await environment.scalar("SELECT count(*) FROM message_contexts")
            _ = try await environment.rows("DELETE FROM conversations WHERE id = '\(doomed)'")
            #expect(try await counts(doomed) == ["0", "0", "0"])
            #expect(try await counts(kept) == ["1", "22", "2"])
            // No orphaned contexts anywhere: only the deleted conversation's went.
            #expect(try await environment.scalar("SELECT count(*) FROM message_contexts") == contextsBefore - 2)
            // Deleting a message takes its contexts with it.
            let withContexts = try await environment.rows(
                "SELECT DISTINCT message_id::text FROM message_contexts ORDER BY 1 LIMIT 1"
            )[0][0]!
            _ = try await environment.rows("DELETE FROM messages WHERE id = '\(withContexts)'")
            #expect(try await environment.scalar("SELECT count(*) FROM message_contexts WHERE message_id = '\(withContexts)'") == 0)
        }
    }

    // MARK: - updated_at

    @Test("updated_at is the server's time of the last stored message, not the message's created_at")
    func updatedAtIsServerTime() async throws {
        try await TestEnvironment.with { environment in
            let redis = try await environment.redis()
            defer { redis.close() }
            let conversation = "0193d200-0000-7000-8000-000000000001"
            func message(_ number: Int, _ createdAt: String) -> [(String, String)] {
                [
                    ("message_id", String(format: "0193d300-0000-7000-8000-%012x", number)), ("conversation_id", conversation),
                    ("user_id", "u-time"), ("role", "user"), ("content", "message \(number)"), ("created_at", createdAt),
                ]
            }
            func serverNow() async throws -> String { try await environment.rows("SELECT clock_timestamp()::text")[0][0]! }
            /// Stores `entry` and returns the server's clock just before and just after.
            func store(_ entry: [(String, String)]) async throws -> (String, String) {
                try await Producer.appendRaw([entry], redis: redis)
                let before = try await serverNow()
                let run = try await HistorianProcess.run(["run", "--once"], environment: environment.historianEnvironment)
                #expect(run.status == 0, "\(run.errors)")
                return (before, try await serverNow())
            }
            func updatedAt() async throws -> String {
                try #require(try await environment.rows("SELECT updated_at::text FROM conversations WHERE id = '\(conversation)'").first?.first ?? nil)
            }
            func holds(_ condition: String) async throws -> Bool {
                try await environment.scalar("SELECT (\(condition))::int") == 1
            }

            // Years in the past: updated_at is still the time it was stored.
            let first = try await store(message(1, "2019-03-01T12:00:00Z"))
            let afterFirst = try await updatedAt()
            #expect(
                try await holds("'\(afterFirst)'::timestamptz BETWEEN '\(first.0)' AND '\(first.1)'"),
                "updated_at \(afterFirst) is not the server's time while it was stored (\(first.0) to \(first.1))"
            )
            #expect(try await environment.scalar(
                "SELECT count(*) FROM conversations WHERE id = '\(conversation)' AND created_at = '2019-03-01T12:00:00Z'"
            ) == 1)

            // A later message, though older still, moves it forward again.
            let second = try await store(message(2, "2018-06-01T00:00:00Z"))
            let afterSecond = try await updatedAt()
            #expect(
                try await holds("'\(afterSecond)'::timestamptz BETWEEN '\(second.0)' AND '\(second.1)'"),
                "updated_at \(afterSecond) is not the server's time while it was stored (\(second.0) to \(second.1))"
            )
            #expect(try await holds("'\(afterSecond)'::timestamptz > '\(afterFirst)'"), "updated_at did not move forward")
            #expect(try await environment.scalar(
                "SELECT count(*) FROM messages WHERE conversation_id = '\(conversation)'"
            ) == 2)
        }
    }
}
