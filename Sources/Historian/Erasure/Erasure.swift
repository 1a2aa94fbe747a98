import Logging
import PostgresClient
import RedisClient

/// `historian forget` and the API's `DELETE`s: erases a user's or a conversation's history
/// everywhere (contract §7): rows, archive files and their `.sha256`, Redis keys, dead letters,
/// and leaves an audit row in `erasures`. docs/erasure.md has the whole design.
///
/// Crash-safe and idempotent: the journal row is opened first, each step is recorded in it
/// once done (`ErasureStateMachine` decides the order), and the row is closed last. A rerun for
/// the same subject finds an open row and goes on after its last recorded step; a rerun after
/// a finished erasure does the whole work again in a new row, removing what appeared since (or
/// nothing). This is the thin shell that carries out the state machine's actions.
public struct Erasure: Sendable {
    let endpoints: ServerEndpoints
    let cache: CacheSettings
    /// Whether Redis is a cluster, where erasure does not work yet.
    let onCluster: Bool
    let archiveRoot: String
    let dlqStream: String
    let batchBytes: Int
    let maxContentBytes: Int
    let settle: Duration
    let logger: Logger

    /// How long the dead letters and the second pass over the Redis keys wait after the rows'
    /// commit, for batches committed just before it to have ended: their cache updates (turned
    /// away by the tombstones), session touches and dead letters land within milliseconds.
    public static let defaultSettle: Duration = .seconds(2)

    /// How often the rows' transaction is tried when PostgreSQL aborts it to break a deadlock
    /// (with a restore that locked first), or another transient server error.
    static let rowAttempts = 8

    public init(configuration: HistorianConfiguration, logger: Logger, settle: Duration = Erasure.defaultSettle) throws
    {
        self.endpoints = try ServerEndpoints(configuration)
        self.onCluster = configuration.redisCluster
        self.cache = CacheSettings(configuration)
        self.archiveRoot = configuration.archiveDir
        self.dlqStream = configuration.dlqStream
        self.batchBytes = configuration.batchBytes
        self.maxContentBytes = configuration.maxContentBytes
        self.settle = settle
        self.logger = logger
    }

    /// Erases `subject`, or with `dryRun` counts what an erasure would remove now, writing
    /// nothing. `progress` gets a line after each step: counts, never content or the subject's id.
    public func run(
        _ subject: ErasureSubject,
        dryRun: Bool = false,
        progress: @Sendable (String) -> Void = { _ in }
    ) async throws -> ErasureReport {
        // Its keys are found by SCAN on one node.
        if onCluster {
            throw HistorianError(.invalidConfiguration, "erasure does not work with redis_cluster yet (see docs/cluster.md)")
        }
        // A long delete, or the wait for the locks, must not hit the usual 30 s call timeout.
        let postgres = try await endpoints.connectPostgres(
            logger: logger,
            applicationName: "historian-forget",
            queryTimeout: .seconds(600)
        )
        defer { postgres.close() }
        let redis = try await endpoints.connectRedis(logger: logger)
        defer { redis.close() }
        if dryRun { return try await preview(subject, postgres: postgres, redis: redis, progress: progress) }

        try await postgres.withSession { try ErasureJournal.lock(subject, in: $0) }
        var machine = ErasureStateMachine(settle: settle)
        var journal: ErasureJournal.Row?
        let match = DeadLetterMatch(subject: subject)
        while true {
            switch machine.nextAction(now: .now) {
            case .open:
                let row = try await postgres.withSession { try ErasureJournal.open(subject, in: $0) }
                journal = row
                machine.opened(
                    at: row.step,
                    resumed: row.resumed,
                    plan: row.plan,
                    removed: row.removed,
                    sinceRowsDeleted: row.sinceRowsDeleted,
                    now: .now
                )
                if row.resumed {
                    progress("resuming erasure \(row.id) (\(subject)), interrupted after step \(row.step.rawValue)")
                } else {
                    progress("erasure \(row.id) (\(subject)) opened")
                }
                CrashPoint.reached(.erasureOpened)
            case .deleteRows:
                let id = try journalID(journal)
                let before = machine.removed
                let (plan, removed) = try await deleteRows(subject, journal: id, postgres: postgres)
                machine.rowsDeleted(plan, removed: removed, now: .now)
                let added = removed.values.enumerated().map { $0.element - before.values[$0.offset] }
                progress(
                    "rows deleted: \(added[0]) conversations, \(added[1]) messages, \(added[2]) contexts, "
                        + "\(added[3]) archived conversations"
                )
                CrashPoint.reached(.erasureRowsDeleted)
            case .removeKeys(let plan, let again):
                let keys = try await ErasureKeys.remove(subject, plan: plan, settings: cache, redis: redis)
                let step: ErasureStep = again ? .keysRemovedAgain : .keysRemoved
                try await record(step, journal: journal, &machine, postgres: postgres) { $0.redisKeys = keys }
                progress(
                    again
                        ? "Redis keys removed again: \(keys)"
                        : "Redis keys removed: \(keys); \(plan.conversations.count) recent lists tombstoned"
                )
                CrashPoint.reached(step.crashPoint)
            case .removeFiles(let plan):
                let root = archiveRoot
                let files = try await postgres.withSession { _ in try ErasureFiles.remove(plan, root: root) }
                try await record(.filesRemoved, journal: journal, &machine, postgres: postgres) {
                    $0.archiveFiles = files
                }
                progress("archive files removed: \(files)")
                CrashPoint.reached(.erasureFilesRemoved)
            case .wait(let until):
                try await Task.sleep(until: until, clock: .continuous)
            case .removeDeadLetters:
                let letters = try await DeadLetterErasure.remove(
                    match,
                    stream: dlqStream,
                    batchBytes: batchBytes,
                    firstEntryBytes: maxContentBytes,
                    dryRun: false,
                    redis: redis
                )
                try await record(.deadLettersRemoved, journal: journal, &machine, postgres: postgres) {
                    $0.deadLetters = letters
                }
                progress("dead letters removed: \(letters)")
                CrashPoint.reached(.erasureDeadLettersRemoved)
            case .close:
                let row = try journalID(journal)
                let closed = try await postgres.withSession { try ErasureJournal.close(row, in: $0) }
                machine.closed()
                logger.info(
                    "erasure finished",
                    metadata: [
                        "erasure.id": "\(row)", "erasure.scope": "\(subject.scope.rawValue)",
                        "erasure.removed": "\(machine.removed.summary)",
                    ]
                )
                return ErasureReport(
                    erasureID: row,
                    scope: subject.scope,
                    subjectSHA256: subject.sha256,
                    dryRun: false,
                    resumed: machine.resumedAfter != nil,
                    startedAt: closed.startedAt,
                    finishedAt: closed.finishedAt,
                    removed: machine.removed
                )
            case .done:
                throw HistorianError(.unexpectedReply, "the erasure ended without closing its journal row")
            }
        }
    }

    private func journalID(_ journal: ErasureJournal.Row?) throws -> Int64 {
        guard let journal else { throw HistorianError(.unexpectedReply, "an erasure step came before its journal row") }
        return journal.id
    }

    /// Records a step done, with what it removed, and tells the machine.
    private func record(
        _ step: ErasureStep,
        journal: ErasureJournal.Row?,
        _ machine: inout ErasureStateMachine,
        postgres: PostgresConnection,
        _ set: (inout ErasureCounts) -> Void
    ) async throws {
        let id = try journalID(journal)
        var removed = ErasureCounts()
        set(&removed)
        let counts = removed
        let total = try await postgres.withSession {
            try ErasureJournal.recordStep(id, step: step, removed: counts, in: $0)
        }
        machine.recorded(step, removed: total)
    }

    /// The rows' transaction, tried again when PostgreSQL aborted it for a deadlock or another
    /// transient reason the connection survives.
    private func deleteRows(
        _ subject: ErasureSubject,
        journal: Int64,
        postgres: PostgresConnection
    ) async throws -> (plan: ErasurePlan, removed: ErasureCounts) {
        let backoff = Backoff(base: .milliseconds(50), cap: .seconds(2))
        var attempt = 1
        while true {
            do {
                return try await postgres.withSession { try ErasureRows.delete(subject, journal: journal, in: $0) }
            } catch let error as PostgresError
                where error.code == .server && error.isTransient && attempt < Self.rowAttempts
            {
                logger.notice(
                    "erasure: deleting the rows failed; trying again",
                    metadata: ["erasure.id": "\(journal)", "error": "\(error)"]
                )
                try await Task.sleep(for: backoff.delay(attempt: attempt))
                attempt += 1
            }
        }
    }

    /// What an erasure would remove now, from every place, writing nothing.
    private func preview(
        _ subject: ErasureSubject,
        postgres: PostgresConnection,
        redis: RedisConnection,
        progress: @Sendable (String) -> Void
    ) async throws -> ErasureReport {
        let (plan, rows) = try await postgres.withSession { try ErasureRows.preview(subject, in: $0) }
        var counts = rows
        progress(
            "would delete rows: \(rows.conversations) conversations, \(rows.messages) messages, "
                + "\(rows.contexts) contexts, \(rows.archivedConversations) archived conversations"
        )
        counts.redisKeys = try await ErasureKeys.existing(subject, plan: plan, settings: cache, redis: redis)
        progress("would remove Redis keys: \(counts.redisKeys)")
        let root = archiveRoot
        counts.archiveFiles = try await postgres.withSession { _ in ErasureFiles.present(plan, root: root).count }
        progress("would remove archive files: \(counts.archiveFiles)")
        counts.deadLetters = try await DeadLetterErasure.remove(
            DeadLetterMatch(subject: subject),
            stream: dlqStream,
            batchBytes: batchBytes,
            firstEntryBytes: maxContentBytes,
            dryRun: true,
            redis: redis
        )
        progress("would remove dead letters: \(counts.deadLetters)")
        return ErasureReport(
            erasureID: nil,
            scope: subject.scope,
            subjectSHA256: subject.sha256,
            dryRun: true,
            resumed: false,
            startedAt: nil,
            finishedAt: nil,
            removed: counts
        )
    }
}
