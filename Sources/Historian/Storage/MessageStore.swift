import PostgresClient

/// How PostgreSQL received one message of a store unit.
public enum StoreResult: Sendable, Hashable {
    case stored
    case alreadyStored
    case conflict
    case userMismatch
}

/// Writes units of messages to PostgreSQL: one call of a server-side function each (see
/// `StoreFunctions`), which is one statement, one round trip and one transaction.
///
/// The usual unit (new messages, each from its conversation's owner) takes
/// `historian_store_new`; a unit it turns away, or one that mixes users in a conversation,
/// takes `historian_store_checked`, which takes any unit. Both leave the same rows and give
/// the same report.
public enum MessageStore {
    /// What became of a unit.
    public enum Outcome: Sendable {
        case stored(Report)
        /// Conversations of the unit are archived; nothing was written. They are restored
        /// (`Archiver.restore`) before the unit is stored again.
        case archived([CanonicalUUID])
    }

    /// What one call did: each message's result, and the cache changes it made.
    public struct Report: Sendable {
        /// Every message that was written or judged; one without a result was neither (its
        /// conversation went away, or another writer stored it meanwhile) and is retried.
        public var results: [CanonicalUUID: StoreResult] = [:]
        /// One delta per conversation the call added messages to.
        public var cacheWrites: [CacheWrite] = []
        /// Which function wrote the unit.
        public var path: Path
    }

    public enum Path: Sendable, Hashable {
        case new
        case checked
    }

    static let callNew = PreparedStatement(
        "historian_store_new",
        "SELECT kind, key::text, number::text, body FROM historian_store_new("
            + (1...19).map { "$\($0)" }.joined(separator: ", ") + ")"
    )

    static let callChecked = PreparedStatement(
        "historian_store_checked",
        "SELECT kind, key::text, number::text, body FROM historian_store_checked("
            + (1...16).map { "$\($0)" }.joined(separator: ", ") + ")"
    )

    /// Prepares a fresh connection for `store`: the calls are parsed now, so that the first
    /// batch does not wait for them (and a schema they do not fit fails at startup).
    ///
    /// The connection's other statements are planned on every call: their arrays of IDs differ
    /// in length from batch to batch, and a generic plan chosen while the tables were small (a
    /// sequential scan of `messages`) would stay in use as they grow. (The functions' own
    /// statements are planned once; see `StoreFunctions`.)
    ///
    /// They look rows up by key, and the rows they touch (conversations with recent messages,
    /// messages just written) are in memory. With the default `random_page_cost` of 4, priced
    /// for disks that seek, PostgreSQL read and hashed every conversation to lock or update the
    /// few hundred a batch touched: twice the time of the index lookups.
    public static func prepare(_ session: PostgresSession) throws {
        try session.execute("SET plan_cache_mode = force_custom_plan")
        try session.execute("SET random_page_cost = 1.1")
        try session.prepare(callNew)
        try session.prepare(callChecked)
    }

    /// Stores one unit (every message ID in it distinct). The caller has run `prepare` on
    /// this connection.
    public static func store(_ unit: [IncomingMessage], in session: PostgresSession) throws -> Outcome {
        let touches = ConversationTouch.of(unit).sorted { $0.conversationID < $1.conversationID }
        if touches.allSatisfy(\.oneUser), let outcome = try storeNew(unit, touches, in: session) {
            return outcome
        }
        return try storeChecked(unit, in: session)
    }

    /// `historian_store_new`; `nil` when it turned the unit away.
    static func storeNew(_ unit: [IncomingMessage], _ touches: [ConversationTouch], in session: PostgresSession) throws -> Outcome? {
        do {
            return try outcome(of: session.query(callNew, parameters: newParameters(unit, touches)), unit, path: .new)
        } catch let error as PostgresError where Self.needsCheckedFunction(error) {
            return nil
        }
    }

    /// Whether `historian_store_new` failed in a way that the checked function deals with (its
    /// failure rolled everything back): a message that is stored already (a redelivery), a
    /// conversation another writer created meanwhile for another user, or one archived before
    /// the foreign-key check could lock it (the checked function locks first).
    static func needsCheckedFunction(_ error: PostgresError) -> Bool {
        error.isUniqueViolation || error.isForeignKeyViolation || error.sqlState == StoreFunctions.createdMeanwhile
    }

    /// `historian_store_checked`, which takes any unit; the messages it did not insert are then
    /// judged against what is stored (`StoreJudgement`, the dry run's rule). A message neither
    /// inserted nor judged (new, yet its conversation went away, or another writer stored it
    /// after the read) gets no result and is retried.
    static func storeChecked(_ unit: [IncomingMessage], in session: PostgresSession) throws -> Outcome {
        let conversations = Set(unit.map(\.conversationID)).sorted()
        let rows = try session.query(callChecked, parameters: checkedParameters(unit, conversations))
        guard let outcome = try outcome(of: rows, unit, path: .checked) else {
            throw HistorianError(.unexpectedReply, "historian_store_checked turned a unit away")
        }
        guard case .stored(var report) = outcome else { return outcome }
        let rest = unit.filter { report.results[$0.id] == nil }
        if !rest.isEmpty {
            // Stored messages never change, nor do owners: judged after the call's commit, they
            // are judged as the call saw them, or found stored by another writer meanwhile.
            for (id, judged) in try StoreJudgement.judge(rest, in: session) {
                if let judged { report.results[id] = judged }
            }
        }
        return .stored(report)
    }

    /// The columns both functions take first, one array each, in the unit's order.
    static func messageColumns(_ unit: [IncomingMessage]) -> [PostgresParameter] {
        [
            .binary(PostgresBinary.uuidArray(unit.map(\.id.value))),
            .binary(PostgresBinary.uuidArray(unit.map(\.conversationID.value))),
            .binary(PostgresBinary.textArray(unit.map(\.role.rawValue))),
            .binary(PostgresBinary.textArray(unit.map(\.content))),
            .binary(PostgresBinary.int4Array(unit.map(\.tokensUsed))),
            .binary(PostgresBinary.int4Array(unit.map(\.latencyMs))),
            .binary(PostgresBinary.timestamptzArray(unit.map(\.createdAt.microseconds))),
            .binary(PostgresBinary.jsonbArray(unit.map(\.metadata))),
            .binary(PostgresBinary.textArray(unit.map(\.sessionID))),
            .binary(PostgresBinary.textArray(unit.map(\.entryID.description))),
        ]
    }

    static func newParameters(_ unit: [IncomingMessage], _ touches: [ConversationTouch]) -> [PostgresParameter] {
        let withContexts = unit.filter { $0.contexts != nil }
        return messageColumns(unit) + [
            .binary(PostgresBinary.uuidArray(withContexts.map(\.id.value))),
            .binary(PostgresBinary.jsonbArray(withContexts.map(\.contexts))),
            .binary(PostgresBinary.uuidArray(touches.map(\.conversationID.value))),
            .binary(PostgresBinary.textArray(touches.map(\.owner))),
            .binary(PostgresBinary.textArray(touches.map(\.deptID))),
            .binary(PostgresBinary.timestamptzArray(touches.map(\.firstAt.microseconds))),
            .binary(PostgresBinary.textArray(touches.map(\.explicitTitle))),
            .binary(PostgresBinary.textArray(touches.map(\.derivedTitle))),
            .binary(PostgresBinary.timestamptzArray(touches.map { $0.derivedAt?.microseconds })),
        ]
    }

    static func checkedParameters(_ unit: [IncomingMessage], _ conversations: [CanonicalUUID]) -> [PostgresParameter] {
        messageColumns(unit) + [
            .binary(PostgresBinary.textArray(unit.map(\.userID))),
            .binary(PostgresBinary.textArray(unit.map(\.deptID))),
            .binary(PostgresBinary.textArray(unit.map(\.title))),
            .binary(PostgresBinary.textArray(unit.map(\.derivedTitle))),
            .binary(PostgresBinary.jsonbArray(unit.map(\.contexts))),
            .binary(PostgresBinary.uuidArray(conversations.map(\.value))),
        ]
    }

    /// The outcome in a function's rows (see `StoreFunctions`); `nil` when the unit was turned
    /// away for the checked function.
    ///
    /// The cache elements are built here, in the order `RecentCache.snapshots` reads them back
    /// (`created_at`, then arrival, which is the unit's order), from the messages and their
    /// metadata as PostgreSQL prints it.
    static func outcome(of rows: PostgresRows, _ unit: [IncomingMessage], path: Path) throws -> Outcome? {
        var versions: [CanonicalUUID: Int64] = [:]
        var metadata = [String?](repeating: nil, count: unit.count)
        var notInserted: Set<CanonicalUUID> = []
        var archived: [CanonicalUUID] = []
        for row in rows.rows {
            switch row[0] {
            case "v":
                guard let conversation = row[1].flatMap(CanonicalUUID.init), let version = row[2].flatMap({ Int64($0) }) else {
                    throw HistorianError(.unexpectedReply, "a conversation version row without its values")
                }
                versions[conversation] = version
            case "m":
                guard let position = row[2].flatMap({ Int($0) }), unit.indices.contains(position - 1), let text = row[3] else {
                    throw HistorianError(.unexpectedReply, "a metadata row without its values")
                }
                metadata[position - 1] = text
            case "j":
                guard let id = row[1].flatMap(CanonicalUUID.init) else {
                    throw HistorianError(.unexpectedReply, "a row of a message not inserted, without its ID")
                }
                notInserted.insert(id)
            case "a":
                if let conversation = row[1].flatMap(CanonicalUUID.init) { archived.append(conversation) }
            case "c":
                return nil
            default:
                throw HistorianError(.unexpectedReply, "an unknown row kind from the store function")
            }
        }
        if !archived.isEmpty { return .archived(archived.sorted()) }

        var report = Report(path: path)
        report.results.reserveCapacity(unit.count)
        var stored: [Int] = []
        stored.reserveCapacity(unit.count)
        for (index, message) in unit.enumerated() {
            if notInserted.contains(message.id) { continue }
            if message.metadata != nil, metadata[index] == nil {
                throw HistorianError(.unexpectedReply, "the store function returned no metadata for a stored message")
            }
            report.results[message.id] = .stored
            stored.append(index)
        }
        stored.sort { a, b in
            if unit[a].conversationID != unit[b].conversationID { return unit[a].conversationID < unit[b].conversationID }
            return (unit[a].createdAt, a) < (unit[b].createdAt, b)
        }
        var conversation: CanonicalUUID?
        for index in stored {
            let message = unit[index]
            if message.conversationID != conversation {
                conversation = message.conversationID
                guard let version = versions[message.conversationID] else {
                    throw HistorianError(.unexpectedReply, "the store function did not return conversation \(message.conversationID.text)")
                }
                report.cacheWrites.append(CacheWrite(mode: .delta, conversationID: message.conversationID.text, version: version, elements: []))
            }
            report.cacheWrites[report.cacheWrites.count - 1].elements.append(RecentCache.element(of: message, metadata: metadata[index]))
        }
        return .stored(report)
    }
}
