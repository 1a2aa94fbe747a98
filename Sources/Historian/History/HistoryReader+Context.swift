import PostgresClient

/// The latest messages of a conversation that fit a token budget: what a chat backend sends to
/// its model before each call.
public struct ContextWindow: Sendable, Hashable {
    public struct Message: Sendable, Hashable {
        /// The message as a JSON object with at least the recent list's keys (contract §3).
        public var json: String
        /// What it counts against the budget (see `TokenCount`).
        public var tokens: Int
        public var estimated: Bool
    }

    /// Oldest first.
    public var messages: [Message]
    /// Their tokens added up: at most the budget.
    public var tokens: Int
    /// Whether it was read from the conversation's archive file.
    public var archived: Bool
}

extension HistoryReader {
    /// Messages read from PostgreSQL at a time, newest first, until the budget is spent.
    static let contextChunk = 200

    /// The longest run of the conversation's latest messages whose tokens add up to at most
    /// `maxTokens`, oldest first: it stops at the first message, going back in time, that does
    /// not fit, so the window has no gaps. `nil` when the conversation is neither in PostgreSQL
    /// nor archived.
    public func context(_ id: CanonicalUUID, maxTokens: Int) async throws -> ContextWindow? {
        try await connections.withPostgres { postgres in try await window(id, maxTokens: maxTokens, on: postgres) }
    }

    private func window(
        _ id: CanonicalUUID,
        maxTokens: Int,
        on postgres: PostgresConnection
    ) async throws -> ContextWindow? {
        try await postgres.withSession { session -> ContextWindow? in
            for attempt in 1...Self.attempts {
                // Where it is, from one snapshot (see `conversation(_:limit:after:)`).
                let found = try session.transaction("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY") {
                    _ -> FoundWindow in
                    let present = try session.query("SELECT 1 FROM conversations WHERE id = $1::uuid", [id.text])
                    guard !present.rows.isEmpty else {
                        return try ArchivedConversation.find(id, in: session).map(FoundWindow.archived) ?? .notFound
                    }
                    return .live(try Self.liveContext(id, maxTokens: maxTokens, in: session))
                }
                let archive: ArchivedConversation
                switch found {
                case .notFound: return nil
                case .live(let window): return window
                case .archived(let archived): archive = archived
                }
                var window = SlidingWindow(budget: maxTokens)
                let conversation = try archive.read { line, _ in
                    let fields = try MessageLineFields.read(line, in: archive.path)
                    let count = TokenCount.of(tokensUsed: fields.tokensUsed, contentBytes: fields.content.utf8.count)
                    window.append(ContextWindow.Message(json: line, tokens: count.tokens, estimated: count.estimated))
                }
                guard let conversation else {
                    if attempt < Self.attempts { continue }
                    throw HistorianError(.archiveUnreadable, "archive \(archive.path): no such file")
                }
                archive.recordListingColumns(from: conversation, in: session)
                return ContextWindow(messages: window.messages, tokens: window.tokens, archived: true)
            }
            return nil
        }
    }

    /// Reads the conversation's messages newest first, a chunk at a time, until one does not fit.
    private static func liveContext(
        _ id: CanonicalUUID,
        maxTokens: Int,
        in session: PostgresSession
    ) throws -> ContextWindow {
        var newestFirst: [ContextWindow.Message] = []
        var total = 0
        var before: (created: String, arrival: String)?
        reading: while true {
            var parameters: [String?] = [id.text, String(contextChunk)]
            if let before { parameters += [before.created, before.arrival] }
            let rows = try session.query(contextSQL(before: before != nil), parameters)
            for row in rows.rows {
                guard let json = row[0], let created = row[1], let arrival = row[2],
                    let bytes = row[4].flatMap({ Int($0) })
                else {
                    throw HistorianError(.unexpectedReply, "a message of conversation \(id.text) came back incomplete")
                }
                let count = TokenCount.of(tokensUsed: row[3].flatMap { Int($0) }, contentBytes: bytes)
                guard total + count.tokens <= maxTokens else { break reading }
                total += count.tokens
                newestFirst.append(ContextWindow.Message(json: json, tokens: count.tokens, estimated: count.estimated))
                before = (created, arrival)
            }
            if rows.rows.count < contextChunk { break }
        }
        return ContextWindow(messages: newestFirst.reversed(), tokens: total, archived: false)
    }

    /// Recent-list elements of a conversation's messages, newest first, before a cursor: `$1` the
    /// conversation, `$2` the rows to read, then `$3` and `$4` the cursor's `created_at` and arrival.
    static func contextSQL(before: Bool) -> String {
        """
        SELECT \(RecentCache.elementSQL("m")),
            to_char(m.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), m.arrival::text,
            m.tokens_used::text, octet_length(m.content)::text
        FROM messages AS m
        WHERE m.conversation_id = $1::uuid \(before ? "AND (m.created_at, m.arrival) < ($3::timestamptz, $4::bigint)" : "")
        ORDER BY m.created_at DESC, m.arrival DESC
        LIMIT $2
        """
    }
}

/// Where one snapshot of PostgreSQL found a conversation.
private enum FoundWindow {
    case live(ContextWindow)
    case archived(ArchivedConversation)
    case notFound
}

/// The longest run of the latest messages appended whose tokens fit the budget.
///
/// Appending a message and then dropping the oldest while the total is over the budget leaves,
/// at every point, the longest suffix that fits: a message dropped once was part of a suffix
/// over the budget, and every later suffix that reaches it holds that one and more.
struct SlidingWindow {
    let budget: Int
    private var kept: [ContextWindow.Message] = []
    private var first = 0
    private(set) var tokens = 0

    init(budget: Int) {
        self.budget = budget
    }

    mutating func append(_ message: ContextWindow.Message) {
        kept.append(message)
        tokens += message.tokens
        while tokens > budget, first < kept.count {
            tokens -= kept[first].tokens
            first += 1
        }
        // Dropped messages are let go of now and then, not on every drop.
        if first > 1024, first * 2 > kept.count {
            kept.removeFirst(first)
            first = 0
        }
    }

    var messages: [ContextWindow.Message] { Array(kept[first...]) }
}
