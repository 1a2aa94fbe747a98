import BlockingThread
import Logging
import PostgresClient
import RedisClient
import ServiceLifecycle

/// Settings of the ingest pipeline, taken from the configuration.
public struct IngestSettings: Sendable {
    public var stream: IngestStream
    /// The keys the stream is sharded over (contract §9): `stream` alone, or `<stream>:{i}` for
    /// i < `stream_shards`, each with the consumer group.
    public var shards: [IngestStream]
    public var consumer: String
    public var workers: Int
    public var batchSize: Int
    /// About the most bytes of entries in a batch (see `ReadBudget`).
    public var batchBytes: Int
    public var batchLinger: Duration
    public var validator: EntryValidator
    public var cache: CacheSettings
    public var maxDeliveries: Int
    public var claimIdle: Duration
    /// How often a worker looks for entries left pending by dead consumers.
    public var claimEvery: Duration {
        max(.milliseconds(500), min(claimIdle / 2, .seconds(30)))
    }
    /// Stop when nothing is waiting instead of waiting for more (`run --once`).
    public var once: Bool
    /// How long one read waits for new entries; short, so shutdown is never held up long.
    public var readBlock: Duration = .milliseconds(500)
    /// With several shards, how long a read of one waits after a whole round of them found
    /// nothing: a read can wait on one key only, so the wait is short, and a message on another
    /// shard waits at most a round of these.
    public var shardReadBlock: Duration = .milliseconds(10)

    public init(_ configuration: HistorianConfiguration, once: Bool) {
        stream = IngestStream(stream: configuration.stream, group: configuration.group, dlqStream: configuration.dlqStream)
        shards = StreamShard.streams(of: stream, count: configuration.streamShards)
        consumer = configuration.consumer
        workers = configuration.workers
        batchSize = configuration.batchSize
        batchBytes = configuration.batchBytes
        batchLinger = configuration.batchLinger
        validator = EntryValidator(limits: ValidationLimits(maxContentBytes: configuration.maxContentBytes))
        maxDeliveries = configuration.maxDeliveries
        claimIdle = configuration.claimIdle
        cache = CacheSettings(configuration)
        self.once = once
    }

    /// The consumer name of worker `index`: `<consumer>-<index>`, stable across restarts so a
    /// restarted worker finds its own pending entries.
    public func consumerName(worker index: Int) -> String {
        "\(consumer)-\(index)"
    }

    /// The shards worker `index` reads: every `workers`-th from its index, so that the
    /// process's workers read every shard, each shard one of them; with more workers than
    /// shards, workers share shards (as consumers of its group).
    public func shards(ofWorker index: Int) -> [IngestStream] {
        guard shards.count > 1 else { return shards }
        guard workers <= shards.count else { return [shards[index % shards.count]] }
        return stride(from: index, to: shards.count, by: workers).map { shards[$0] }
    }

    /// A worker's read budget before its first read: it assumes entries as large as the
    /// validator accepts.
    func readBudget() -> ReadBudget {
        ReadBudget(batchSize: batchSize, batchBytes: batchBytes, firstEntryBytes: validator.limits.maxContentBytes)
    }
}

/// One worker: reads batches from the consumer group, stores them, acknowledges them.
///
/// Each worker has its own consumer name and its own Redis and PostgreSQL connections, so
/// workers share nothing but the servers.
struct IngestWorker {
    let index: Int
    let settings: IngestSettings
    /// Shared by the process's workers: whose turn it is to wait for new entries.
    let turn: ReadTurn
    let endpoints: ServerEndpoints
    let connections: WorkerConnections
    let metrics: DaemonMetrics
    let health: DaemonHealth
    /// This worker's reads and stores, as the watchdog and `/healthz` see them.
    let loop: LoopWatch.Loop
    /// Its end stage's calls, likewise.
    let endLoop: LoopWatch.Loop
    /// Where the end stage runs: a thread of its own, where its connections block in place.
    let endExecutor: BlockingThreadExecutor?
    let logger: Logger

    init(
        index: Int,
        settings: IngestSettings,
        turn: ReadTurn,
        endpoints: ServerEndpoints,
        metrics: DaemonMetrics,
        health: DaemonHealth,
        endExecutor: BlockingThreadExecutor? = nil,
        logger: Logger
    ) {
        self.index = index
        self.endpoints = endpoints
        self.endExecutor = endExecutor
        self.settings = settings
        self.turn = turn
        self.metrics = metrics
        self.health = health
        self.loop = health.loops.register("worker-\(index)")
        self.endLoop = health.loops.register("worker-\(index)-end")
        var logger = logger
        logger[metadataKey: "consumer"] = "\(settings.consumerName(worker: index))"
        self.logger = logger
        self.connections = WorkerConnections(endpoints: endpoints, logger: logger)
    }

    func run() async throws {
        defer { connections.close() }
        logger.debug("worker started")
        // Connected before the first read, so that the first batch does not wait for two
        // connections and a fresh PostgreSQL backend's setup.
        do {
            try await attempt(.connect) {
                _ = try await connections.routed()
                _ = try await connections.postgres()
            }
        } catch is ShuttingDown {
            return
        }
        // The end stage: a task of its own, on a thread of its own, with connections of its own.
        // It takes one stored batch at a time, and the loop below hands it the next only once it
        // has ended the last: a batch's end (cache refresh, acknowledgement) overlaps the next
        // batch's read and store, and batches end in the order they were stored, so their cache
        // deltas reach Redis in commit order.
        let (stored, storedInput) = AsyncStream.makeStream(of: StoredBatch.self)
        let (ended, endedInput) = AsyncStream.makeStream(of: Void.self)
        let parts = BatchEnd.Parts(settings: settings, endpoints: endpoints, metrics: metrics, health: health, loop: endLoop, logger: logger)
        do {
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask(executorPreference: endExecutor) {
                    defer { endedInput.finish() }
                    let stage = BatchEnd(parts)
                    defer { stage.close() }
                    for await batch in stored {
                        try await stage.run(batch)
                        endedInput.yield()
                    }
                }
                var endings = ended.makeAsyncIterator()
                var inFlight = false
                do {
                    try await readAndStore { batch in
                        // `nil`: the end stage stopped (it failed); its error ends the group.
                        if inFlight, await endings.next() == nil { return false }
                        storedInput.yield(batch)
                        inFlight = true
                        return true
                    }
                } catch {
                    storedInput.finish()
                    throw error
                }
                storedInput.finish()
                try await group.waitForAll()
            }
        } catch is ShuttingDown {
            logger.notice("shutting down with a batch's end unfinished; its entries stay pending")
        }
        logger.debug("worker stopped")
    }

    /// Reads and stores batches until shutdown (with `once`, until nothing is left), handing
    /// each stored batch to `handOff`; stops when `handOff` returns false.
    ///
    /// With several shards the worker reads them in turn, one batch each, without waiting while
    /// any had entries; after a whole round found none, each read waits `shardReadBlock`.
    private func readAndStore(_ handOff: (StoredBatch) async -> Bool) async throws {
        let shards = settings.shards(ofWorker: index)
        var positions = shards.map { _ in IngestStream.ReadPosition.pending(after: .zero) }
        var budget = settings.readBudget()
        var nextClaim = ContinuousClock.now + settings.claimEvery
        var current = 0
        // Reads in a row that found nothing, over all shards.
        var emptyReads = 0
        while !Task.isShuttingDownGracefully, !Task.isCancelled {
            let shard = shards[current]
            var delivery: IngestStream.Delivery
            do {
                let wait: Duration? =
                    settings.once ? nil
                    : shards.count == 1 ? settings.readBlock
                    : emptyReads >= shards.count ? settings.shardReadBlock : nil
                delivery = try await readBatch(shard, &positions[current], budget: &budget, block: wait, alone: shards.count > 1)
                if ContinuousClock.now >= nextClaim {
                    nextClaim = ContinuousClock.now + settings.claimEvery
                    for shard in shards {
                        let claimed = try await attempt(.claim) {
                            try await shard.claimIdle(
                                try await connections.routed(),
                                consumer: settings.consumerName(worker: index),
                                idle: settings.claimIdle,
                                count: budget.count()
                            )
                        }
                        budget.observe(largestEntryBytes: claimed.largestEntryBytes)
                        if !claimed.isEmpty {
                            logger.notice(
                                "claimed entries left pending by another consumer",
                                metadata: ["entries": "\(claimed.count)", "stream": "\(shard.stream)"]
                            )
                            guard await handOff(try await store(claimed, from: shard)) else { return }
                        }
                    }
                }
            } catch is ShuttingDown {
                return
            }
            current = (current + 1) % shards.count
            if delivery.isEmpty {
                emptyReads += 1
                if settings.once, emptyReads >= shards.count, positions.allSatisfy({ $0 == .new }) { return }
                continue
            }
            emptyReads = 0
            do {
                guard await handOff(try await store(delivery, from: shard)) else { return }
            } catch is ShuttingDown {
                logger.notice("shutting down with a batch unfinished; it stays pending", metadata: ["entries": "\(delivery.count)"])
                return
            }
        }
    }

    /// Reads up to a batch from `shard`: this consumer's own pending entries first (left by an
    /// earlier run), then new entries. A worker of a single stream reads new entries when it is
    /// its turn; one reading shards of its own (`alone`) needs no turn.
    private func readBatch(
        _ shard: IngestStream,
        _ position: inout IngestStream.ReadPosition,
        budget: inout ReadBudget,
        block: Duration?,
        alone: Bool
    ) async throws -> IngestStream.Delivery {
        if case .pending = position {
            let pending = try await attempt(.read) { try await readPending(shard, &position, budget: &budget) }
            if let pending { return pending }
        }
        if alone {
            return try await attempt(.read) {
                try await readNew(shard, try await connections.routed(), budget: &budget, block: block)
            }
        }
        // Waiting for the turn is not waiting for a server: the worker that holds it is, and its
        // own loop says so. So the turn is taken outside the attempts, and while Redis is down
        // only the holder retries; the others wait for the turn.
        return try await turn.withTurn {
            // Shutdown may have begun while this worker waited for its turn.
            guard !Task.isShuttingDownGracefully else { return IngestStream.Delivery() }
            return try await attempt(.read) {
                try await readNew(shard, try await connections.routed(), budget: &budget, block: block)
            }
        }
    }

    /// This consumer's own pending entries after `position`, with their delivery counts; `nil`
    /// (and `position` moved to new entries) once there are none.
    private func readPending(
        _ shard: IngestStream,
        _ position: inout IngestStream.ReadPosition,
        budget: inout ReadBudget
    ) async throws -> IngestStream.Delivery? {
        guard case .pending(let after) = position else { return nil }
        let redis = try await connections.routed()
        let pending = try await shard.read(
            redis,
            consumer: settings.consumerName(worker: index),
            from: position,
            count: budget.count(),
            block: nil
        )
        budget.observe(largestEntryBytes: pending.largestEntryBytes)
        guard let first = pending.ids.first, let last = pending.ids.last, last > after else {
            position = .new
            return nil
        }
        var delivery = pending
        // Redelivered after a crash: count deliveries, so a batch that kills the process every
        // time ends as poison instead of looping forever.
        delivery.deliveries = try await shard.deliveryCounts(
            redis,
            consumer: settings.consumerName(worker: index),
            from: first,
            to: last,
            count: pending.count
        )
        // Moved on only now: an attempt that failed above reads the same entries again.
        position = .pending(after: last)
        return delivery
    }

    /// Reads new entries, waiting up to `block` for the first and then up to `batchLinger`
    /// for a partial batch to fill, as far as the budget allows.
    private func readNew(
        _ shard: IngestStream,
        _ redis: some RoutedRedis,
        budget: inout ReadBudget,
        block: Duration?
    ) async throws -> IngestStream.Delivery {
        let firstCount = budget.count()
        var delivery = try await shard.read(
            redis,
            consumer: settings.consumerName(worker: index),
            from: .new,
            count: firstCount,
            block: block
        )
        var largest = delivery.largestEntryBytes
        var bytes = delivery.bytes
        defer { budget.observe(largestEntryBytes: largest) }
        guard !delivery.isEmpty else { return delivery }
        // A read that returned all it asked for (the budget may have asked for few) can have
        // left more waiting: that is read at once, whatever the linger. After a read that
        // returned less, the batch waits for more only within the linger.
        var full = delivery.count == firstCount
        let deadline = ContinuousClock.now + settings.batchLinger
        while true {
            // The rest of the batch is sized by its own largest entry so far.
            var estimate = budget
            estimate.observe(largestEntryBytes: largest)
            let count = estimate.count(entries: delivery.count, bytes: bytes)
            guard count > 0 else { break }
            let wait: Duration?
            if full {
                wait = nil
            } else {
                let remaining = deadline - ContinuousClock.now
                guard remaining > .zero else { break }
                // Redis blocks in whole milliseconds, so a read waits only while a whole one
                // is left; the last read takes what has arrived without waiting. With the
                // default linger of 1 ms that is the one extra read: it collects the rest of a
                // burst whose first entry woke this worker.
                wait = settings.once || remaining <= .milliseconds(1) ? nil : remaining
            }
            let more = try await shard.read(
                redis,
                consumer: settings.consumerName(worker: index),
                from: .new,
                count: count,
                block: wait
            )
            delivery.ids += more.ids
            delivery.entries += more.entries
            largest = max(largest, more.largestEntryBytes)
            bytes += more.bytes
            full = more.count == count
            if more.isEmpty || (wait == nil && !full) { break }
        }
        return delivery
    }

    /// Stores a batch, isolating rows PostgreSQL refuses, as the state machine's actions say;
    /// returns it with every message's outcome, for the end stage.
    private func store(_ delivery: IngestStream.Delivery, from shard: IngestStream) async throws -> StoredBatch {
        var machine = BatchStateMachine(
            entries: delivery.entries,
            ids: delivery.ids,
            validator: settings.validator,
            deliveries: delivery.deliveries,
            maxDeliveries: settings.maxDeliveries,
            cache: settings.cache.recentSize > 0 ? .listsAndSessions : .sessions
        )
        let started = ContinuousClock.now
        while true {
            switch machine.nextAction() {
            case .store(let unit):
                do {
                    let outcome = try await attempt(.store, rethrowing: { FailureKind($0) == .rejectedData }) {
                        let postgres = try await connections.postgres()
                        return try await postgres.withSession { try MessageStore.store(unit, in: $0) }
                    }
                    switch outcome {
                    case .stored(let report):
                        machine.unitStored(report.results, cacheWrites: report.cacheWrites)
                        if report.path == .checked {
                            logger.debug("unit stored by the checked function", metadata: ["unit.size": "\(unit.count)"])
                        }
                    case .archived(let conversations):
                        machine.unitFoundArchived(conversations)
                    }
                } catch let error as PostgresError {
                    logger.debug(
                        "PostgreSQL refused a unit; isolating the row",
                        metadata: ["unit.size": "\(unit.count)", "sqlstate": "\(error.sqlState ?? "")"]
                    )
                    machine.unitRejected(detail: Self.rejectionDetail(error))
                }
            case .restore(let conversations):
                try await attempt(.store) {
                    let postgres = try await connections.postgres()
                    try await postgres.withSession { [metrics] in try Self.restore(conversations, in: $0, metrics: metrics) }
                }
                machine.restored()
            default:
                return StoredBatch(
                    machine: machine, stream: shard, entries: delivery.count, bytes: delivery.bytes, started: started,
                    stored: .now
                )
            }
        }
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

    /// `retrying`, with this worker's logger, metrics and loop.
    private func attempt<T>(
        _ operation: RetriedOperation,
        rethrowing: (any Error) -> Bool = { _ in false },
        _ body: () async throws -> T
    ) async throws -> T {
        try await retrying(operation, logger: logger, metrics: metrics, loop: loop, rethrowing: rethrowing, body)
    }

    /// What a dead letter says of a refused row: the SQLSTATE and PostgreSQL's message. The
    /// message goes to the dead-letter stream (which holds the entry anyway), never to the log.
    static func rejectionDetail(_ error: PostgresError) -> String {
        var detail = "PostgreSQL refused the row"
        if let state = error.sqlState { detail += " (SQLSTATE \(state))" }
        detail += ": " + error.message
        if let constraint = error.constraint { detail += " [constraint \(constraint)]" }
        return detail
    }
}
