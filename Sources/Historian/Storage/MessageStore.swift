import PostgresClient

/// A message as PostgreSQL holds it, for judging a redelivery.
public struct StoredMessage: Sendable, Hashable {
    public var conversationID: CanonicalUUID
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
            // Content byte for byte: String's == holds canonically equivalent text equal (é as
            // U+00E9 or as e + U+0301), which PostgreSQL stores as different bytes.
            let same =
                existing.conversationID == message.conversationID && existing.role == message.role.rawValue
                && existing.content.utf8.elementsEqual(message.content.utf8)
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
/// Two paths, with the same result:
///
/// - **Direct** (the usual case: new messages from their conversations' owners). The missing
///   conversations are created and the owners checked, then the messages go straight into
///   `messages` with `COPY`; last, one statement locks and updates the conversations and
///   returns the cache elements. If anything is unusual (a message whose user is not its
///   conversation's owner, a `message_id` that is stored already), the transaction is rolled
///   back and the unit takes the staged path.
/// - **Staged.** The unit is copied into a temporary staging table, then moved into the real
///   tables by statements that each touch every row at once. `ON CONFLICT (id) DO NOTHING` makes
///   a redelivered message a no-op; the rows that were not inserted are then judged against
///   what is stored (identical, conflicting, or owned by someone else).
///
/// Both paths first create the missing conversations, in ID order, and then lock all of the
/// unit's conversations, again in ID order, so that concurrent writers cannot deadlock: a
/// writer waiting to create a conversation holds only rows it created, with lower IDs, and the
/// locking statements never wait for a row whose creation is not yet committed (they do not
/// see it).
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
        COPY historian_stage (id, conversation_id, role, content, tokens_used, latency_ms, created_at, metadata,
            session_id, stream_entry, seq, user_id, dept_id, title, derived_title, contexts)
        FROM STDIN
        """

    /// New conversations, owned by the user of their first message in arrival order. Sorted by
    /// ID so that concurrent batches take their locks in the same order. Conversations that
    /// exist are skipped by a plain index lookup; `ON CONFLICT` settles the race with a
    /// concurrent creator. Returns the IDs it created.
    static let insertConversations = PreparedStatement(
        "historian_insert_conversations",
        """
            INSERT INTO conversations (id, user_id, dept_id, created_at, updated_at)
            SELECT id, user_id, dept_id, created_at, now()
            FROM (
                SELECT DISTINCT ON (conversation_id) conversation_id AS id, user_id, dept_id, created_at
                FROM historian_stage
                ORDER BY conversation_id, seq
            ) AS first_messages
            WHERE NOT EXISTS (SELECT 1 FROM conversations AS c WHERE c.id = first_messages.id)
                AND NOT EXISTS (SELECT 1 FROM archived_conversations AS a WHERE a.id = first_messages.id)
            ORDER BY id
            ON CONFLICT (id) DO NOTHING
            RETURNING id::text
            """
    )

    /// Removes conversations this transaction created (`$1`) in which no message was stored:
    /// their messages were all turned away (a conflicting copy of a stored message, another
    /// user's). A conversation exists only from its first stored message.
    static let deleteEmptyConversations = """
        DELETE FROM conversations AS c
        WHERE c.id = ANY($1::uuid[]) AND NOT EXISTS (SELECT 1 FROM messages AS m WHERE m.conversation_id = c.id)
        """

    /// Locks the unit's conversations (`$1`, an array) in ID order, inserts the messages whose
    /// user owns their conversation, their contexts, and updates the conversations they touched.
    /// Returns the IDs it inserted.
    ///
    /// The conversations come as an array rather than from the staging table, which has no
    /// statistics: PostgreSQL then plans index lookups, not a scan of every conversation.
    static let insertMessages = PreparedStatement(
        "historian_insert_messages",
        """
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
                UPDATE conversations AS c SET \(conversationChanges)
                FROM touched AS t
                WHERE c.id = t.conversation_id
                RETURNING c.id, c.cache_version
            )
            SELECT i.id::text, i.conversation_id::text, u.cache_version::text, \(RecentCache.elementSQL("i"))
            FROM inserted AS i JOIN updated AS u ON u.id = i.conversation_id
            ORDER BY i.conversation_id, i.created_at, i.arrival
            """
    )

    static let existingMessages = """
        SELECT m.id::text, m.conversation_id::text, m.role, m.content
        FROM messages AS m WHERE m.id = ANY($1::uuid[])
        """

    /// The direct path's settings (see `storeDirect`), as `SET LOCAL` would make them (they end
    /// with the transaction, committed or rolled back), in one statement.
    static let cachedPlanSettings = """
        SELECT set_config('plan_cache_mode', 'auto', true), set_config('enable_seqscan', 'off', true)
        """

    /// Prepares a fresh connection for `store`.
    ///
    /// The direct path's statements are prepared here, so that the first batch does not wait
    /// for them to be parsed (and a schema they do not fit fails at startup); the staged path's
    /// on first use. Apart from the direct path's, which run with cached plans (see
    /// `storeDirect`), they are planned on every call: their arrays of IDs differ in length
    /// from batch to batch, and a generic plan chosen while the tables were small (a
    /// sequential scan of `messages`) would stay in use as they grow.
    ///
    /// They look rows up by key, and the rows they touch (conversations with recent messages,
    /// messages just written) are in memory. With the default `random_page_cost` of 4, priced
    /// for disks that seek, PostgreSQL read and hashed all of the benchmark's 10,000
    /// conversations to lock or update the 490 a batch touched: twice the time of the index
    /// lookups.
    public static func prepare(_ session: PostgresSession) throws {
        try session.execute("SET plan_cache_mode = force_custom_plan")
        try session.execute("SET random_page_cost = 1.1")
        try session.execute(createStage)
        for statement in [conversationStates, createConversations, insertContexts, updateConversations] {
            try session.prepare(statement)
        }
    }

    /// What one transaction did: each message's result, and the cache changes it made.
    public struct Report: Sendable {
        public var results: [CanonicalUUID: StoreResult] = [:]
        /// One delta per conversation the transaction added messages to.
        public var cacheWrites: [CacheWrite] = []
        /// Which path wrote the unit.
        public var path: Path
    }

    public enum Path: Sendable, Hashable {
        case direct
        case staged
    }

    /// Writes one unit in one transaction and reports what became of each message.
    /// The caller has run `prepare` on this connection.
    /// - Parameter metrics: counts the archived conversations the unit brings back.
    public static func store(
        _ unit: [IncomingMessage],
        in session: PostgresSession,
        metrics: DaemonMetrics = .disabled
    ) throws -> Report {
        // A message for an archived conversation brings the conversation back first. Each round
        // restores what the direct path found archived, or follows a conversation that an
        // archive pass took away meanwhile; a unit still not stored after a few takes the staged
        // path, and anything left unstored there is retried by the caller.
        for _ in 0..<3 {
            switch try storeDirect(unit, in: session) {
            case .stored(let report):
                return report
            case .needsStagedPath:
                return try storeStaged(unit, in: session)
            case .archived(let conversations):
                try restore(conversations, in: session, metrics: metrics)
            case .conversationGone:
                continue
            }
        }
        return try storeStaged(unit, in: session)
    }

    /// What the direct path did with a unit; all but `stored` rolled back.
    enum DirectOutcome {
        case stored(Report)
        /// A redelivery or a message from someone other than the owner: for the staged path.
        case needsStagedPath
        /// Conversations of the unit that are archived: to restore before storing.
        case archived([CanonicalUUID])
        /// A conversation was deleted (archived) while the unit was being stored.
        case conversationGone
    }

    /// Restores archived conversations before their new messages are stored. A failure other
    /// than an outage (a missing or damaged file) needs an operator: it is never the messages'
    /// fault, so it must not turn them into dead letters.
    static func restore(_ conversations: [CanonicalUUID], in session: PostgresSession, metrics: DaemonMetrics) throws {
        for conversation in conversations {
            do {
                // Each restore commits on its own, so it counts even if the unit is retried.
                if case .restored = try Archiver.restore(conversation, in: session) { metrics.recordRestored() }
            } catch let error as PostgresError where error.isTransient {
                throw error
            } catch {
                throw HistorianError(.archiveUnreadable, "cannot restore archived conversation \(conversation.text): \(error)")
            }
        }
    }

    /// The unit's conversations that exist, read without locking them: their owners, and what
    /// their titles rest on (whether there is none, and the time of the message a derived one
    /// came from, in Unix microseconds).
    static let conversationStates = PreparedStatement(
        "historian_conversation_states",
        """
            SELECT id::text, user_id, title IS NULL, (extract(epoch FROM title_derived_from) * 1000000)::bigint
            FROM conversations
            WHERE id = ANY($1::uuid[])
            """
    )

    /// Creates conversations in ID order; returns the ones it created (not those that a
    /// concurrent transaction created first, nor archived ones, which are restored instead).
    static let createConversations = PreparedStatement(
        "historian_create_conversations",
        """
            INSERT INTO conversations (id, user_id, dept_id, created_at, updated_at)
            SELECT id, user_id, dept_id, created_at, now()
            FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[]) AS n (id, user_id, dept_id, created_at)
            WHERE NOT EXISTS (SELECT 1 FROM archived_conversations AS a WHERE a.id = n.id)
            ORDER BY id
            ON CONFLICT (id) DO NOTHING
            RETURNING id::text
            """
    )

    static let copyMessages = """
        COPY messages (id, conversation_id, role, content, tokens_used, latency_ms, created_at, metadata,
            session_id, stream_entry)
        FROM STDIN
        """

    /// The contexts of messages `$1`, one array of them each in `$2`.
    static let insertContexts = PreparedStatement(
        "historian_insert_contexts",
        """
            INSERT INTO message_contexts (id, message_id, position, doc_id, content, score, metadata)
            SELECT md5(s.id::text || '/' || e.position)::uuid, s.id, e.position,
                e.value ->> 'doc_id', e.value ->> 'content', (e.value ->> 'score')::double precision,
                CASE WHEN jsonb_typeof(e.value -> 'metadata') = 'object' THEN e.value -> 'metadata' END
            FROM unnest($1::uuid[], $2::jsonb[]) AS s (id, contexts)
            CROSS JOIN LATERAL jsonb_array_elements(s.contexts) WITH ORDINALITY AS e (value, position)
            ON CONFLICT (id) DO NOTHING
            """
    )

    /// What storing messages changes in their conversation `c`, given the aggregates `t` of the
    /// messages stored (`first_at`, `explicit_title`, `derived_title`, `derived_at`). An
    /// explicit title wins; otherwise the title comes from the earliest user message seen so
    /// far, so a late or out-of-order first message still names its conversation.
    static let conversationChanges = """
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
        """

    /// Updates the conversations the unit touched (one row each in the arrays) and returns
    /// their new cache versions: rows of `(conversation_id, cache_version, NULL)`. Then, for
    /// the cache elements, the metadata `$6` (an array) as PostgreSQL prints `jsonb`: rows of
    /// `(NULL, position in $6 from 1, metadata)`.
    static let updateConversations = PreparedStatement(
        "historian_update_conversations",
        """
            WITH updated AS (
                UPDATE conversations AS c SET \(conversationChanges)
                FROM unnest($1::uuid[], $2::timestamptz[], $3::text[], $4::text[], $5::timestamptz[])
                    AS t (conversation_id, first_at, explicit_title, derived_title, derived_at)
                WHERE c.id = ANY($1::uuid[]) AND c.id = t.conversation_id
                RETURNING c.id, c.cache_version
            )
            SELECT id::text, cache_version::text, NULL::text FROM updated
            UNION ALL
            SELECT NULL, position::text, metadata::text FROM unnest($6::jsonb[]) WITH ORDINALITY AS n (metadata, position)
            """
    )

    /// The direct path; anything but `stored` rolled back.
    ///
    /// The conversations' row locks are taken last, by the update itself: a concurrent writer
    /// whose batch shares a conversation then waits only for this transaction's update and
    /// commit, not for its COPY as well. The update looks its conversations up by key and joins
    /// them to its ID-sorted arrays; whichever side drives the join, the rows come in ID order,
    /// so it locks them in ID order, as every writer does. Should a plan ever lock them in
    /// another order, PostgreSQL reports the deadlock (40P01), which is retried like any
    /// transient error. Owners never change, so reading them without a lock is enough to check
    /// the messages; the messages' foreign keys keep their conversations from going away
    /// meanwhile.
    static func storeDirect(_ unit: [IncomingMessage], in session: PostgresSession) throws -> DirectOutcome {
        let conversations = Set(unit.map(\.conversationID)).sorted()
        do {
            // BEGIN, the settings and the read in one round trip, as the end below: with batches
            // of a few messages, as at moderate rates, round trips were most of the store's time.
            //
            // The transaction runs with cached plans allowed and without sequential scans.
            // PostgreSQL checks each row's foreign key with a query of its own, through a cached
            // plan; forced custom plans would plan that query again for every row, which took a
            // fifth of the backend's time. The read, the update and the inserts of conversations
            // and contexts are then planned once per connection rather than once per batch: at
            // moderate rates, with a few messages a batch, planning the update cost 3 to 7% of
            // PostgreSQL's CPU. Each of them looks rows up by key (the update names its
            // conversations in an `= ANY` condition for that), so without sequential scans their
            // plans are index lookups whatever the statistics say. A plan cached while
            // `conversations` was small would otherwise read the whole table as it grows.
            let begun = try session.pipeline([.plain("BEGIN"), .plain(cachedPlanSettings), readConversationStates(conversations)])
            let states = conversationStates(begun[begun.count - 1])
            var owners = states.mapValues(\.owner)
            if owners.count < conversations.count {
                // New conversations: owned by the user of their first message in the unit.
                var firsts: [CanonicalUUID: IncomingMessage] = [:]
                for message in unit where owners[message.conversationID] == nil && firsts[message.conversationID] == nil {
                    firsts[message.conversationID] = message
                }
                let new = firsts.values.sorted { $0.conversationID < $1.conversationID }
                let created = try session.query(
                    createConversations,
                    parameters: [
                        .binary(PostgresBinary.uuidArray(new.map(\.conversationID.value))),
                        .binary(PostgresBinary.textArray(new.map(\.userID))),
                        .binary(PostgresBinary.textArray(new.map(\.deptID))),
                        .binary(PostgresBinary.timestamptzArray(new.map(\.createdAt.microseconds))),
                    ]
                )
                for message in new { owners[message.conversationID] = message.userID }
                if created.rows.count < new.count {
                    // Another transaction created some of them first (and has committed, or the
                    // insert would still wait): learn their real owners.
                    let ours = Set(created.rows.compactMap { $0[0].flatMap(CanonicalUUID.init) })
                    let theirs = new.map(\.conversationID).filter { !ours.contains($0) }
                    for id in theirs { owners[id] = nil }
                    owners.merge(try MessageStore.owners(of: theirs, in: session)) { _, read in read }
                    // Neither created nor there: archived (or deleted meanwhile).
                    let missing = theirs.filter { owners[$0] == nil }
                    if !missing.isEmpty {
                        let archived = try Archiver.archivedOwners(of: missing, in: session).keys.sorted()
                        try session.execute("ROLLBACK")
                        return archived.isEmpty ? .conversationGone : .archived(archived)
                    }
                }
            }
            guard unit.allSatisfy({ owners[$0.conversationID] == $0.userID }) else {
                try session.execute("ROLLBACK")
                return .needsStagedPath
            }
            do {
                try session.copyIn(copyMessages, data: encodeMessages(unit))
            } catch let error as PostgresError where error.sqlState == "23505" {
                // A message_id that is stored already (a redelivery): judged on the staged path.
                try session.execute("ROLLBACK")
                return .needsStagedPath
            } catch let error as PostgresError where error.sqlState == "23503" {
                // A conversation read above was archived before the foreign-key check could lock
                // it: start again, which restores it.
                try session.execute("ROLLBACK")
                return .conversationGone
            }
            // The rest is one pipeline: the contexts, the update, COMMIT.
            var end: [PipelineStatement] = []
            let withContexts = unit.filter { $0.contexts != nil }
            if !withContexts.isEmpty {
                end.append(
                    .prepared(
                        insertContexts,
                        [
                            .binary(PostgresBinary.uuidArray(withContexts.map(\.id.value))),
                            .binary(PostgresBinary.jsonbArray(withContexts.map(\.contexts))),
                        ]
                    )
                )
            }
            // Titles are derived only where they can matter. A title's state only ever moves
            // forward (none, then derived from ever earlier messages, then explicit), so a
            // state read without a lock can only make this derive too much, never too little;
            // the update decides under the row lock. A conversation created meanwhile has no
            // state here, and gets its titles derived.
            let touched = ConversationTouch.of(unit) { conversation, at in
                states[conversation]?.title.derivationMatters(at: at) ?? true
            }
            .sorted { $0.conversationID < $1.conversationID }
            end.append(
                .prepared(
                    updateConversations,
                    [
                        .binary(PostgresBinary.uuidArray(touched.map(\.conversationID.value))),
                        .binary(PostgresBinary.timestamptzArray(touched.map(\.firstAt.microseconds))),
                        .binary(PostgresBinary.textArray(touched.map(\.explicitTitle))),
                        .binary(PostgresBinary.textArray(touched.map(\.derivedTitle))),
                        .binary(PostgresBinary.timestamptzArray(touched.map { $0.derivedAt?.microseconds })),
                        .binary(PostgresBinary.jsonbArray(unit.compactMap(\.metadata))),
                    ]
                )
            )
            let updated = end.count - 1
            end.append(.plain("COMMIT"))
            // Committed once this returns. Should the update's rows then not add up (which
            // PostgreSQL does not do), the batch is retried and the messages are found stored.
            let rows = try session.pipeline(end)[updated]
            return .stored(try directReport(unit, rows))
        } catch {
            _ = try? session.execute("ROLLBACK")
            throw error
        }
    }

    /// The direct path's report from the rows of `updateConversations`: every message stored,
    /// and one delta per conversation, its elements built in Swift in the order the staged
    /// path reads them back (`created_at`, then arrival, which is the unit's order).
    static func directReport(_ unit: [IncomingMessage], _ rows: PostgresRows) throws -> Report {
        // Positions in the unit rather than copies of the messages.
        let withMetadata = unit.indices.filter { unit[$0].metadata != nil }
        var versions: [CanonicalUUID: Int64] = [:]
        versions.reserveCapacity(rows.rows.count - withMetadata.count)
        var metadata = [String?](repeating: nil, count: unit.count)
        var metadataFound = 0
        for row in rows.rows {
            if let conversation = row[0].flatMap(CanonicalUUID.init), let version = row[1].flatMap({ Int64($0) }) {
                versions[conversation] = version
            } else if let position = row[1].flatMap({ Int($0) }), withMetadata.indices.contains(position - 1),
                let text = row[2], metadata[withMetadata[position - 1]] == nil
            {
                metadata[withMetadata[position - 1]] = text
                metadataFound += 1
            }
        }
        guard metadataFound == withMetadata.count else {
            throw HistorianError(.unexpectedReply, "the conversation update returned metadata for \(metadataFound) of \(withMetadata.count) messages")
        }
        var report = Report(path: .direct)
        report.results.reserveCapacity(unit.count)
        for message in unit { report.results[message.id] = .stored }
        let order = unit.indices.sorted { a, b in
            if unit[a].conversationID != unit[b].conversationID { return unit[a].conversationID < unit[b].conversationID }
            return (unit[a].createdAt, a) < (unit[b].createdAt, b)
        }
        var conversation: CanonicalUUID?
        for index in order {
            let message = unit[index]
            if message.conversationID != conversation {
                conversation = message.conversationID
                guard let version = versions[message.conversationID] else {
                    throw HistorianError(.unexpectedReply, "the conversation update did not return conversation \(message.conversationID)")
                }
                report.cacheWrites.append(CacheWrite(mode: .delta, conversationID: message.conversationID.text, version: version, elements: []))
            }
            report.cacheWrites[report.cacheWrites.count - 1].elements.append(RecentCache.element(of: message, metadata: metadata[index]))
        }
        return report
    }

    /// What the direct path needs of an existing conversation.
    struct ConversationState {
        var owner: String
        var title: TitleState
    }

    static func conversationStates(of conversations: [CanonicalUUID], in session: PostgresSession) throws -> [CanonicalUUID: ConversationState] {
        conversationStates(try session.pipeline([readConversationStates(conversations)])[0])
    }

    /// The read, to run alone or at the head of a pipeline (a pipeline of one costs what a
    /// single query does: the same messages, one round trip).
    static func readConversationStates(_ conversations: [CanonicalUUID]) -> PipelineStatement {
        .prepared(conversationStates, [.binary(PostgresBinary.uuidArray(conversations.map(\.value)))])
    }

    /// The states in the rows of `conversationStates`.
    static func conversationStates(_ rows: PostgresRows) -> [CanonicalUUID: ConversationState] {
        var found: [CanonicalUUID: ConversationState] = [:]
        found.reserveCapacity(rows.rows.count)
        for row in rows.rows {
            guard let id = row[0].flatMap(CanonicalUUID.init), let owner = row[1] else { continue }
            let derivedFrom = row[3].flatMap { Int64($0) }.map(Timestamp.init(microseconds:))
            found[id] = ConversationState(owner: owner, title: TitleState(missing: row[2] == "t", derivedFrom: derivedFrom))
        }
        return found
    }

    /// The owners of those of these conversations that exist, without locking them.
    static func owners(of conversations: [CanonicalUUID], in session: PostgresSession) throws -> [CanonicalUUID: String] {
        guard !conversations.isEmpty else { return [:] }
        return try conversationStates(of: Array(Set(conversations)), in: session).mapValues(\.owner)
    }

    /// Rows of `(id, conversation_id, cache_version, element)`, ordered by conversation, as results
    /// and one cache delta per conversation.
    static func report(_ rows: PostgresRows, path: Path) -> Report {
        var report = Report(path: path)
        report.results.reserveCapacity(rows.rows.count)
        for row in rows.rows {
            guard let id = row[0].flatMap(CanonicalUUID.init), let conversation = row[1],
                let version = row[2].flatMap({ Int64($0) }), let element = row[3]
            else { continue }
            report.results[id] = .stored
            if report.cacheWrites.last?.conversationID != conversation {
                report.cacheWrites.append(CacheWrite(mode: .delta, conversationID: conversation, version: version, elements: []))
            }
            report.cacheWrites[report.cacheWrites.count - 1].elements.append(element)
        }
        return report
    }

    /// The staged path, which takes any unit.
    static func storeStaged(_ unit: [IncomingMessage], in session: PostgresSession) throws -> Report {
        try session.execute("BEGIN")
        do {
            let conversations = Set(unit.map(\.conversationID)).sorted()
            try session.copyIn(copyStage, data: encodeStage(unit))
            let created = try session.query(insertConversations).rows.compactMap { $0[0] }
            let inserted = try session.query(insertMessages, [arrayLiteral(conversations)])
            if !created.isEmpty {
                _ = try session.query(deleteEmptyConversations, [arrayLiteral(created)])
            }
            var report = report(inserted, path: .staged)
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
    public static func judge(_ messages: [IncomingMessage], in session: PostgresSession) throws -> [CanonicalUUID: StoreResult?] {
        let existing = try existing(ids: messages.map(\.id), in: session)
        let owners = try owners(of: messages.map(\.conversationID), in: session)
        var results: [CanonicalUUID: StoreResult?] = [:]
        for message in messages {
            results[message.id] = StoreJudgement.judge(
                message,
                existing: existing[message.id],
                owner: owners[message.conversationID]
            )
        }
        return results
    }

    static func existing(ids: [CanonicalUUID], in session: PostgresSession) throws -> [CanonicalUUID: StoredMessage] {
        let rows = try session.query(existingMessages, [arrayLiteral(ids)])
        var found: [CanonicalUUID: StoredMessage] = [:]
        for row in rows.rows {
            guard let id = row[0].flatMap(CanonicalUUID.init), let conversation = row[1].flatMap(CanonicalUUID.init) else {
                continue
            }
            found[id] = StoredMessage(conversationID: conversation, role: row[2] ?? "", content: row[3] ?? "")
        }
        return found
    }

    /// `{a,b,c}`: a PostgreSQL array literal of UUIDs, which need no quoting.
    static func arrayLiteral(_ ids: [CanonicalUUID]) -> String {
        arrayLiteral(ids.map(\.text))
    }

    static func arrayLiteral(_ ids: [String]) -> String {
        "{" + ids.joined(separator: ",") + "}"
    }

    /// The unit as `messages` rows in `COPY … FROM STDIN` text format (see `copyMessages`).
    static func encodeMessages(_ unit: [IncomingMessage]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(unit.reduce(0) { $0 + $1.content.utf8.count + ($1.metadata?.utf8.count ?? 0) + 160 })
        for message in unit {
            appendMessageColumns(message, to: &out)
            out.append(0x0A)
        }
        return out
    }

    /// The unit as staging rows (see `copyStage`): the `messages` columns, then what the staged
    /// statements need besides.
    static func encodeStage(_ unit: [IncomingMessage]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(unit.reduce(0) { $0 + $1.content.utf8.count + ($1.contexts?.utf8.count ?? 0) + 256 })
        for (seq, message) in unit.enumerated() {
            appendMessageColumns(message, to: &out)
            for field in [String(seq), message.userID, message.deptID, message.title, message.derivedTitle, message.contexts] {
                CopyText.tab(&out)
                CopyText.append(field, to: &out)
            }
            out.append(0x0A)
        }
        return out
    }

    /// The columns of `copyMessages`, tab-separated, without the newline.
    private static func appendMessageColumns(_ message: IncomingMessage, to out: inout [UInt8]) {
        message.id.appendText(to: &out)
        CopyText.tab(&out)
        message.conversationID.appendText(to: &out)
        CopyText.tab(&out)
        CopyText.append(message.role.rawValue, to: &out)
        CopyText.tab(&out)
        CopyText.append(message.content, to: &out)
        CopyText.tab(&out)
        CopyText.append(message.tokensUsed.map(String.init), to: &out)
        CopyText.tab(&out)
        CopyText.append(message.latencyMs.map(String.init), to: &out)
        CopyText.tab(&out)
        message.createdAt.appendRFC3339(to: &out)
        CopyText.tab(&out)
        CopyText.append(message.metadata, to: &out)
        CopyText.tab(&out)
        CopyText.append(message.sessionID, to: &out)
        CopyText.tab(&out)
        CopyText.append(message.entryID.description, to: &out)
    }
}

/// What a stored conversation's title rests on, as far as a new user message is concerned.
struct TitleState {
    /// It has no title yet.
    var missing: Bool
    /// Its title was derived from a user message of this time (`nil`: given explicitly, or none).
    var derivedFrom: Timestamp?

    /// Whether a user message of this time could name the conversation: it has no title, or its
    /// derived title comes from a later message. An explicit title is never replaced by a
    /// derived one.
    func derivationMatters(at time: Timestamp) -> Bool {
        missing || derivedFrom.map { time < $0 } ?? false
    }
}

/// What a unit did to one conversation, for the conversation update of the direct path: the
/// same aggregates that `insertMessages` computes from the staging table.
struct ConversationTouch {
    var conversationID: CanonicalUUID
    /// The earliest `created_at` of its messages in the unit.
    var firstAt: Timestamp
    /// The title of its last message (in arrival order) that has one.
    var explicitTitle: String?
    /// The derived title of its earliest user message, ties by arrival order.
    var derivedTitle: String?
    var derivedAt: Timestamp?

    /// One touch per conversation, in the unit's order of first appearance.
    ///
    /// `derivationMatters` says whether a user message of this time could still name its
    /// conversation; titles are derived only for those, and the update treats a missing derived
    /// title exactly like one that loses to the stored title.
    static func of(
        _ unit: [IncomingMessage],
        derivationMatters: (CanonicalUUID, Timestamp) -> Bool = { _, _ in true }
    ) -> [ConversationTouch] {
        var touches: [ConversationTouch] = []
        var index: [CanonicalUUID: Int] = [:]
        for message in unit {
            let position: Int
            if let known = index[message.conversationID] {
                position = known
                touches[position].firstAt = min(touches[position].firstAt, message.createdAt)
            } else {
                position = touches.count
                index[message.conversationID] = position
                touches.append(ConversationTouch(conversationID: message.conversationID, firstAt: message.createdAt))
            }
            if let title = message.title {
                touches[position].explicitTitle = title
            }
            if message.role == .user, touches[position].derivedAt.map({ message.createdAt < $0 }) ?? true,
                derivationMatters(message.conversationID, message.createdAt),
                let derived = message.derivedTitle
            {
                touches[position].derivedTitle = derived
                touches[position].derivedAt = message.createdAt
            }
        }
        return touches
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
            var index = ByteScan.firstCandidate(in: bytes, from: 0, quote: false)
            while index < bytes.count {
                let escaped: UInt8?
                switch bytes[index] {
                case 0x5C: escaped = 0x5C
                case 0x09: escaped = 0x74
                case 0x0A: escaped = 0x6E
                case 0x0D: escaped = 0x72
                default: escaped = nil  // another control character: COPY takes it as it is
                }
                if let escaped {
                    out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[runStart..<index]))
                    out.append(0x5C)
                    out.append(escaped)
                    runStart = index + 1
                }
                index = ByteScan.firstCandidate(in: bytes, from: index + 1, quote: false)
            }
            out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[runStart...]))
        }
    }
}
