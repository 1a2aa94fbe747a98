import Logging
import PostgresClient

/// Historian's PostgreSQL schema, as an ordered list of migrations.
///
/// A migration is never edited once released; a change is a new version appended here.
public enum Schema {
    public struct Migration: Sendable {
        public var version: Int
        public var name: String
        public var sql: String
    }

    /// The version a fully migrated database has.
    public static var currentVersion: Int { migrations.last!.version }

    /// Arbitrary but fixed: the advisory lock every instance takes before migrating.
    static let migrationLockKey: Int64 = 0x4869_7374_6f72_6961  // "Historia"

    public static let migrations: [Migration] = [
        Migration(
            version: 1,
            name: "initial tables",
            sql: """
                CREATE TABLE conversations (
                    id uuid PRIMARY KEY,
                    user_id text NOT NULL,
                    dept_id text,
                    title text,
                    -- The created_at of the user message a title was derived from; NULL for a
                    -- title given explicitly, which derivation never replaces.
                    title_derived_from timestamptz,
                    created_at timestamptz NOT NULL,
                    updated_at timestamptz NOT NULL,
                    metadata jsonb NOT NULL DEFAULT '{}',
                    -- Raised by one in every transaction that stores messages here; orders the
                    -- recent-history cache's updates (see RecentCache).
                    cache_version bigint NOT NULL DEFAULT 0
                );
                CREATE INDEX conversations_user_id_idx ON conversations (user_id, updated_at DESC);
                CREATE INDEX conversations_updated_at_idx ON conversations (updated_at);

                CREATE TABLE messages (
                    id uuid PRIMARY KEY,
                    conversation_id uuid NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
                    role text NOT NULL CHECK (role IN ('user', 'assistant', 'system', 'tool')),
                    content text NOT NULL,
                    tokens_used integer CHECK (tokens_used >= 0),
                    latency_ms integer CHECK (latency_ms >= 0),
                    created_at timestamptz NOT NULL,
                    metadata jsonb,
                    session_id text,
                    arrival bigint GENERATED ALWAYS AS IDENTITY,
                    stream_entry text NOT NULL
                );
                CREATE INDEX messages_conversation_order_idx ON messages (conversation_id, created_at, arrival);

                CREATE TABLE message_contexts (
                    id uuid PRIMARY KEY,
                    message_id uuid NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
                    position integer NOT NULL,
                    doc_id text,
                    content text,
                    score double precision,
                    metadata jsonb
                );
                CREATE INDEX message_contexts_message_id_idx ON message_contexts (message_id, position);

                CREATE TABLE archived_conversations (
                    id uuid PRIMARY KEY,
                    user_id text NOT NULL,
                    archived_at timestamptz NOT NULL,
                    path text NOT NULL,
                    message_count integer NOT NULL,
                    sha256 text NOT NULL
                );
                """
        ),
        Migration(
            version: 2,
            name: "conversation updates without index writes",
            sql: """
                -- Every stored batch updates its conversations (updated_at, cache_version). With
                -- no index on updated_at and room left in each page, those are HOT updates: no
                -- index entries written. Finding idle conversations reads the table instead,
                -- which archive passes (hourly by default) can afford.
                DROP INDEX conversations_updated_at_idx;
                DROP INDEX conversations_user_id_idx;
                CREATE INDEX conversations_user_id_idx ON conversations (user_id);
                ALTER TABLE conversations SET (fillfactor = 70);
                """
        ),
        Migration(version: 3, name: "batch store functions", sql: StoreFunctions.migration),
        Migration(version: 4, name: "langchain_chat_history view", sql: LangchainView.migration),
        Migration(version: 5, name: "erasures journal", sql: ErasureSchema.migration),
        Migration(version: 6, name: "history listing columns and indexes", sql: HistorySchema.migration),
    ]

    /// The version recorded in the database, or `nil` when Historian never migrated it.
    public static func recordedVersion(_ session: PostgresSession) throws -> Int? {
        let exists = try session.query("SELECT to_regclass('historian_schema_migrations') IS NOT NULL AS present")
        guard exists[0, "present"] == "t" else { return nil }
        let rows = try session.query("SELECT max(version) AS version FROM historian_schema_migrations")
        return rows[0, "version"].flatMap { Int($0) } ?? 0
    }

    /// Applies every missing migration, each in its own transaction, under an advisory lock so
    /// that instances starting together apply each migration exactly once.
    /// - Returns: the versions this call applied.
    @discardableResult
    public static func migrate(_ connection: PostgresConnection, logger: Logger) async throws -> [Int] {
        try await connection.withSession { session in
            _ = try session.query("SELECT pg_advisory_lock($1)", [String(migrationLockKey)])
            defer { _ = try? session.query("SELECT pg_advisory_unlock($1)", [String(migrationLockKey)]) }
            // A current schema is only read: a runtime role without DDL rights
            // (deploy/postgres-roles.sql) starts as well as the owner does.
            let recorded = try recordedVersion(session) ?? 0
            if recorded > currentVersion {
                throw HistorianError(
                    .schemaTooNew,
                    "the database schema is version \(recorded), newer than this build's \(currentVersion)"
                )
            }
            guard recorded < currentVersion else { return [] }
            do {
                try session.execute(
                    """
                    CREATE TABLE IF NOT EXISTS historian_schema_migrations (
                        version integer PRIMARY KEY,
                        name text NOT NULL,
                        applied_at timestamptz NOT NULL DEFAULT now()
                    )
                    """
                )
                var applied: [Int] = []
                for migration in migrations where migration.version > recorded {
                    try session.transaction { _ in
                        try session.execute(migration.sql)
                        _ = try session.query(
                            "INSERT INTO historian_schema_migrations (version, name) VALUES ($1, $2)",
                            [String(migration.version), migration.name]
                        )
                    }
                    applied.append(migration.version)
                }
                return applied
            } catch let error as PostgresError where error.sqlState == insufficientPrivilege {
                throw HistorianError(
                    .cannotMigrate,
                    "the schema is version \(recorded) of \(currentVersion) and this role may not migrate it "
                        + "(\(error.message)): run `historian migrate` as the schema's owner (deploy/postgres-roles.sql)"
                )
            }
        }
    }

    /// SQLSTATE `insufficient_privilege`.
    static let insufficientPrivilege = "42501"
}
