import BlockingThread
import Logging
import PostgresClient
import SQLiteReader

/// `historian import sqlite PATH`: a SQLite conversation store of the tutorial schema into
/// PostgreSQL, through the daemon's own store (docs/sqlite-import.md).
///
/// Messages go in batches of `batch_size` through `MessageStore`, as the daemon's workers store
/// them (`BatchStateMachine` decides units, restores and the isolation of rows PostgreSQL
/// refuses), so titles, owners, contexts and conflicts behave as for messages from the stream.
/// A conversation's row is completed once all of its messages are stored
/// (`ImportedConversations`). Redis is not touched: a recent-history list that is behind is
/// rebuilt by the daemon, from PostgreSQL, when the conversation's next message arrives (its
/// version no longer matches).
///
/// With `dryRun`, everything is read and checked and nothing is written: the PostgreSQL session
/// is read-only, and messages are judged as `historian run --dry-run` judges entries.
public struct SQLiteImport: Sendable {
    /// What an import tells its user while it runs.
    public enum Event: Sendable {
        /// A row that is not imported.
        case problem(ImportProblem)
        /// After each batch.
        case progress(ImportProgress)
    }

    let endpoints: ServerEndpoints
    let mapping: ImportMapping
    let batchSize: Int
    let logger: Logger

    public init(configuration: HistorianConfiguration, logger: Logger) throws {
        self.endpoints = try ServerEndpoints(configuration)
        self.mapping = ImportMapping(
            validator: EntryValidator(limits: ValidationLimits(maxContentBytes: configuration.maxContentBytes))
        )
        self.batchSize = configuration.batchSize
        self.logger = logger
    }

    /// Imports the file at `path`, calling `events` with each problem and after each batch.
    /// Throws when it cannot go on (the file is unreadable or not of the tutorial schema,
    /// PostgreSQL is unreachable); the batches stored until then stay, and running it again
    /// goes on from there.
    public func run(path: String, dryRun: Bool, events: @escaping (Event) -> Void) async throws -> ImportSummary {
        // SQLite's calls block, and so do libpq's: all of them run on a thread of their own.
        let executor = BlockingThreadExecutor(name: "import")
        defer { executor.shutdown() }
        return try await withTaskExecutorPreference(executor) {
            var run = try ImportRun(self, path: path, dryRun: dryRun, events: events)
            defer { run.close() }
            return try await run.run()
        }
    }
}

/// One run of `SQLiteImport`: the file's rows in order, the batch being gathered, and the
/// conversations whose rows are not written yet.
struct ImportRun {
    /// What became of one message.
    enum Verdict {
        case imported
        case alreadyPresent
        case reported(Rejection)
    }

    /// One conversation of the file while its messages go through.
    struct Tally {
        var sqliteID: String
        var conversation: Result<ImportedConversation, Rejection>
        var messages = 0
        var imported = 0
    }

    /// Transient PostgreSQL failures retried before the import gives up (and can be run again).
    static let retries = 8

    let settings: SQLiteImport
    let dryRun: Bool
    let events: (SQLiteImport.Event) -> Void
    let store: TutorialStore
    let started = ContinuousClock.now
    var logger: Logger { settings.logger }

    private var connection: PostgresConnection?
    /// Whether PostgreSQL has Historian's tables (a dry run against an empty database has not).
    private var tablesExist = true
    private var simulation = DryRun.Simulation()
    private var summary = ImportSummary()
    private var totals: (conversations: Int, messages: Int) = (0, 0)

    /// The batch: entries in the file's order, and whose each is.
    private var batch: [StreamEntry] = []
    private var batchRows: [StreamID: (tally: Int, message: String)] = [:]
    /// Conversations whose messages are read, or in the batch, and whose rows are not written.
    private var tallies: [Int: Tally] = [:]
    private var closed: [Int] = []
    private var nextTally = 0

    init(_ settings: SQLiteImport, path: String, dryRun: Bool, events: @escaping (SQLiteImport.Event) -> Void) throws {
        self.settings = settings
        self.dryRun = dryRun
        self.events = events
        self.store = try TutorialStore(path: path)
        summary.dryRun = dryRun
    }

    func close() {
        connection?.close()
    }

    mutating func run() async throws -> ImportSummary {
        totals = try store.counts()
        logger.debug(
            "importing",
            metadata: ["conversations": "\(totals.conversations)", "messages": "\(totals.messages)"]
        )
        if dryRun {
            let schema = try await attempt { try Schema.recordedVersion($0) }
            tablesExist = (schema ?? 0) >= 1
            if !tablesExist { logger.notice("PostgreSQL has no Historian schema yet: every row counts as new") }
        } else {
            // On a connection of its own: the store's statements can be prepared only once the
            // schema has its functions.
            let setup = try await settings.endpoints.connectPostgres(
                logger: logger,
                applicationName: "historian-import"
            )
            defer { setup.close() }
            try await Schema.migrate(setup, logger: logger)
        }

        let rows = try store.conversationsWithMessages()
        var current: (id: SQLiteValue, tally: Int)?
        while let row = try rows.next() {
            if current?.id != row.conversation.id {
                if let current { close(current.tally) }
                current = (row.conversation.id, open(row.conversation))
            }
            if let message = row.message, let current { add(message, to: current.tally) }
            if batch.count >= settings.batchSize || closed.count >= settings.batchSize { try await flush() }
        }
        if let current { close(current.tally) }
        try await flush()
        try reportRowsWithoutConversation()
        summary.elapsed = ContinuousClock.now - started
        events(.progress(progress))
        return summary
    }

    // MARK: Reading

    private mutating func open(_ row: SourceConversation) -> Int {
        let key = nextTally
        nextTally += 1
        let sqliteID = ImportMapping.displayed(ImportMapping.bytes(row.id) ?? [])
        tallies[key] = Tally(sqliteID: sqliteID, conversation: settings.mapping.conversation(row))
        return key
    }

    private mutating func add(_ row: SourceMessage, to key: Int) {
        tallies[key]!.messages += 1
        let tally = tallies[key]!
        // A conversation that failed its checks is reported once, with the count of its messages.
        guard case .success(let conversation) = tally.conversation else { return }
        let messageID = ImportMapping.displayed(ImportMapping.bytes(row.id) ?? [])
        switch settings.mapping.entry(row, in: conversation) {
        case .success(let entry):
            batch.append(entry)
            batchRows[entry.id] = (key, messageID)
        case .failure(let rejection):
            summary.messages.reported += 1
            events(.problem(ImportProblem(conversation: tally.sqliteID, message: messageID, rejection: rejection)))
        }
    }

    /// All of the conversation's rows are read.
    private mutating func close(_ key: Int) {
        let tally = tallies[key]!
        guard case .failure(let rejection) = tally.conversation else {
            closed.append(key)
            return
        }
        tallies[key] = nil
        summary.conversations.reported += 1
        summary.messages.reported += tally.messages
        events(
            .problem(
                ImportProblem(
                    conversation: tally.sqliteID,
                    message: nil,
                    rejection: rejection,
                    messagesLeftOut: tally.messages
                )
            )
        )
    }

    /// Conversations without an ID, and messages whose conversation is not in the file.
    private mutating func reportRowsWithoutConversation() throws {
        let withoutID = try store.conversationsWithoutID()
        if withoutID > 0 {
            summary.conversations.reported += withoutID
            let rows = withoutID == 1 ? "1 row" : "\(withoutID) rows"
            let rejection = Rejection(
                .missingField,
                "id is NULL in \(rows) of conversations, which no message can name"
            )
            events(.problem(ImportProblem(conversation: "NULL", message: nil, rejection: rejection)))
        }
        try store.forEachOrphan { conversation, message in
            summary.messages.reported += 1
            let rejection =
                conversation == .null
                ? Rejection(.missingField, "conversation_id is NULL")
                : Rejection(.missingField, "conversation_id names no row of conversations")
            events(
                .problem(
                    ImportProblem(
                        conversation: conversation == .null
                            ? "NULL" : ImportMapping.displayed(ImportMapping.bytes(conversation) ?? []),
                        message: ImportMapping.displayed(ImportMapping.bytes(message) ?? []),
                        rejection: rejection
                    )
                )
            )
        }
    }

    // MARK: Writing

    /// Stores (or judges) the batch, then writes the rows of the conversations it completed.
    private mutating func flush() async throws {
        if !batch.isEmpty {
            let verdicts = dryRun ? try await judge(batch) : try await store(batch)
            for entry in batch {
                let (key, messageID) = batchRows[entry.id]!
                switch verdicts[entry.id] {
                case .imported:
                    summary.messages.imported += 1
                    tallies[key]!.imported += 1
                case .alreadyPresent:
                    summary.messages.alreadyPresent += 1
                case .reported(let rejection):
                    summary.messages.reported += 1
                    events(
                        .problem(
                            ImportProblem(
                                conversation: tallies[key]!.sqliteID,
                                message: messageID,
                                rejection: rejection
                            )
                        )
                    )
                case nil:
                    throw HistorianError(.unexpectedReply, "a message of the batch was left without an outcome")
                }
            }
            logger.debug("batch done", metadata: ["messages": "\(batch.count)"])
            batch = []
            batchRows = [:]
        }
        if !closed.isEmpty {
            try await finishConversations()
        }
        summary.elapsed = ContinuousClock.now - started
        events(.progress(progress))
    }

    private var progress: ImportProgress {
        ImportProgress(
            conversations: summary.conversations.total,
            conversationsTotal: totals.conversations,
            messages: summary.messages.total,
            messagesTotal: totals.messages,
            elapsed: ContinuousClock.now - started
        )
    }

    /// Stores the batch as a worker does: the state machine's units, restores and isolation of
    /// refused rows, with the cache left out (Redis is not touched).
    private mutating func store(_ entries: [StreamEntry]) async throws -> [StreamID: Verdict] {
        var machine = BatchStateMachine(entries: entries, validator: settings.mapping.validator, cache: .off)
        while true {
            switch machine.nextAction() {
            case .store(let unit):
                do {
                    switch try await attempt({ try MessageStore.store(unit, in: $0) }) {
                    case .stored(let report): machine.unitStored(report.results)
                    case .archived(let conversations): machine.unitFoundArchived(conversations)
                    }
                } catch let error as PostgresError where FailureKind(error) == .rejectedData {
                    machine.unitRejected(detail: IngestWorker.rejectionDetail(error))
                }
            case .restore(let conversations):
                try await attempt { try IngestWorker.restore(conversations, in: $0, metrics: .disabled) }
                machine.restored()
            case .finish:
                machine.finished()
            case .done:
                var verdicts: [StreamID: Verdict] = [:]
                for (id, outcome) in machine.outcomes {
                    switch outcome {
                    case .stored: verdicts[id] = .imported
                    case .alreadyStored: verdicts[id] = .alreadyPresent
                    case .deadLetter(let rejection): verdicts[id] = .reported(rejection)
                    case .vanished: break
                    }
                }
                return verdicts
            case .readSnapshots, .refreshCache:
                throw HistorianError(.unexpectedReply, "an import's batch asked for the cache, which it leaves out")
            }
        }
    }

    /// Judges the batch without writing, as `historian run --dry-run` judges entries.
    private mutating func judge(_ entries: [StreamEntry]) async throws -> [StreamID: Verdict] {
        let postgres = tablesExist ? try await postgres() : nil
        let lines = try await simulation.judge(
            ids: entries.map(\.id),
            entries: entries,
            pending: false,
            validator: settings.mapping.validator,
            postgres: postgres
        )
        // Message IDs never repeat across batches (SQLite's IDs are unique), so what the simulation
        // stored needs no keeping, and a large file's content is not all held. The owners it
        // assumed for new conversations are kept: a conversation's messages span batches.
        simulation.stored = [:]
        var verdicts: [StreamID: Verdict] = [:]
        for line in lines {
            switch line.verdict {
            case .store: verdicts[line.entry] = .imported
            case .alreadyStored: verdicts[line.entry] = .alreadyPresent
            case .deadLetter(let rejection): verdicts[line.entry] = .reported(rejection)
            case .vanished: break
            }
        }
        return verdicts
    }

    /// Writes (or, in a dry run, looks up) the rows of the conversations whose messages are all
    /// through.
    private mutating func finishConversations() async throws {
        let keys = closed
        closed = []
        let conversations = keys.compactMap { try? tallies[$0]!.conversation.get() }
        let found: [CanonicalUUID: ImportedConversations.Found]
        if dryRun {
            found = tablesExist ? try await attempt { try ImportedConversations.read(conversations, in: $0) } : [:]
        } else {
            found = try await attempt { try ImportedConversations.write(conversations, in: $0) }
        }
        for key in keys {
            guard let tally = tallies.removeValue(forKey: key), case .success(let conversation) = tally.conversation
            else { continue }
            let outcome = ImportedConversations.outcome(
                conversation,
                found[conversation.id] ?? .init(),
                messagesImported: tally.imported,
                dryRun: dryRun
            )
            switch outcome {
            case .imported:
                summary.conversations.imported += 1
            case .alreadyPresent:
                summary.conversations.alreadyPresent += 1
            case .reported(let rejection):
                summary.conversations.reported += 1
                events(.problem(ImportProblem(conversation: tally.sqliteID, message: nil, rejection: rejection)))
            }
        }
    }

    // MARK: PostgreSQL

    /// The connection, made again after it broke. For a dry run it is read-only; for an import,
    /// prepared for `MessageStore` as a worker's is.
    private mutating func postgres() async throws -> PostgresConnection {
        if let connection, !connection.isBroken { return connection }
        connection?.close()
        connection = nil
        let made = try await settings.endpoints.connectPostgres(logger: logger, applicationName: "historian-import")
        do {
            if dryRun {
                try await made.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
            } else {
                try await made.withSession { try MessageStore.prepare($0) }
            }
        } catch {
            made.close()
            throw error
        }
        connection = made
        return made
    }

    /// Runs `body` in a session, retrying transient failures (an outage, a deadlock, a
    /// serialization failure) a few times with backoff; whatever it does is safe to do again.
    private mutating func attempt<T: Sendable>(_ body: (PostgresSession) throws -> T) async throws -> T {
        var failures = 0
        while true {
            do {
                return try await postgres().withSession(body)
            } catch let error as PostgresError where error.isTransient && failures < Self.retries {
                failures += 1
                logger.warning(
                    "PostgreSQL failed; retrying",
                    metadata: ["attempt": "\(failures)", "error": "\(error)"]
                )
                try await Task.sleep(for: Backoff().delay(attempt: failures))
            }
        }
    }
}
