import Logging
import PostgresClient
import RedisClient

/// `historian run --dry-run`: reads what is waiting and says, entry by entry, what a run would do.
///
/// It never uses the consumer group to read (so it creates no pending entries), never migrates,
/// and its PostgreSQL session is read-only: nothing anywhere is written.
public struct DryRun: Sendable {
    /// What a run would do with one entry.
    public enum Verdict: Sendable, Hashable {
        /// `archived`: the conversation is archived, and a run restores it first.
        case store(newConversation: Bool, archived: Bool = false)
        case alreadyStored
        case deadLetter(Rejection)
        /// Already handed to a consumer and pending; `run` finishes it (with the verdict above).
        case vanished

        public var label: String {
            switch self {
            case .store: "store"
            case .alreadyStored: "already-stored"
            case .deadLetter: "dead-letter"
            case .vanished: "vanished"
            }
        }
    }

    /// One line of the report.
    public struct Line: Sendable, Hashable {
        public var entry: StreamID
        public var verdict: Verdict
        public var messageID: String?
        public var conversationID: String?
        public var pending: Bool

        public var text: String {
            var text = "\(entry)  \(verdict.label.padding(toLength: 14, withPad: " ", startingAt: 0))"
            if let messageID { text += "  message=\(messageID)" }
            if let conversationID { text += "  conversation=\(conversationID)" }
            switch verdict {
            case .store(let newConversation, _) where newConversation: text += "  (new conversation)"
            case .store(_, let archived) where archived: text += "  (archived conversation: restored first)"
            case .deadLetter(let rejection): text += "  \(rejection.reason): \(rejection.detail)"
            case .vanished: text += "  (deleted from the stream while pending; would be acknowledged)"
            default: break
            }
            if pending { text += "  [pending]" }
            return text
        }
    }

    let settings: IngestSettings
    let endpoints: ServerEndpoints
    let logger: Logger

    public init(configuration: HistorianConfiguration, logger: Logger) throws {
        // It reads the one stream key.
        guard !configuration.isSharded else {
            throw HistorianError(
                .invalidConfiguration,
                "run --dry-run does not work with redis_cluster or stream_shards above 1 yet (see docs/cluster.md)"
            )
        }
        self.settings = IngestSettings(configuration, once: true)
        self.endpoints = try ServerEndpoints(configuration)
        self.logger = logger
    }

    /// Reports what is waiting now; with `follow`, goes on reporting new entries until cancelled.
    /// - Returns: every line reported.
    @discardableResult
    public func run(follow: Bool = false, report: @Sendable (String) -> Void) async throws -> [Line] {
        let redis = try await endpoints.connectRedis(logger: logger)
        defer { redis.close() }
        let postgres = try await endpoints.connectPostgres(logger: logger, applicationName: "historian-dry-run")
        defer { postgres.close() }
        try await postgres.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
        let schema = try await postgres.withSession { try Schema.recordedVersion($0) }
        let tablesExist = schema != nil && schema! >= 1

        let stream = settings.stream
        report("dry run of stream \(stream.stream), group \(stream.group): nothing is written or acknowledged")
        if schema != Schema.currentVersion {
            report("schema: version \(schema.map(String.init) ?? "none") of \(Schema.currentVersion); run would migrate it first")
        }
        let state = try await groupState(redis)
        if !state.streamExists {
            report("stream \(stream.stream) does not exist: nothing is waiting")
        } else if !state.groupExists {
            report("group \(stream.group) does not exist: run would create it and read the stream from the start")
        }

        var simulation = Simulation()
        var lines: [Line] = []
        // Entries are read as a worker reads them, within the batch's bytes as well as its count.
        var budget = settings.readBudget()
        func judge(_ ids: [StreamID], _ entries: [StreamEntry?], pending: Bool) async throws {
            budget.observe(largestEntryBytes: entries.reduce(0) { max($0, $1?.bytes ?? 0) })
            let chunk = try await simulation.judge(
                ids: ids,
                entries: entries,
                pending: pending,
                validator: settings.validator,
                postgres: tablesExist ? postgres : nil
            )
            for line in chunk { report(line.text) }
            lines += chunk
        }

        if state.groupExists {
            var after = "-"
            while true {
                let reply = try await redis.send(
                    [
                        "XPENDING", RedisArgument(stream.stream), RedisArgument(stream.group), RedisArgument(after), "+",
                        RedisArgument(budget.count()),
                    ]
                )
                let ids = (reply.array ?? []).compactMap { $0.array?.first?.string }.compactMap { StreamID($0) }
                if ids.isEmpty { break }
                let entries = try await redis.pipeline(
                    ids.map { ["XRANGE", RedisArgument(stream.stream), RedisArgument($0.description), RedisArgument($0.description)] }
                ) { reply in
                    reply.kind == .array && reply.count > 0 ? try IngestStream.decodeEntry(reply[0]).1 : nil
                }
                try await judge(ids, entries, pending: true)
                after = "(" + ids.last!.description
            }
        }
        var next = state.groupExists ? "(" + state.lastDelivered.description : "-"
        if state.streamExists {
            while true {
                let entries = try await stream.range(redis, from: next, count: budget.count())
                if entries.isEmpty { break }
                try await judge(entries.map(\.id), entries, pending: false)
                next = "(" + entries.last!.id.description
            }
        }
        let counts = Dictionary(grouping: lines, by: \.verdict.label).mapValues(\.count)
        report(
            "summary: \(lines.count) entries: "
                + ["store", "already-stored", "dead-letter", "vanished"].map { "\(counts[$0, default: 0]) \($0)" }
                .joined(separator: ", ")
        )
        guard follow else { return lines }
        var last = lines.last.map { $0.entry.description } ?? (state.groupExists ? state.lastDelivered.description : "0-0")
        while !Task.isCancelled {
            let delivery = try await redis.send(
                ["XREAD", "COUNT", RedisArgument(budget.count()), "BLOCK", "1000", "STREAMS", RedisArgument(stream.stream), RedisArgument(last)],
                timeout: .seconds(10),
                decode: IngestStream.decodeDelivery
            )
            guard let newest = delivery.ids.last else { continue }
            try await judge(delivery.ids, delivery.entries, pending: false)
            last = newest.description
        }
        return lines
    }

    struct GroupState {
        var streamExists = false
        var groupExists = false
        var lastDelivered = StreamID.zero
    }

    private func groupState(_ redis: RedisConnection) async throws -> GroupState {
        var state = GroupState()
        let type = try await redis.send("TYPE", RedisArgument(settings.stream.stream))
        guard type.string == "stream" else { return state }
        state.streamExists = true
        let groups = try await redis.send("XINFO", "GROUPS", RedisArgument(settings.stream.stream))
        for group in groups.array ?? [] {
            let info = group.fieldPairs
            if info["name"]?.string == settings.stream.group {
                state.groupExists = true
                state.lastDelivered = info["last-delivered-id"]?.string.flatMap { StreamID($0) } ?? .zero
            }
        }
        return state
    }

    /// What the dry run has decided so far, so that later entries are judged as if earlier ones
    /// had been stored.
    struct Simulation {
        var stored: [CanonicalUUID: StoredMessage] = [:]
        var owners: [CanonicalUUID: String] = [:]

        mutating func judge(
            ids: [StreamID],
            entries: [StreamEntry?],
            pending: Bool,
            validator: EntryValidator,
            postgres: PostgresConnection?
        ) async throws -> [Line] {
            var lines: [Line] = []
            var valid: [(Int, IncomingMessage)] = []
            for (index, (id, entry)) in zip(ids, entries).enumerated() {
                guard let entry else {
                    lines.append(Line(entry: id, verdict: .vanished, pending: pending))
                    continue
                }
                switch validator.validate(entry) {
                case .success(let message):
                    valid.append((index, message))
                    lines.append(Line(entry: id, verdict: .alreadyStored, messageID: message.id.text, conversationID: message.conversationID.text, pending: pending))
                case .failure(let rejection):
                    lines.append(Line(entry: id, verdict: .deadLetter(rejection), messageID: nil, conversationID: nil, pending: pending))
                }
            }
            let messages = valid.map(\.1)
            var existing: [CanonicalUUID: StoredMessage] = [:]
            var databaseOwners: [CanonicalUUID: String] = [:]
            var archivedOwners: [CanonicalUUID: String] = [:]
            if let postgres, !messages.isEmpty {
                (existing, databaseOwners, archivedOwners) = try await postgres.withSession { session in
                    (
                        try StoreJudgement.existing(ids: messages.map(\.id), in: session),
                        try StoreJudgement.owners(of: messages.map(\.conversationID), in: session),
                        try Archiver.archivedOwners(of: messages.map(\.conversationID), in: session)
                    )
                }
            }
            for (index, message) in valid {
                let archived = databaseOwners[message.conversationID] == nil ? archivedOwners[message.conversationID] : nil
                let owner = databaseOwners[message.conversationID] ?? archived ?? owners[message.conversationID]
                let judged = StoreJudgement.judge(message, existing: existing[message.id] ?? stored[message.id], owner: owner)
                switch judged {
                case nil:
                    lines[index].verdict = .store(newConversation: owner == nil, archived: archived != nil)
                    stored[message.id] = StoredMessage(conversationID: message.conversationID, role: message.role.rawValue, content: message.content)
                    if owner == nil { owners[message.conversationID] = message.userID }
                case .alreadyStored, .stored:
                    lines[index].verdict = .alreadyStored
                case .conflict:
                    lines[index].verdict = .deadLetter(.conflict)
                case .userMismatch:
                    lines[index].verdict = .deadLetter(.userMismatch(message.conversationID))
                }
            }
            return lines
        }
    }
}
