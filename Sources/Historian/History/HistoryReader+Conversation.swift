import PostgresClient

/// A conversation and one page of its messages.
public struct ConversationPage: Sendable, Hashable {
    /// The conversation's line: `{"type":"conversation", …every column}`, as an archive holds it.
    public var conversation: String
    /// Whether it was read from its archive file.
    public var archived: Bool
    /// Its messages in order, from the first after the page's cursor.
    public var messages: [HistoryLine]
    /// Where the next page starts; `nil` on the last page.
    public var next: MessageCursor?
}

extension HistoryReader {
    /// Most messages in one page.
    public static let maximumMessagePage = 1000

    /// The conversation and up to `limit` of its messages after `after`, from PostgreSQL or,
    /// once archived, from its verified archive file (without restoring it); `nil` when it is
    /// in neither.
    public func conversation(_ id: CanonicalUUID, limit: Int, after: MessageCursor?) async throws -> ConversationPage? {
        let limit = min(max(limit, 1), Self.maximumMessagePage)
        return try await connections.withPostgres { postgres in
            try await page(id, limit: limit, after: after, on: postgres)
        }
    }

    private func page(
        _ id: CanonicalUUID,
        limit: Int,
        after: MessageCursor?,
        on postgres: PostgresConnection
    ) async throws
        -> ConversationPage?
    {
        try await postgres.withSession { session in
            for attempt in 1...Self.attempts {
                // Where it is, from one snapshot: an archive pass deletes the rows and records
                // the file in one transaction, and a restore does the reverse.
                let found = try session.transaction("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY") { _ -> Found in
                    if let head = try Archiver.conversationHead(id, in: session) {
                        var parameters: [String?] = [id.text, String(limit + 1)]
                        if let after { parameters += [after.createdAt.rfc3339, String(after.arrival)] }
                        let rows = try session.query(Self.messagePageSQL(after: after != nil), parameters)
                        let lines = try rows.rows.map { row -> HistoryLine in
                            guard let line = row[0], let created = row[1].flatMap({ Timestamp(rfc3339: $0) }),
                                let arrival = row[2].flatMap({ Int64($0) })
                            else {
                                throw HistorianError(
                                    .unexpectedReply,
                                    "a message line of conversation \(id.text) is incomplete"
                                )
                            }
                            return HistoryLine(json: line, cursor: MessageCursor(createdAt: created, arrival: arrival))
                        }
                        return .live(head.line, lines)
                    }
                    return try ArchivedConversation.find(id, in: session).map(Found.archived) ?? .notFound
                }
                switch found {
                case .notFound:
                    return nil
                case .live(let conversation, let lines):
                    return Self.page(conversation: conversation, archived: false, lines: lines, limit: limit)
                case .archived(let archive):
                    var lines: [HistoryLine] = []
                    let conversation = try archive.read { line, _ in
                        guard lines.count <= limit else { return }
                        let parsed = try HistoryLine(line: line, in: archive.path)
                        if let after, parsed.cursor <= after { return }
                        lines.append(parsed)
                    }
                    guard let conversation else {
                        if attempt < Self.attempts { continue }
                        throw HistorianError(.archiveUnreadable, "archive \(archive.path): no such file")
                    }
                    archive.recordListingColumns(from: conversation, in: session)
                    return Self.page(conversation: conversation, archived: true, lines: lines, limit: limit)
                }
            }
            return nil
        }
    }

    /// A page of `limit` of `lines` (which hold one more when there is a next page).
    private static func page(conversation: String, archived: Bool, lines: [HistoryLine], limit: Int) -> ConversationPage
    {
        var lines = lines
        var next: MessageCursor?
        if lines.count > limit {
            lines.removeLast(lines.count - limit)
            next = lines.last?.cursor
        }
        return ConversationPage(conversation: conversation, archived: archived, messages: lines, next: next)
    }

    /// A conversation's message lines as an archive holds them (see `Archiver`), in order from
    /// after a cursor: `$1` the conversation, `$2` the rows to read, then `$3` and `$4` the
    /// cursor's `created_at` and arrival. A range of `messages_conversation_order_idx`.
    static func messagePageSQL(after: Bool) -> String {
        """
        SELECT '{"type":"message",' || substr(r.line, 2, length(r.line) - 2) || ',"contexts":['
            || coalesce((
                SELECT string_agg(row_to_json(x)::text, ',' ORDER BY x.position) FROM message_contexts AS x WHERE x.message_id = m.id
            ), '')
            || ']}',
            to_char(m.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), m.arrival::text
        FROM messages AS m CROSS JOIN LATERAL (SELECT row_to_json(m)::text AS line) AS r
        WHERE m.conversation_id = $1::uuid \(after ? "AND (m.created_at, m.arrival) > ($3::timestamptz, $4::bigint)" : "")
        ORDER BY m.created_at, m.arrival
        LIMIT $2
        """
    }
}

/// Where one snapshot of PostgreSQL found a conversation.
private enum Found {
    case live(String, [HistoryLine])
    case archived(ArchivedConversation)
    case notFound
}
