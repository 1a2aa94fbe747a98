import PostgresClient

/// The `erasures` row of an erasure: its journal while it runs, its audit record afterwards
/// (see `ErasureSchema`). Blocking work on one PostgreSQL session.
enum ErasureJournal {
    /// An open row, as `open` found or made it.
    struct Row: Sendable {
        var id: Int64
        var step: ErasureStep
        /// Whether an earlier, interrupted run opened it.
        var resumed: Bool
        var plan: ErasurePlan?
        var removed: ErasureCounts
        var sinceRowsDeleted: Duration?
        var startedAt: String
    }

    /// A closed row's times.
    struct Closed: Sendable {
        var startedAt: String
        var finishedAt: String
    }

    /// Arbitrary but fixed: the advisory locks of erasures are (this, first 32 bits of the
    /// subject's SHA-256), apart from the single-key locks of migrations and archive passes.
    static let lockClass: Int32 = 0x4572_6173  // "Eras"

    /// Takes the subject's advisory lock for the session's life: two erasures of one subject
    /// (a CLI run and an API call, say) run one after the other, never interleaved. A crash
    /// closes the connection, which releases it.
    static func lock(_ subject: ErasureSubject, in session: PostgresSession) throws {
        let key = Int32(bitPattern: UInt32(subject.sha256.prefix(8), radix: 16) ?? 0)
        _ = try session.query("SELECT pg_advisory_lock($1::integer, $2::integer)", [String(lockClass), String(key)])
    }

    static let utc = #"'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'"#
    static let returnedCounts = ErasureCounts.columns.map { "\($0)::text" }.joined(separator: ", ")

    /// The subject's open row, or a new one, in a transaction of its own: the erasure has begun
    /// for the record before anything is removed.
    static func open(_ subject: ErasureSubject, in session: PostgresSession) throws -> Row {
        try session.transaction { _ in
            let found = try session.query(
                """
                SELECT id::text, step, pending::text, to_char(started_at AT TIME ZONE 'UTC', \(utc)),
                    extract(epoch FROM clock_timestamp() - rows_deleted_at)::text, \(returnedCounts)
                FROM erasures WHERE scope = $1 AND subject_sha256 = $2 AND finished_at IS NULL
                FOR UPDATE
                """,
                [subject.scope.rawValue, subject.sha256]
            )
            if let row = found.rows.first {
                guard let id = row[0].flatMap({ Int64($0) }), let step = row[1].flatMap(ErasureStep.init),
                    let startedAt = row[3], let removed = ErasureCounts(texts: row[5...])
                else {
                    throw HistorianError(.unexpectedReply, "an open erasures row could not be read back")
                }
                let since = row[4].flatMap(Double.init).map { Duration.milliseconds(Int64(max(0, $0) * 1000)) }
                return Row(
                    id: id,
                    step: step,
                    resumed: true,
                    plan: try row[2].map { try ErasurePlan(json: $0) },
                    removed: removed,
                    sinceRowsDeleted: since,
                    startedAt: startedAt
                )
            }
            let made = try session.query(
                """
                INSERT INTO erasures (scope, subject_sha256) VALUES ($1, $2)
                RETURNING id::text, to_char(started_at AT TIME ZONE 'UTC', \(utc))
                """,
                [subject.scope.rawValue, subject.sha256]
            )
            guard let id = made[0, "id"].flatMap({ Int64($0) }), let startedAt = made.rows.first?[1] else {
                throw HistorianError(.unexpectedReply, "a new erasures row could not be read back")
            }
            return Row(
                id: id,
                step: .opened,
                resumed: false,
                plan: nil,
                removed: ErasureCounts(),
                sinceRowsDeleted: nil,
                startedAt: startedAt
            )
        }
    }

    /// Records `step` done, adding `removed` to the row's counts; with `plan`, the step is the
    /// rows' deletion, and the plan, the time and this transaction's id go in too. Run it in the
    /// transaction that did the step's PostgreSQL work, if it had any.
    /// - Returns: the row's counts now.
    static func record(
        _ id: Int64,
        step: ErasureStep,
        removed: ErasureCounts,
        plan: ErasurePlan?,
        in session: PostgresSession
    ) throws -> ErasureCounts {
        let additions = ErasureCounts.columns.enumerated().map { index, column in
            "\(column) = \(column) + $\(index + 3)::bigint"
        }.joined(separator: ", ")
        let planned =
            plan == nil
            ? ""
            : ", pending = $10::jsonb, rows_deleted_at = clock_timestamp(), rows_deleted_xid = pg_current_xact_id()"
        let rows = try session.query(
            """
            UPDATE erasures SET step = $2, \(additions)\(planned)
            WHERE id = $1::bigint AND finished_at IS NULL
            RETURNING \(returnedCounts)
            """,
            [String(id), step.rawValue] + removed.values.map { String($0) } + (plan.map { [$0.json] } ?? [])
        )
        guard let row = rows.rows.first, let total = ErasureCounts(texts: row) else {
            throw HistorianError(.unexpectedReply, "erasures row \(id) is not open any more")
        }
        return total
    }

    /// Records `step` done in a transaction of its own.
    static func recordStep(
        _ id: Int64,
        step: ErasureStep,
        removed: ErasureCounts,
        in session: PostgresSession
    ) throws
        -> ErasureCounts
    {
        try session.transaction { _ in try record(id, step: step, removed: removed, plan: nil, in: session) }
    }

    /// Closes the row: the finish time set, the plan (the only identifiers it held) cleared.
    static func close(_ id: Int64, in session: PostgresSession) throws -> Closed {
        try session.transaction { _ in
            let rows = try session.query(
                """
                UPDATE erasures SET finished_at = clock_timestamp(), pending = NULL
                WHERE id = $1::bigint AND finished_at IS NULL
                RETURNING to_char(started_at AT TIME ZONE 'UTC', \(utc)), to_char(finished_at AT TIME ZONE 'UTC', \(utc))
                """,
                [String(id)]
            )
            guard let row = rows.rows.first, let started = row[0], let finished = row[1] else {
                throw HistorianError(.unexpectedReply, "erasures row \(id) is not open any more")
            }
            return Closed(startedAt: started, finishedAt: finished)
        }
    }
}
