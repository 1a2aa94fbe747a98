/// What became of one stream entry.
public enum EntryOutcome: Sendable, Hashable {
    /// Its message was written by this batch.
    case stored
    /// Its message was already in PostgreSQL, identical: nothing to write.
    case alreadyStored
    /// It goes to the dead-letter stream.
    case deadLetter(Rejection)
    /// The entry was deleted from the stream while pending (trimmed or XDEL'd): nothing to store.
    case vanished
}

/// What a worker must do with a batch once every message has an outcome.
public struct Acknowledgement: Sendable, Hashable {
    /// Entries to XACK: stored, already stored, or vanished.
    public var acknowledge: [StreamID]
    /// Entries to move to the dead-letter stream and acknowledge in the same MULTI/EXEC.
    public var deadLetters: [DeadLetter]
    /// Messages this batch wrote, for the cache refresh.
    public var stored: [IncomingMessage]
    /// Messages that were stored before (a redelivery): their cache update may never have
    /// happened, so the cache is checked against PostgreSQL for their conversations.
    public var alreadyStored: [IncomingMessage]
}

/// An entry bound for the dead-letter stream.
public struct DeadLetter: Sendable, Hashable {
    public var entry: StreamEntry
    public var rejection: Rejection
}

/// What the cache refresh of a batch writes (see `RecentCache.apply`).
public struct CacheRefresh: Sendable, Hashable {
    public var writes: [CacheWrite]
    public var sessions: [SessionTouch]
    /// Entries to acknowledge in the same call, if no conversation's list turns out to be
    /// behind; empty when the acknowledgement is left to `finish`.
    public var acknowledge: [StreamID]
}

/// Which parts of the cache a batch refreshes.
public enum CacheMode: Sendable, Hashable {
    /// None: the batch ends with its acknowledgement (tests of the store alone).
    case off
    /// Sessions only (`recent_size: 0`).
    case sessions
    /// Recent lists and sessions.
    case listsAndSessions
}

/// The decisions of one batch, kept apart from the I/O that carries them out.
///
/// The worker asks for the next action, performs it, and reports what happened. Transient
/// failures are the worker's business: it retries the same action, and nothing here changes.
/// Permanent database failures split the failing unit in halves until the one row PostgreSQL
/// refuses is alone, so a single bad row never sinks its batch.
///
/// Once every message has an outcome, the batch ends in this order, each step an action:
/// 1. `readSnapshots` of the conversations of messages that were stored before (a
///    redelivery): their cache update may never have happened;
/// 2. `refreshCache`: the deltas this batch committed, those snapshots and the sessions, in
///    calls that also acknowledge the done entries when no list was behind;
/// 3. for lists found behind, `readSnapshots` and a `refreshCache` that rebuilds them (and
///    acknowledges nothing);
/// 4. `finish`: the acknowledgement of whatever the cache call did not acknowledge, and the dead
///    letters;
/// 5. `done`, with the whole batch's outcome for metrics and logs.
///
/// This machine alone decides which call acknowledges which entry: an entry is acknowledged
/// only after its message is committed and its conversation's list is fresh (or is being
/// rebuilt from PostgreSQL).
public struct BatchStateMachine: Sendable {
    public enum Action: Sendable, Hashable {
        /// Write these messages in one call; every message ID in a unit is distinct.
        case store([IncomingMessage])
        /// Bring these archived conversations back into PostgreSQL, then store the unit again.
        case restore([CanonicalUUID])
        /// Read these conversations' recent lists from PostgreSQL, as snapshots.
        case readSnapshots([String])
        /// Refresh the cache, and acknowledge `acknowledge` in the same call if nothing is behind.
        case refreshCache(CacheRefresh)
        /// Acknowledge `acknowledge` and move `deadLetters` to the dead-letter stream.
        case finish(Acknowledgement)
        /// Nothing left to do; the batch's whole outcome.
        case done(Acknowledgement)
    }

    private enum Phase: Sendable, Hashable {
        case storing
        case snapshotsBeforeRefresh
        case refreshing
        case rebuildSnapshots([String])
        case rebuilding
        case finishing
        case done
    }

    public let entries: [StreamEntry]
    public private(set) var outcomes: [StreamID: EntryOutcome] = [:]
    private let cache: CacheMode
    private var units: [[IncomingMessage]] = []
    private var stored: [IncomingMessage] = []
    private var alreadyStored: [IncomingMessage] = []
    private var deltas: [CacheWrite] = []
    private var snapshots: [CacheWrite] = []
    private var archivedFound: [CanonicalUUID]?
    private var phase = Phase.storing
    private var acknowledgedByCache = false
    /// The batch's whole outcome, made once every message has one (outcomes change no more).
    private var summary: Acknowledgement?

    /// Validates every entry; entries whose fields are `nil` (deleted while pending) vanish, and
    /// entries delivered more than `maxDeliveries` times are poison.
    public init(
        entries: [StreamEntry?],
        ids: [StreamID],
        validator: EntryValidator,
        deliveries: [StreamID: Int] = [:],
        maxDeliveries: Int = .max,
        cache: CacheMode = .off
    ) {
        precondition(entries.count == ids.count)
        self.cache = cache
        var kept: [StreamEntry] = []
        var valid: [IncomingMessage] = []
        for (entry, id) in zip(entries, ids) {
            guard let entry else {
                outcomes[id] = .vanished
                continue
            }
            kept.append(entry)
            if let count = deliveries[id], count > maxDeliveries {
                outcomes[id] = .deadLetter(
                    Rejection(.poison, "delivered \(count) times without success (max_deliveries is \(maxDeliveries))")
                )
                continue
            }
            switch validator.validate(entry) {
            case .success(let message): valid.append(message)
            case .failure(let rejection): outcomes[id] = .deadLetter(rejection)
            }
        }
        self.entries = kept
        self.units = Self.rounds(valid)
        leaveStoringIfDone()
    }

    public init(entries: [StreamEntry], validator: EntryValidator, cache: CacheMode = .off) {
        self.init(entries: entries, ids: entries.map(\.id), validator: validator, cache: cache)
    }

    /// Splits messages into rounds in which each message ID appears once, keeping arrival order:
    /// a second delivery of an ID within one batch is judged after the first is committed.
    static func rounds(_ messages: [IncomingMessage]) -> [[IncomingMessage]] {
        var rounds: [[IncomingMessage]] = []
        var seen: [CanonicalUUID: Int] = [:]
        for message in messages {
            let round = seen[message.id, default: 0]
            seen[message.id] = round + 1
            if round == rounds.count { rounds.append([]) }
            rounds[round].append(message)
        }
        return rounds
    }

    public func nextAction() -> Action {
        switch phase {
        case .storing:
            if let archived = archivedFound { return .restore(archived) }
            if let unit = units.first { return .store(unit) }
            // Not reached: every event that empties the units moves on (see `leaveStoringIfDone`).
            var next = self
            next.phase = firstEndPhase()
            return next.nextAction()
        case .snapshotsBeforeRefresh:
            return .readSnapshots(Array(Set(alreadyStored.map(\.conversationID.text))).sorted())
        case .refreshing:
            return .refreshCache(
                CacheRefresh(
                    writes: cache == .listsAndSessions ? deltas + snapshots : [],
                    sessions: SessionTouch.latest(of: stored + alreadyStored),
                    acknowledge: acknowledgement().acknowledge
                )
            )
        case .rebuildSnapshots(let conversations):
            return .readSnapshots(conversations)
        case .rebuilding:
            return .refreshCache(CacheRefresh(writes: snapshots, sessions: [], acknowledge: []))
        case .finishing:
            var rest = acknowledgement()
            if acknowledgedByCache { rest.acknowledge = [] }
            return .finish(rest)
        case .done:
            return .done(acknowledgement())
        }
    }

    private func firstEndPhase() -> Phase {
        if cache == .listsAndSessions, !alreadyStored.isEmpty { return .snapshotsBeforeRefresh }
        return refreshOrFinish()
    }

    private func refreshOrFinish() -> Phase {
        guard cache != .off else { return finishOrDone() }
        let refresh = (cache == .listsAndSessions && !(deltas.isEmpty && snapshots.isEmpty)) || (stored + alreadyStored).contains { $0.sessionID != nil }
        return refresh ? .refreshing : finishOrDone()
    }

    private func finishOrDone() -> Phase {
        let ack = acknowledgement()
        return (acknowledgedByCache || ack.acknowledge.isEmpty) && ack.deadLetters.isEmpty ? .done : .finishing
    }

    /// The batch's whole outcome: made once when the store phase ends.
    private func acknowledgement() -> Acknowledgement {
        summary ?? makeAcknowledgement()
    }

    private func makeAcknowledgement() -> Acknowledgement {
        var acknowledge: [StreamID] = []
        var deadLetters: [DeadLetter] = []
        for id in outcomes.keys.sorted() {
            switch outcomes[id]! {
            case .stored, .alreadyStored, .vanished: acknowledge.append(id)
            case .deadLetter: break
            }
        }
        for entry in entries {
            if case .deadLetter(let rejection) = outcomes[entry.id] {
                deadLetters.append(DeadLetter(entry: entry, rejection: rejection))
            }
        }
        return Acknowledgement(acknowledge: acknowledge, deadLetters: deadLetters, stored: stored, alreadyStored: alreadyStored)
    }

    /// Moves past the store phase once its last unit has an outcome.
    private mutating func leaveStoringIfDone() {
        guard phase == .storing, units.isEmpty, archivedFound == nil else { return }
        summary = makeAcknowledgement()
        phase = firstEndPhase()
    }

    /// The unit that `nextAction()` returned was committed with these results, and these cache
    /// deltas.
    public mutating func unitStored(_ results: [CanonicalUUID: StoreResult], cacheWrites: [CacheWrite] = []) {
        let unit = units.removeFirst()
        deltas += cacheWrites
        for message in unit {
            let outcome: EntryOutcome
            switch results[message.id] {
            case .stored:
                outcome = .stored
                stored.append(message)
            case .alreadyStored:
                outcome = .alreadyStored
                alreadyStored.append(message)
            case .conflict:
                outcome = .deadLetter(.conflict)
            case .userMismatch:
                outcome = .deadLetter(.userMismatch(message.conversationID))
            case nil:
                // The store must report every message; one it did not is retried, never dropped.
                units.insert([message], at: 0)
                continue
            }
            outcomes[message.entryID] = outcome
        }
        leaveStoringIfDone()
    }

    /// PostgreSQL refused the unit for a reason that retrying cannot fix.
    public mutating func unitRejected(detail: String) {
        let unit = units.removeFirst()
        if unit.count == 1 {
            outcomes[unit[0].entryID] = .deadLetter(Rejection(.rejectedByDatabase, detail))
        } else {
            let half = unit.count / 2
            units.insert(contentsOf: [Array(unit[..<half]), Array(unit[half...])], at: 0)
        }
        leaveStoringIfDone()
    }

    /// The unit's conversations are archived; nothing of it was written.
    public mutating func unitFoundArchived(_ conversations: [CanonicalUUID]) {
        archivedFound = conversations
    }

    /// The conversations of `restore` are back; the unit is stored again.
    public mutating func restored() {
        archivedFound = nil
    }

    /// The snapshots that `readSnapshots` asked for.
    public mutating func snapshotsRead(_ writes: [CacheWrite]) {
        switch phase {
        case .snapshotsBeforeRefresh:
            snapshots = writes
            phase = refreshOrFinish()
        case .rebuildSnapshots:
            snapshots = writes
            phase = writes.isEmpty ? finishOrDone() : .rebuilding
        default:
            break
        }
    }

    /// The cache call of `refreshCache` is done: whether it acknowledged its entries, and the
    /// conversations whose lists it found behind.
    public mutating func cacheRefreshed(acknowledged: Bool, stale: [String]) {
        switch phase {
        case .refreshing:
            acknowledgedByCache = acknowledged
            phase = stale.isEmpty ? finishOrDone() : .rebuildSnapshots(stale)
        case .rebuilding:
            // A list still behind after its rebuild was written meanwhile by a newer commit,
            // whose own refresh brings it up to date.
            phase = finishOrDone()
        default:
            break
        }
    }

    /// The acknowledgement and dead letters of `finish` are written.
    public mutating func finished() {
        if phase == .finishing { phase = .done }
    }
}
