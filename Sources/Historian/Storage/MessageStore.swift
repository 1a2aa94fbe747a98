import PostgresClient

/// A message as PostgreSQL holds it, for judging a redelivery.
public struct StoredMessage: Sendable, Hashable {
    public var conversationID: UUIDText
    public var role: String
    public var content: String
}

/// Judges a message against what PostgreSQL already holds. The writer and the dry run share it.
public enum StoreJudgement {
    /// - Parameters:
    ///   - existing: the stored message with the same ID, if any.
    ///   - owner: the owner of the message's conversation, if it exists.
    /// - Returns: `nil` when the message is new and may be stored.
    public static func judge(_ message: IncomingMessage, existing: StoredMessage?, owner: String?) -> StoreResult? {
        if let existing {
            let same =
                existing.conversationID == message.conversationID && existing.role == message.role.rawValue
                && existing.content == message.content
            return same ? .alreadyStored : .conflict
        }
        if let owner, owner != message.userID {
            return .userMismatch
        }
        return nil
    }
}

/// Writes units of messages to PostgreSQL: one transaction each, set-based, idempotent.
///
/// A unit is copied into a temporary staging table with `COPY`, then moved into the real tables
/// by a few statements that each touch every row at once. `ON CONFLICT (id) DO NOTHING` makes a
/// redelivered message a no-op; the few rows that were not inserted are then judged against
/// what is stored (identical, conflicting, or owned by someone else).
public enum MessageStore {
    static let createStage = """
        CREATE TEMPORARY TABLE IF NOT EXISTS historian_stage (
            seq integer NOT NULL,
            id uuid NOT NULL,
            conversation_id uuid NOT NULL,
            user_id text NOT NULL,
            role text NOT NULL,
            content text NOT NULL,
            created_at timestamptz NOT NULL,
            session_id text,
            dept_id text,
            title text,
            derived_title text,
            tokens_used integer,
            latency_ms integer,
            metadata jsonb,
            contexts jsonb,
            stream_entry text NOT NULL
        ) ON COMMIT DELETE ROWS
        """

    static let copyStage = """
        COPY historian_stage (seq, id, conversation_id, user_id, role, content, created_at, session_id,
            dept_id, title, derived_title, tokens_used, latency_ms, metadata, contexts, stream_entry)
        FROM STDIN
        """

    /// New conversations, owned by the user of their first message in arrival order. Sorted by
    /// ID so that concurrent batches take their locks in the same order. Conversations that
    /// exist are skipped by a plain index lookup; `ON CONFLICT` settles the race with a
    /// concurrent creator.
    static let insertConversations = """
        INSERT INTO conversations (id, user_id, dept_id, created_at, updated_at)
        SELECT id, user_id, dept_id, created_at, now()
        FROM (
            SELECT DISTINCT ON (conversation_id) conversation_id AS id, user_id, dept_id, created_at
            FROM historian_stage
            ORDER BY conversation_id, seq
        ) AS first_messages
        WHERE NOT EXISTS (SELECT 1 FROM conversations AS c WHERE c.id = first_messages.id)
        ORDER BY id
        ON CONFLICT (id) DO NOTHING
        """

    /// Locks the unit's conversations (`$1`, an array) in ID order, inserts the messages whose
    /// user owns their conversation, their contexts, and updates the conversations they touched.
    /// Returns the IDs it inserted.
    ///
    /// The conversations come as an array rather than from the staging table, which has no
    /// statistics: PostgreSQL then plans index lookups, not a scan of every conversation.
    static let insertMessages = """
        WITH owners AS (
            SELECT c.id, c.user_id FROM conversations AS c
            WHERE c.id = ANY($1::uuid[])
            ORDER BY c.id
            FOR NO KEY UPDATE
        ), inserted AS (
            INSERT INTO messages (id, conversation_id, role, content, tokens_used, latency_ms, created_at,
                metadata, session_id, stream_entry)
            SELECT s.id, s.conversation_id, s.role, s.content, s.tokens_used, s.latency_ms, s.created_at,
                s.metadata, s.session_id, s.stream_entry
            FROM historian_stage AS s
            JOIN owners AS o ON o.id = s.conversation_id AND o.user_id = s.user_id
            ORDER BY s.seq
            ON CONFLICT (id) DO NOTHING
            RETURNING *
        ), contexts AS (
            INSERT INTO message_contexts (id, message_id, position, doc_id, content, score, metadata)
            SELECT md5(s.id::text || '/' || e.position)::uuid, s.id, e.position,
                e.value ->> 'doc_id', e.value ->> 'content', (e.value ->> 'score')::double precision,
                CASE WHEN jsonb_typeof(e.value -> 'metadata') = 'object' THEN e.value -> 'metadata' END
            FROM inserted AS i
            JOIN historian_stage AS s ON s.id = i.id
            CROSS JOIN LATERAL jsonb_array_elements(s.contexts) WITH ORDINALITY AS e (value, position)
            WHERE s.contexts IS NOT NULL
            ON CONFLICT (id) DO NOTHING
        ), touched AS (
            SELECT s.conversation_id,
                min(s.created_at) AS first_at,
                (array_agg(s.title ORDER BY s.seq DESC) FILTER (WHERE s.title IS NOT NULL))[1] AS explicit_title,
                (array_agg(s.derived_title ORDER BY s.created_at, s.seq)
                    FILTER (WHERE s.derived_title IS NOT NULL))[1] AS derived_title,
                min(s.created_at) FILTER (WHERE s.derived_title IS NOT NULL) AS derived_at
            FROM inserted AS i JOIN historian_stage AS s ON s.id = i.id
            GROUP BY s.conversation_id
        ), updated AS (
            -- An explicit title wins; otherwise the title comes from the earliest user message
            -- seen so far, so a late or out-of-order first message still names its conversation.
            UPDATE conversations AS c SET
                updated_at = now(),
                created_at = least(c.created_at, t.first_at),
                title = CASE
                    WHEN t.explicit_title IS NOT NULL THEN t.explicit_title
                    WHEN c.title IS NOT NULL AND c.title_derived_from IS NULL THEN c.title
                    WHEN t.derived_at < c.title_derived_from OR c.title IS NULL THEN coalesce(t.derived_title, c.title)
                    ELSE c.title END,
                title_derived_from = CASE
                    WHEN t.explicit_title IS NOT NULL THEN NULL
                    WHEN c.title IS NOT NULL AND c.title_derived_from IS NULL THEN NULL
                    WHEN t.derived_at < c.title_derived_from OR c.title IS NULL THEN coalesce(t.derived_at, c.title_derived_from)
                    ELSE c.title_derived_from END,
                cache_version = c.cache_version + 1
            FROM touched AS t
            WHERE c.id = t.conversation_id
            RETURNING c.id, c.cache_version
        )
        SELECT i.id::text, i.conversation_id::text, u.cache_version::text, \(RecentCache.elementSQL("i"))
        FROM inserted AS i JOIN updated AS u ON u.id = i.conversation_id
        ORDER BY i.conversation_id, i.created_at, i.arrival
        """

    static let existingMessages = """
        SELECT m.id::text, m.conversation_id::text, m.role, m.content
        FROM messages AS m WHERE m.id = ANY($1::uuid[])
        """

    static let owners = """
        SELECT id::text, user_id FROM conversations WHERE id = ANY($1::uuid[])
        """

    /// Prepares a fresh connection for `store`.
    public static func prepare(_ session: PostgresSession) throws {
        try session.execute(createStage)
    }

    /// What one transaction did: each message's result, and the cache changes it made.
    public struct Report: Sendable {
        public var results: [UUIDText: StoreResult] = [:]
        /// One delta per conversation the transaction added messages to.
        public var cacheWrites: [CacheWrite] = []
    }

    /// Writes one unit in one transaction and reports what became of each message.
    /// The caller has run `prepare` on this connection.
    public static func store(_ unit: [IncomingMessage], in session: PostgresSession) throws -> Report {
        try session.execute("BEGIN")
        do {
            try session.copyIn(copyStage, data: encodeStage(unit))
            _ = try session.query(prepared: "historian_insert_conversations", insertConversations)
            let conversations = Array(Set(unit.map(\.conversationID)))
            let inserted = try session.query(prepared: "historian_insert_messages", insertMessages, [arrayLiteral(conversations)])
            var report = Report()
            for row in inserted.rows {
                guard let id = row[0].flatMap(UUIDText.init), let conversation = row[1],
                    let version = row[2].flatMap({ Int64($0) }), let element = row[3]
                else { continue }
                report.results[id] = .stored
                if report.cacheWrites.last?.conversationID != conversation {
                    report.cacheWrites.append(CacheWrite(mode: .delta, conversationID: conversation, version: version, elements: []))
                }
                report.cacheWrites[report.cacheWrites.count - 1].elements.append(element)
            }
            let rest = unit.filter { report.results[$0.id] == nil }
            if !rest.isEmpty {
                for (id, judged) in try judge(rest, in: session) {
                    // `nil`: new, yet not inserted (its conversation vanished meanwhile); the
                    // state machine retries it rather than guess.
                    if let judged { report.results[id] = judged }
                }
            }
            try session.execute("COMMIT")
            return report
        } catch {
            _ = try? session.execute("ROLLBACK")
            throw error
        }
    }

    /// Judges messages against what is stored: the same judgement the dry run makes.
    public static func judge(_ messages: [IncomingMessage], in session: PostgresSession) throws -> [UUIDText: StoreResult?] {
        let existing = try existing(ids: messages.map(\.id), in: session)
        let owners = try owners(of: messages.map(\.conversationID), in: session)
        var results: [UUIDText: StoreResult?] = [:]
        for message in messages {
            results[message.id] = StoreJudgement.judge(
                message,
                existing: existing[message.id],
                owner: owners[message.conversationID]
            )
        }
        return results
    }

    static func existing(ids: [UUIDText], in session: PostgresSession) throws -> [UUIDText: StoredMessage] {
        let rows = try session.query(existingMessages, [arrayLiteral(ids)])
        var found: [UUIDText: StoredMessage] = [:]
        for row in rows.rows {
            guard let id = row[0].flatMap(UUIDText.init), let conversation = row[1].flatMap(UUIDText.init) else {
                continue
            }
            found[id] = StoredMessage(conversationID: conversation, role: row[2] ?? "", content: row[3] ?? "")
        }
        return found
    }

    static func owners(of conversations: [UUIDText], in session: PostgresSession) throws -> [UUIDText: String] {
        let rows = try session.query(owners, [arrayLiteral(Array(Set(conversations)))])
        var found: [UUIDText: String] = [:]
        for row in rows.rows {
            if let id = row[0].flatMap(UUIDText.init), let owner = row[1] { found[id] = owner }
        }
        return found
    }

    /// `{a,b,c}`: a PostgreSQL array literal of UUIDs, which need no quoting.
    static func arrayLiteral(_ ids: [UUIDText]) -> String {
        arrayLiteral(ids.map(\.text))
    }

    static func arrayLiteral(_ ids: [String]) -> String {
        "{" + ids.joined(separator: ",") + "}"
    }

    /// The unit in `COPY … FROM STDIN` text format.
    static func encodeStage(_ unit: [IncomingMessage]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(unit.reduce(0) { $0 + $1.content.utf8.count + 256 })
        for (seq, message) in unit.enumerated() {
            CopyText.append(String(seq), to: &out)
            CopyText.tab(&out)
            CopyText.append(message.id.text, to: &out)
            CopyText.tab(&out)
            CopyText.append(message.conversationID.text, to: &out)
            CopyText.tab(&out)
            CopyText.append(message.userID, to: &out)
            CopyText.tab(&out)
            CopyText.append(message.role.rawValue, to: &out)
            CopyText.tab(&out)
            CopyText.append(message.content, to: &out)
            CopyText.tab(&out)
            CopyText.append(message.createdAt.rfc3339, to: &out)
            CopyText.tab(&out)
            CopyText.append(message.sessionID, to: &out)
            CopyText.tab(&out)
            CopyText.append(message.deptID, to: &out)
            CopyText.tab(&out)
            CopyText.append(message.title, to: &out)
            CopyText.tab(&out)
            CopyText.append(message.derivedTitle, to: &out)
            CopyText.tab(&out)
            CopyText.append(message.tokensUsed.map(String.init), to: &out)
            CopyText.tab(&out)
            CopyText.append(message.latencyMs.map(String.init), to: &out)
            CopyText.tab(&out)
            CopyText.append(message.metadata, to: &out)
            CopyText.tab(&out)
            CopyText.append(message.contexts, to: &out)
            CopyText.tab(&out)
            CopyText.append(message.entryID.description, to: &out)
            out.append(0x0A)
        }
        return out
    }
}

/// PostgreSQL's COPY text format: tab-separated, `\N` for NULL, backslash escapes.
public enum CopyText {
    /// Appends one row: the fields tab-separated, then a newline.
    public static func appendRow(_ fields: [String?], to out: inout [UInt8]) {
        for (index, field) in fields.enumerated() {
            if index > 0 { tab(&out) }
            append(field, to: &out)
        }
        out.append(0x0A)
    }

    static func tab(_ out: inout [UInt8]) {
        out.append(0x09)
    }

    public static func append(_ value: String?, to out: inout [UInt8]) {
        guard var value else {
            out.append(0x5C)
            out.append(0x4E)
            return
        }
        value.withUTF8 { bytes in
            // Copy runs of plain bytes whole; only the four special bytes are escaped one by one.
            var runStart = 0
            for index in bytes.indices {
                let escaped: UInt8
                switch bytes[index] {
                case 0x5C: escaped = 0x5C
                case 0x09: escaped = 0x74
                case 0x0A: escaped = 0x6E
                case 0x0D: escaped = 0x72
                default: continue
                }
                out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[runStart..<index]))
                out.append(0x5C)
                out.append(escaped)
                runStart = index + 1
            }
            out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[runStart...]))
        }
    }
}
