/// The two server-side functions that store a unit of messages, each in one statement: one call,
/// one round trip, one transaction (the call commits by itself, outside a transaction block).
///
/// - `historian_store_new` takes the usual unit: new messages, each from its conversation's
///   owner. It creates the conversations that are missing, inserts the messages and their
///   contexts, and updates the conversations with aggregates the caller computed
///   (`ConversationTouch`). A conversation owned by someone else makes it answer `c` before it
///   writes anything; a message already stored (unique violation, 23505) or a conversation
///   created meanwhile by another user (`HI001`) makes it fail, which rolls the whole call
///   back: either way, the unit is for the checked function. (A conversation created meanwhile
///   by another writer for the same user is simply used.) (Failing rather than catching
///   the error keeps the call free of a subtransaction.) Conversations found archived make it answer `a`
///   rows without writing: the caller restores them and calls again.
/// - `historian_store_checked` takes any unit. It inserts the messages whose user owns their
///   conversation and whose ID is not stored yet, computes the conversations' aggregates from
///   the messages it inserted, and names the others, which `MessageStore` judges with
///   `StoreJudgement`, the rule the dry run uses too.
///
/// Both first create the missing conversations, in ID order, and take the conversations' row
/// locks (`FOR NO KEY UPDATE`, by the update) in ID order, so concurrent writers cannot
/// deadlock: a writer waiting to create a conversation holds only rows it created, with lower
/// IDs, and the locking statements never wait for a row whose creation is not committed (they
/// do not see it). The messages' foreign-key checks take `KEY SHARE` locks, which the update's
/// locks do not conflict with. Should a plan ever lock in another order, PostgreSQL reports the
/// deadlock (40P01), which is retried like any transient error.
///
/// Their statements are planned once per connection (`plan_cache_mode = auto`) and without
/// sequential scans: every one of them looks rows up by key, so their generic plans are index
/// lookups whatever the statistics said when they were made. A plan cached while
/// `conversations` was small would otherwise read the whole table as it grows.
///
/// Rows answered: `(kind, key, number, body)`:
/// - `v`: conversation `key` is now at cache version `number`;
/// - `m`: the message at position `number` (from 1) of the unit has metadata `body`, as
///   PostgreSQL prints `jsonb` (for the cache elements);
/// - `a`: conversation `key` is archived; nothing was written;
/// - `c`: the unit needs the checked function; nothing was written (`historian_store_new` only);
/// - `j`: message `key` was not inserted (`historian_store_checked` only): stored already, or its
///   conversation has another owner or went away; `MessageStore` judges it.
enum StoreFunctions {
    /// The SQLSTATE `historian_store_new` fails with when another writer created one of the
    /// unit's conversations first, for another user.
    static let createdMeanwhile = "HI001"

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

    /// A message's contexts as `message_contexts` rows, from `s (id, contexts)`.
    static let contextRows = """
        SELECT md5(s.id::text || '/' || e.position)::uuid, s.id, e.position,
                    e.value ->> 'doc_id', e.value ->> 'content', (e.value ->> 'score')::double precision,
                    CASE WHEN jsonb_typeof(e.value -> 'metadata') = 'object' THEN e.value -> 'metadata' END
        """

    /// `historian_store_new`'s parameters, in order: per message (arrival order) `ids`,
    /// `conversation_ids`, `roles`, `contents`, `tokens`, `latencies`, `created`, `metadata`,
    /// `session_ids`, `entries`; the messages that have contexts and their contexts; per
    /// conversation (ID order) `conversations`, `owners`, `depts`, `first_at`, `explicit_titles`,
    /// `derived_titles`, `derived_at`.
    static let newParameterTypes = [
        "uuid[]", "uuid[]", "text[]", "text[]", "integer[]", "integer[]", "timestamptz[]", "jsonb[]", "text[]", "text[]",
        "uuid[]", "jsonb[]",
        "uuid[]", "text[]", "text[]", "timestamptz[]", "text[]", "text[]", "timestamptz[]",
    ]

    /// The conversations that are missing, and how many have another owner than their
    /// messages' user; read without a lock: owners never change, and the messages' foreign
    /// keys keep their conversations from going away meanwhile.
    ///
    /// Here and below, statements that join the arrays to `conversations` also name the
    /// conversations in an `= ANY` condition: joined only to the arrays, a generic plan made
    /// while the table was small reads every conversation (a hash join, or a nested loop, over
    /// the whole index).
    static let readOwners = """
        SELECT array_agg(t.id) FILTER (WHERE c.id IS NULL), count(*) FILTER (WHERE c.user_id <> t.owner)
                FROM unnest($13, $14) AS t (id, owner)
                LEFT JOIN conversations AS c ON c.id = t.id AND c.id = ANY ($13)
        """

    /// The unit's conversations that are missing or have another owner than their messages'
    /// user, after another writer created some of them.
    static let recheckOwners = """
        SELECT count(*) FROM unnest($13, $14) AS t (id, owner)
                    LEFT JOIN conversations AS c ON c.id = t.id AND c.id = ANY ($13)
                    WHERE c.user_id IS DISTINCT FROM t.owner
        """

    static let readArchived = """
        SELECT 'a'::"char", a.id, NULL::bigint, NULL::text FROM archived_conversations AS a WHERE a.id = ANY ($13)
        """

    /// The missing conversations, in ID order.
    static let createConversations = """
        INSERT INTO conversations (id, user_id, dept_id, created_at, updated_at)
                    SELECT t.id, t.owner, t.dept, t.first_at, now()
                    FROM unnest($13, $14, $15, $16) AS t (id, owner, dept, first_at)
                    WHERE NOT EXISTS (SELECT 1 FROM conversations AS c WHERE c.id = t.id AND c.id = ANY ($13))
                    ORDER BY t.id
                    ON CONFLICT (id) DO NOTHING
        """

    /// In arrival order: a function scan of unnest returns the arrays' order.
    static let insertMessages = """
        INSERT INTO messages (id, conversation_id, role, content, tokens_used, latency_ms, created_at,
                    metadata, session_id, stream_entry)
                SELECT * FROM unnest($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
        """

    static let insertContexts = """
        INSERT INTO message_contexts (id, message_id, position, doc_id, content, score, metadata)
                    \(contextRows)
                    FROM unnest($11, $12) AS s (id, contexts)
                    CROSS JOIN LATERAL jsonb_array_elements(s.contexts) WITH ORDINALITY AS e (value, position)
                    ON CONFLICT (id) DO NOTHING
        """

    static let updateConversations = """
        WITH updated AS (
                        UPDATE conversations AS c SET \(conversationChanges)
                        FROM unnest($13, $16, $17, $18, $19)
                            AS t (conversation_id, first_at, explicit_title, derived_title, derived_at)
                        WHERE c.id = ANY ($13) AND c.id = t.conversation_id
                        RETURNING c.id, c.cache_version
                    )
                    SELECT 'v'::"char", u.id, u.cache_version, NULL::text FROM updated AS u
                    UNION ALL
                    SELECT 'm'::"char", NULL::uuid, n.position, n.metadata::text
                    FROM unnest($8) WITH ORDINALITY AS n (metadata, position)
                    WHERE n.metadata IS NOT NULL
        """

    /// The statements of `historian_store_new` that read or lock rows, each planned once per
    /// connection: `MessageStoreTests` checks that their generic plans look rows up by key.
    static let newStatements = [
        readOwners, recheckOwners, readArchived, createConversations, insertContexts, updateConversations,
    ]

    static let storeNew = """
        CREATE FUNCTION historian_store_new(\(newParameterTypes.joined(separator: ", ")))
        RETURNS TABLE (kind "char", key uuid, number bigint, body text)
        LANGUAGE plpgsql
        SET plan_cache_mode = auto
        SET enable_seqscan = off
        AS $function$
        #variable_conflict use_column
        DECLARE
            missing uuid[];
            mismatched integer;
            created integer;
        BEGIN
            \(readOwners)
                INTO missing, mismatched;
            IF mismatched > 0 THEN
                RETURN QUERY SELECT 'c'::"char", NULL::uuid, NULL::bigint, NULL::text;
                RETURN;
            END IF;
            IF missing IS NOT NULL THEN
                RETURN QUERY \(readArchived);
                IF FOUND THEN RETURN; END IF;
            END IF;
            IF missing IS NOT NULL THEN
                \(createConversations);
                GET DIAGNOSTICS created = ROW_COUNT;
                -- Another writer created some first, and has committed (the insert waited for
                -- it): their owners are read again. Any other owner, or a conversation gone
                -- again, is for the checked function.
                IF created < cardinality(missing) THEN
                    \(recheckOwners)
                        INTO mismatched;
                    IF mismatched > 0 THEN
                        RAISE SQLSTATE 'HI001' USING MESSAGE = 'a conversation was created meanwhile by another user';
                    END IF;
                END IF;
            END IF;
            \(insertMessages);
            IF cardinality($11) > 0 THEN
                \(insertContexts);
            END IF;
            RETURN QUERY
                \(updateConversations);
        END
        $function$
        """

    /// `historian_store_checked`'s parameters, in order: per message (arrival order) the ten of
    /// `historian_store_new` (`ids` … `entries`), then `user_ids`, `dept_ids`, `titles`,
    /// `derived_titles`, `contexts`; then the unit's conversations in ID order.
    static let storeChecked = """
        CREATE FUNCTION historian_store_checked(
            uuid[], uuid[], text[], text[], integer[], integer[], timestamptz[], jsonb[], text[], text[],
            text[], text[], text[], text[], jsonb[],
            uuid[]
        ) RETURNS TABLE (kind "char", key uuid, number bigint, body text)
        LANGUAGE plpgsql
        SET plan_cache_mode = auto
        SET enable_seqscan = off
        AS $function$
        #variable_conflict use_column
        DECLARE
            created uuid[];
        BEGIN
            RETURN QUERY SELECT 'a'::"char", a.id, NULL::bigint, NULL::text
                FROM archived_conversations AS a
                WHERE a.id = ANY ($16) AND NOT EXISTS (SELECT 1 FROM conversations AS c WHERE c.id = a.id);
            IF FOUND THEN RETURN; END IF;
            -- New conversations, owned by the user of their first message in arrival order.
            WITH firsts AS (
                SELECT DISTINCT ON (s.conversation_id) s.conversation_id, s.user_id, s.dept_id, s.created_at
                FROM unnest($2, $11, $12, $7) WITH ORDINALITY AS s (conversation_id, user_id, dept_id, created_at, seq)
                ORDER BY s.conversation_id, s.seq
            ), made AS (
                INSERT INTO conversations (id, user_id, dept_id, created_at, updated_at)
                SELECT f.conversation_id, f.user_id, f.dept_id, f.created_at, now()
                FROM firsts AS f
                WHERE NOT EXISTS (SELECT 1 FROM conversations AS c WHERE c.id = f.conversation_id)
                    AND NOT EXISTS (SELECT 1 FROM archived_conversations AS a WHERE a.id = f.conversation_id)
                ORDER BY f.conversation_id
                ON CONFLICT (id) DO NOTHING
                RETURNING id
            )
            SELECT array_agg(made.id) INTO created FROM made;
            -- The messages whose user owns their conversation and whose ID is new; the others
            -- are named, for the caller to judge.
            RETURN QUERY
                WITH s AS (
                    SELECT * FROM unnest($1, $2, $11, $3, $4, $5, $6, $7, $8, $9, $10, $13, $14, $15)
                        WITH ORDINALITY AS s (id, conversation_id, user_id, role, content, tokens_used, latency_ms,
                            created_at, metadata, session_id, stream_entry, title, derived_title, contexts, seq)
                ), owners AS (
                    SELECT c.id, c.user_id FROM conversations AS c
                    WHERE c.id = ANY ($16)
                    ORDER BY c.id
                    FOR NO KEY UPDATE
                ), inserted AS (
                    INSERT INTO messages (id, conversation_id, role, content, tokens_used, latency_ms, created_at,
                        metadata, session_id, stream_entry)
                    SELECT s.id, s.conversation_id, s.role, s.content, s.tokens_used, s.latency_ms, s.created_at,
                        s.metadata, s.session_id, s.stream_entry
                    FROM s JOIN owners AS o ON o.id = s.conversation_id AND o.user_id = s.user_id
                    ORDER BY s.seq
                    ON CONFLICT (id) DO NOTHING
                    RETURNING id
                ), contexts AS (
                    INSERT INTO message_contexts (id, message_id, position, doc_id, content, score, metadata)
                    \(contextRows)
                    FROM inserted AS i JOIN s ON s.id = i.id
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
                    FROM inserted AS i JOIN s ON s.id = i.id
                    GROUP BY s.conversation_id
                ), updated AS (
                    UPDATE conversations AS c SET \(conversationChanges)
                    FROM touched AS t
                    WHERE c.id = t.conversation_id
                    RETURNING c.id, c.cache_version
                )
                SELECT 'v'::"char", u.id, u.cache_version, NULL::text FROM updated AS u
                UNION ALL
                SELECT 'm'::"char", NULL::uuid, s.seq, s.metadata::text
                FROM inserted AS i JOIN s ON s.id = i.id
                WHERE s.metadata IS NOT NULL
                UNION ALL
                SELECT 'j'::"char", s.id, NULL::bigint, NULL::text
                FROM s LEFT JOIN inserted AS i ON i.id = s.id
                WHERE i.id IS NULL;
            -- A conversation exists only from its first stored message: those created above
            -- whose messages were all turned away go again.
            IF created IS NOT NULL THEN
                DELETE FROM conversations AS c
                WHERE c.id = ANY (created) AND NOT EXISTS (SELECT 1 FROM messages AS m WHERE m.conversation_id = c.id);
            END IF;
        END
        $function$
        """

    static let migration = storeNew + ";\n" + storeChecked + ";\n"
}
