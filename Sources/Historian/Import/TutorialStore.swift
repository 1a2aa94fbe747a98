import SQLiteReader

/// A row of `conversations`, as the file holds it.
struct SourceConversation: Sendable, Hashable {
    var id: SQLiteValue
    var userID: SQLiteValue
    var title: SQLiteValue
    var createdAt: SQLiteValue
    var metadata: SQLiteValue
}

/// A row of `messages`, as the file holds it.
struct SourceMessage: Sendable, Hashable {
    var id: SQLiteValue
    var role: SQLiteValue
    var content: SQLiteValue
    var timestamp: SQLiteValue
    var metadata: SQLiteValue
}

/// A SQLite conversation store of the tutorial schema, opened read-only:
/// `conversations(id TEXT PRIMARY KEY, user_id, title, created_at, updated_at, metadata)` and
/// `messages(id INTEGER PRIMARY KEY, conversation_id, role, content, timestamp, metadata)`.
///
/// Everything is read in one read transaction, so the counts, the rows and the orphans come from
/// one snapshot even while the application that owns the file goes on writing to it.
/// `updated_at` is not read: PostgreSQL's is the time of the last stored message. A store made
/// without some of the columns that may be NULL anyway (variants of the tutorial leave out
/// titles or metadata) is read as if they were NULL.
final class TutorialStore {
    private let database: SQLiteDatabase
    /// The columns of each table that are read, as SQL: the column, or `NULL` for an optional
    /// one the table lacks.
    private var columns: [String: [String: String]] = [:]

    static let required = [
        "conversations": ["id", "user_id"],
        "messages": ["id", "conversation_id", "role", "content", "timestamp"],
    ]
    static let optional = [
        "conversations": ["title", "created_at", "metadata"],
        "messages": ["metadata"],
    ]

    init(path: String) throws {
        database = try SQLiteDatabase(path: path, mode: .readOnly)
        try database.execute("BEGIN")
        for (table, required) in Self.required.sorted(by: { $0.key < $1.key }) {
            var present: Set<String> = []
            let info = try database.prepare("SELECT name FROM pragma_table_info(?1)")
            try info.bind([.text(table)])
            while let row = try info.next() {
                if case .text(let name) = row[0] { present.insert(String(decoding: name, as: UTF8.self).lowercased()) }
            }
            guard !present.isEmpty else {
                throw HistorianError(
                    .invalidConfiguration,
                    "\(path) has no table \(table): not a store of the tutorial schema"
                )
            }
            let missing = required.filter { !present.contains($0) }
            guard missing.isEmpty else {
                throw HistorianError(
                    .invalidConfiguration,
                    "\(path): table \(table) has no column \(missing.joined(separator: ", ")): "
                        + "not a store of the tutorial schema"
                )
            }
            for column in required + Self.optional[table, default: []] {
                columns[table, default: [:]][column] = present.contains(column) ? "\"\(column)\"" : "NULL"
            }
        }
    }

    /// A column of `conversations` (`c`) or `messages` (`m`) as the queries read it.
    private func column(_ table: String, _ name: String) -> String {
        let sql = columns[table]![name]!
        return sql == "NULL" ? sql : (table == "messages" ? "m." : "c.") + sql
    }

    deinit {
        try? database.execute("COMMIT")
    }

    /// How many rows each table holds, for the progress.
    func counts() throws -> (conversations: Int, messages: Int) {
        func count(_ table: String) throws -> Int {
            let statement = try database.prepare("SELECT count(*) FROM \(table)")
            guard case .integer(let count) = try statement.next()?.first else { return 0 }
            return Int(count)
        }
        return (try count("conversations"), try count("messages"))
    }

    /// Each conversation whose ID is not NULL with each of its messages, a row per message (one
    /// row without a message for a conversation that has none), by conversation ID, then by
    /// message ID.
    func conversationsWithMessages() throws -> Rows {
        Rows(
            try database.prepare(
                """
                SELECT c."id", c."user_id", \(column("conversations", "title")),
                    \(column("conversations", "created_at")), \(column("conversations", "metadata")),
                    m."id", m."role", m."content", m."timestamp", \(column("messages", "metadata"))
                FROM conversations AS c LEFT JOIN messages AS m ON m."conversation_id" = c."id"
                WHERE c."id" IS NOT NULL
                ORDER BY c."id", m."id"
                """
            )
        )
    }

    /// The rows of `conversationsWithMessages`, one at a time.
    struct Rows {
        fileprivate let statement: SQLiteStatement

        fileprivate init(_ statement: SQLiteStatement) {
            self.statement = statement
        }

        /// The next row; `message` is `nil` for a conversation without messages.
        func next() throws -> (conversation: SourceConversation, message: SourceMessage?)? {
            guard let row = try statement.next() else { return nil }
            let conversation = SourceConversation(
                id: row[0],
                userID: row[1],
                title: row[2],
                createdAt: row[3],
                metadata: row[4]
            )
            guard row[5] != .null else { return (conversation, nil) }
            return (
                conversation,
                SourceMessage(id: row[5], role: row[6], content: row[7], timestamp: row[8], metadata: row[9])
            )
        }
    }

    /// Conversations whose ID is NULL (which a `TEXT PRIMARY KEY` allows): their messages
    /// cannot name them.
    func conversationsWithoutID() throws -> Int {
        let statement = try database.prepare(#"SELECT count(*) FROM conversations WHERE "id" IS NULL"#)
        guard case .integer(let count) = try statement.next()?.first else { return 0 }
        return Int(count)
    }

    /// Messages whose `conversation_id` names no conversation, by message ID: calls `body` with
    /// the conversation ID they name and their own ID.
    func forEachOrphan(_ body: (SQLiteValue, SQLiteValue) throws -> Void) throws {
        let statement = try database.prepare(
            """
            SELECT m."conversation_id", m."id" FROM messages AS m
            WHERE m."conversation_id" IS NULL
                OR NOT EXISTS (SELECT 1 FROM conversations AS c WHERE c."id" = m."conversation_id")
            ORDER BY m."id"
            """
        )
        while let row = try statement.next() {
            try body(row[0], row[1])
        }
    }
}
