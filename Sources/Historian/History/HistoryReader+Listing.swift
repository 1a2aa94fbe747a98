import PostgresClient

/// One conversation in a user's list.
public struct ConversationSummary: Sendable, Hashable {
    public var id: CanonicalUUID
    public var title: String?
    public var createdAt: Timestamp
    public var updatedAt: Timestamp
    public var messageCount: Int
    public var archived: Bool

    public var cursor: ConversationCursor { ConversationCursor(updatedAt: updatedAt, id: id) }
}

/// A page of a user's conversations, and where the next one starts (`nil` on the last page).
public struct ConversationListPage: Sendable, Hashable {
    public var conversations: [ConversationSummary]
    public var next: ConversationCursor?
}

extension HistoryReader {
    /// Most conversations in one page.
    public static let maximumConversationPage = 200

    /// A page of `user`'s conversations, live and archived merged, newest `updated_at` first,
    /// then by `id`, after `before` in that order.
    ///
    /// Keyset paging: each table is read as a range of its index on `(user_id, updated_at DESC,
    /// id DESC)` (for archived rows, `updated_at` falls back to `archived_at`), at most `limit + 1`
    /// rows from each, so a page costs the same however deep it is. One statement, so one
    /// snapshot: a conversation being archived or restored is in exactly one of the tables.
    public func conversations(
        of user: String,
        limit: Int,
        before: ConversationCursor?
    ) async throws -> ConversationListPage {
        let limit = min(max(limit, 1), Self.maximumConversationPage)
        var parameters: [String?] = [user, String(limit + 1)]
        if let before { parameters += [before.updatedAt.rfc3339, before.id.text] }
        let sql = Self.listingSQL(after: before != nil)
        let rows = try await connections.withPostgres { try await $0.query(sql, parameters) }
        var conversations: [ConversationSummary] = []
        conversations.reserveCapacity(rows.rows.count)
        for row in rows.rows {
            guard let id = row[0].flatMap(CanonicalUUID.init), let created = row[2].flatMap({ Timestamp(rfc3339: $0) }),
                let updated = row[3].flatMap({ Timestamp(rfc3339: $0) }), let count = row[4].flatMap({ Int($0) })
            else { throw HistorianError(.unexpectedReply, "a row of a conversation listing is incomplete") }
            conversations.append(
                ConversationSummary(
                    id: id,
                    title: row[1],
                    createdAt: created,
                    updatedAt: updated,
                    messageCount: count,
                    archived: row[5] == "t"
                )
            )
        }
        var next: ConversationCursor?
        if conversations.count > limit {
            conversations.removeLast(conversations.count - limit)
            next = conversations.last?.cursor
        }
        return ConversationListPage(conversations: conversations, next: next)
    }

    /// `$1` the user, `$2` the rows to read; after a cursor, `$3` and `$4` its `updated_at` and `id`.
    /// Without a cursor the condition is left out rather than written `$3 IS NULL OR …`, which
    /// would keep the planner from using it as the index range.
    static func listingSQL(after: Bool) -> String {
        let live = after ? "AND c.updated_at <= $3::timestamptz AND (c.updated_at, c.id) < ($3::timestamptz, $4::uuid)" : ""
        let archived = after ? "AND (coalesce(a.updated_at, a.archived_at), a.id) < ($3::timestamptz, $4::uuid)" : ""
        let utc = { (column: String) in #"to_char(\#(column) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"# }
        return """
            SELECT p.id::text, p.title, \(utc("p.created_at")), \(utc("p.updated_at")), p.message_count::text, p.archived
            FROM (
                (SELECT c.id, c.title, c.created_at, c.updated_at,
                    (SELECT count(*) FROM messages AS m WHERE m.conversation_id = c.id) AS message_count, false AS archived
                FROM conversations AS c
                WHERE c.user_id = $1 \(live)
                ORDER BY c.updated_at DESC, c.id DESC
                LIMIT $2)
                UNION ALL
                (SELECT a.id, a.title, coalesce(a.created_at, a.archived_at), coalesce(a.updated_at, a.archived_at),
                    a.message_count::bigint, true
                FROM archived_conversations AS a
                WHERE a.user_id = $1 \(archived)
                ORDER BY coalesce(a.updated_at, a.archived_at) DESC, a.id DESC
                LIMIT $2)
            ) AS p
            ORDER BY p.updated_at DESC, p.id DESC
            LIMIT $2
            """
    }
}
