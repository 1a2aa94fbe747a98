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

/// How PostgreSQL received one message of a store unit.
public enum StoreResult: Sendable, Hashable {
    case stored
    case alreadyStored
    case conflict
    case userMismatch
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

/// The decisions of one batch, kept apart from the I/O that carries them out.
///
/// The worker asks for the next action, performs it, and reports what happened. Transient
/// failures are the worker's business: it retries the same action, and nothing here changes.
/// Permanent database failures split the failing unit in halves until the one row PostgreSQL
/// refuses is alone, so a single bad row never sinks its batch.
public struct BatchStateMachine: Sendable {
    public enum Action: Sendable, Hashable {
        /// Write these messages in one transaction; every message ID in a unit is distinct.
        case store([IncomingMessage])
        /// Everything is decided: acknowledge and dead-letter.
        case finish(Acknowledgement)
    }

    public let entries: [StreamEntry]
    public private(set) var outcomes: [StreamID: EntryOutcome] = [:]
    private var units: [[IncomingMessage]] = []
    private var stored: [IncomingMessage] = []
    private var alreadyStored: [IncomingMessage] = []

    /// Validates every entry; entries whose fields are `nil` (deleted while pending) vanish, and
    /// entries delivered more than `maxDeliveries` times are poison.
    public init(
        entries: [StreamEntry?],
        ids: [StreamID],
        validator: EntryValidator,
        deliveries: [StreamID: Int] = [:],
        maxDeliveries: Int = .max
    ) {
        precondition(entries.count == ids.count)
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
    }

    public init(entries: [StreamEntry], validator: EntryValidator) {
        self.init(entries: entries, ids: entries.map(\.id), validator: validator)
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
        if let unit = units.first {
            return .store(unit)
        }
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
        return .finish(
            Acknowledgement(acknowledge: acknowledge, deadLetters: deadLetters, stored: stored, alreadyStored: alreadyStored)
        )
    }

    /// The unit that `nextAction()` returned was committed with these results.
    public mutating func unitStored(_ results: [CanonicalUUID: StoreResult]) {
        let unit = units.removeFirst()
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
    }

    /// PostgreSQL refused the unit for a reason that retrying cannot fix.
    public mutating func unitRejected(detail: String) {
        let unit = units.removeFirst()
        if unit.count == 1 {
            outcomes[unit[0].entryID] = .deadLetter(Rejection(.rejectedByDatabase, detail))
            return
        }
        let half = unit.count / 2
        units.insert(contentsOf: [Array(unit[..<half]), Array(unit[half...])], at: 0)
    }
}
