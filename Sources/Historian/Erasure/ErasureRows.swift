import PostgresClient

/// The PostgreSQL part of an erasure: the subject's rows in `conversations` (their messages and
/// contexts go with them, `ON DELETE CASCADE`) and `archived_conversations`, deleted in one
/// transaction that also writes the plan for the other steps into the journal row.
///
/// **Racing the pipeline.** The transaction first takes `EXCLUSIVE` locks on `conversations` and
/// `archived_conversations`, which only plain reads get past:
/// - A store call takes `ROW EXCLUSIVE` on `conversations` to create or update one, and `ROW
///   SHARE` to lock its rows or check a message's foreign key. The lock waits for the calls
///   under way to commit (their rows are then deleted too) and holds new ones back until the
///   erasure commits; they then find the conversation gone and store their messages as new
///   data, or store nothing. (`SHARE ROW EXCLUSIVE` would not do: a call that had inserted
///   messages would hold its conversation's key-share row lock, and wait for the table lock
///   while the delete waited for the row: a deadlock.) So every row of the subject that
///   outlives the erasure was written by a transaction that started writing after the erasure
///   committed: its `xmin` is newer than the journal's `rows_deleted_xid`.
/// - An archive pass locks its conversation's row (`FOR UPDATE`) before recording it as
///   archived: it waits, then finds the conversation gone and removes its file; or it went
///   first, and the erasure deletes the `archived_conversations` row it wrote.
/// - A restore locks the `archived_conversations` row, then inserts into `conversations`. It
///   waits for the erasure, then finds nothing to restore. One that had locked its row before
///   the erasure locked the table deadlocks with it: PostgreSQL aborts one of the two, and
///   both are retried (`Erasure` retries this transaction).
///
/// The locks pause the pipeline's stores for as long as the transaction runs: erasures are rare.
enum ErasureRows {
    /// The subject's live conversations, as a condition on `conversations AS c`.
    static func liveCondition(_ subject: ErasureSubject) -> String {
        subject.scope == .user ? "c.user_id = $1" : "c.id = $1::uuid"
    }

    /// The subject's archived conversations, as a condition on `archived_conversations AS a`.
    static func archivedCondition(_ subject: ErasureSubject) -> String {
        subject.scope == .user ? "a.user_id = $1" : "a.id = $1::uuid"
    }

    /// The plan for the other steps, and what deleting the rows would remove.
    static func collect(_ subject: ErasureSubject, in session: PostgresSession) throws -> (ErasurePlan, ErasureCounts) {
        let live = liveCondition(subject)
        let parameters = [subject.id]
        let conversations = try session.query(
            "SELECT c.id::text FROM conversations AS c WHERE \(live) ORDER BY c.id",
            parameters
        ).rows.compactMap { $0[0] }
        let archived = try session.query(
            "SELECT a.id::text, a.path FROM archived_conversations AS a WHERE \(archivedCondition(subject)) ORDER BY a.id",
            parameters
        ).rows
        let sizes = try session.query(
            """
            SELECT (SELECT count(*) FROM messages AS m JOIN conversations AS c ON c.id = m.conversation_id
                    WHERE \(live))::text,
                (SELECT count(*) FROM message_contexts AS x JOIN messages AS m ON m.id = x.message_id
                    JOIN conversations AS c ON c.id = m.conversation_id WHERE \(live))::text
            """,
            parameters
        )
        var plan = ErasurePlan()
        var ids = Set(conversations + archived.compactMap { $0[0] })
        if let conversation = subject.conversation {
            // Its keys and files are looked for even when no row names it (any more).
            ids.insert(conversation.text)
        } else {
            plan.sessions = try session.query(
                """
                SELECT DISTINCT m.session_id FROM messages AS m JOIN conversations AS c ON c.id = m.conversation_id
                WHERE \(live) AND m.session_id IS NOT NULL ORDER BY 1
                """,
                parameters
            ).rows.compactMap { $0[0] }
        }
        plan.conversations = ids.sorted()
        plan.files = archived.compactMap { $0[1] }.sorted()

        var counts = ErasureCounts()
        counts.conversations = conversations.count
        counts.archivedConversations = archived.count
        counts.messages = sizes.rows.first?[0].flatMap { Int($0) } ?? 0
        counts.contexts = sizes.rows.first?[1].flatMap { Int($0) } ?? 0
        return (plan, counts)
    }

    /// What deleting the rows would remove now, from one snapshot, locking nothing.
    static func preview(_ subject: ErasureSubject, in session: PostgresSession) throws -> (ErasurePlan, ErasureCounts) {
        try session.transaction("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY") { _ in
            try collect(subject, in: session)
        }
    }

    /// Locks, reads the plan, deletes the rows and records the step with the plan in journal
    /// row `journal`, in one transaction: either the rows are gone and the journal knows what
    /// else to remove, or nothing happened.
    /// - Returns: the plan, and the journal's counts now.
    static func delete(
        _ subject: ErasureSubject,
        journal: Int64,
        in session: PostgresSession
    ) throws -> (plan: ErasurePlan, removed: ErasureCounts) {
        try session.transaction { _ in
            try session.execute("LOCK TABLE conversations, archived_conversations IN EXCLUSIVE MODE")
            let (plan, collected) = try collect(subject, in: session)
            var counts = collected
            let parameters = [subject.id]
            counts.conversations = try session.query(
                "DELETE FROM conversations AS c WHERE \(liveCondition(subject))",
                parameters
            ).affectedRows
            counts.archivedConversations = try session.query(
                "DELETE FROM archived_conversations AS a WHERE \(archivedCondition(subject))",
                parameters
            ).affectedRows
            let total = try ErasureJournal.record(journal, step: .rowsDeleted, removed: counts, plan: plan, in: session)
            return (plan, total)
        }
    }
}
