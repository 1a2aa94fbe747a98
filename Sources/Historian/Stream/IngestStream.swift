import RedisClient

/// The Redis side of ingest: the consumer group, reading, acknowledging and dead-lettering.
///
/// Every call is one round trip; a batch's acknowledgements and dead letters go in one pipeline.
public struct IngestStream: Sendable {
    public var stream: String
    public var group: String
    public var dlqStream: String

    public init(stream: String, group: String, dlqStream: String) {
        self.stream = stream
        self.group = group
        self.dlqStream = dlqStream
    }

    /// Creates the consumer group at the start of the stream (and the stream) if missing.
    /// - Returns: whether it was created now.
    @discardableResult
    public func ensureGroup(_ redis: some RoutedRedis) async throws -> Bool {
        do {
            _ = try await redis.send(["XGROUP", "CREATE", RedisArgument(stream), RedisArgument(group), "0", "MKSTREAM"], key: key)
            return true
        } catch let error as RedisError where error.serverErrorPrefix == "BUSYGROUP" {
            return false
        }
    }

    /// The group's backlog, as `XINFO GROUPS` reports it.
    public struct GroupState: Sendable, Equatable {
        /// Entries in the stream not yet delivered to the group; `nil` when Redis cannot tell
        /// (entries were deleted inside the range it would count).
        public var lag: Int?
        /// Entries delivered to the group's consumers and not yet acknowledged.
        public var pending: Int
        public var consumers: Int
        /// The ID of the last entry delivered to the group.
        public var lastDelivered: String?
    }

    /// The group's lag and pending entries; `nil` while the stream or the group does not exist.
    public func groupState(_ redis: some RoutedRedis) async throws -> GroupState? {
        let groups: RESPValue
        do {
            groups = try await redis.send(["XINFO", "GROUPS", RedisArgument(stream)], key: key)
        } catch let error as RedisError where error.serverErrorPrefix == "ERR" {
            // "ERR no such key": the stream does not exist yet.
            return nil
        }
        guard let fields = (groups.array ?? []).map(\.fieldPairs).first(where: { $0["name"]?.string == group }) else {
            return nil
        }
        return GroupState(
            lag: fields["lag"]?.int.map(Int.init),
            pending: Int(fields["pending"]?.int ?? 0),
            consumers: Int(fields["consumers"]?.int ?? 0),
            lastDelivered: fields["last-delivered-id"]?.string
        )
    }

    /// Where a read starts: this consumer's own pending entries after an ID, or new entries.
    public enum ReadPosition: Sendable, Hashable {
        case pending(after: StreamID)
        case new
    }

    /// Entries delivered to `consumer`: the IDs, and the fields (`nil` for an entry deleted while
    /// pending).
    public struct Delivery: Sendable {
        public var ids: [StreamID] = []
        public var entries: [StreamEntry?] = []
        /// How often each entry has been delivered, where known (pending and claimed entries).
        public var deliveries: [StreamID: Int] = [:]
        public var isEmpty: Bool { ids.isEmpty }
        public var count: Int { ids.count }
        /// The entries' size: the bytes of their field names and values.
        public var bytes: Int { entries.reduce(0) { $0 + ($1?.bytes ?? 0) } }
        /// The size of the largest entry.
        public var largestEntryBytes: Int { entries.reduce(0) { max($0, $1?.bytes ?? 0) } }
    }

    /// `XREADGROUP`; `block` is how long to wait for new entries (`nil`: return at once).
    public func read(
        _ redis: some RoutedRedis,
        consumer: String,
        from position: ReadPosition,
        count: Int,
        block: Duration?
    ) async throws -> Delivery {
        var arguments: [RedisArgument] = [
            "XREADGROUP", "GROUP", RedisArgument(group), RedisArgument(consumer), "COUNT", RedisArgument(count),
        ]
        var timeout: Duration?
        if let block, case .new = position {
            let milliseconds = max(1, Int(block.wholeMilliseconds))
            arguments += ["BLOCK", RedisArgument(milliseconds)]
            timeout = block + .seconds(5)
        }
        arguments += ["STREAMS", RedisArgument(stream)]
        switch position {
        case .pending(let after): arguments.append(RedisArgument(after.description))
        case .new: arguments.append(">")
        }
        return try await redis.send(arguments, key: key, timeout: timeout, decode: Self.decodeDelivery)
    }

    /// Decodes `[[stream, [[id, [field, value, …] | nil], …]]]` (XREADGROUP, XREAD) in place.
    package static func decodeDelivery(_ reply: RedisReplyView) throws -> Delivery {
        var delivery = Delivery()
        switch reply.kind {
        case .null: return delivery
        case .array: break
        default: throw HistorianError(.unexpectedReply, "XREADGROUP returned an unexpected reply")
        }
        for streamIndex in 0..<reply.count {
            guard let pair = reply[streamIndex], pair.count == 2, let items = pair[1], items.kind == .array else {
                throw HistorianError(.unexpectedReply, "XREADGROUP returned an unexpected stream element")
            }
            delivery.ids.reserveCapacity(delivery.ids.count + items.count)
            delivery.entries.reserveCapacity(delivery.entries.count + items.count)
            for index in 0..<items.count {
                let (id, entry) = try decodeEntry(items[index])
                delivery.ids.append(id)
                delivery.entries.append(entry)
            }
        }
        return delivery
    }

    /// Decodes the entries of an XRANGE or XCLAIM reply, `[[id, [field, value, …] | nil], …]`.
    package static func decodeEntries(_ reply: RedisReplyView) throws -> [(StreamID, StreamEntry?)] {
        try (0..<reply.count).map { try decodeEntry(reply[$0]) }
    }

    /// Decodes one `[id, [field, value, …] | nil]` element of XRANGE/XREADGROUP/XCLAIM replies.
    /// The usual field names are shared rather than copied for every entry.
    static func decodeEntry(_ item: RedisReplyView?) throws -> (StreamID, StreamEntry?) {
        guard let item, item.count == 2, let idView = item[0], let id = idView.withBytes({ StreamID(ascii: $0) }) else {
            throw HistorianError(.unexpectedReply, "a stream entry had an unexpected shape")
        }
        guard let flat = item[1], flat.kind == .array else { return (id, nil) }
        var fields: [StreamEntry.Field] = []
        fields.reserveCapacity(flat.count / 2)
        var index = 0
        while index + 1 < flat.count {
            let name = flat[index]?.withBytes { StreamEntry.Field.name(copying: $0) } ?? []
            let value = flat[index + 1]?.withBytes { Array($0) } ?? []
            fields.append(StreamEntry.Field(name: name, value: value))
            index += 2
        }
        return (id, StreamEntry(id: id, fields: fields))
    }

    /// Delivery counts of a consumer's pending entries between two IDs (inclusive).
    public func deliveryCounts(
        _ redis: some RoutedRedis,
        consumer: String,
        from first: StreamID,
        to last: StreamID,
        count: Int
    ) async throws -> [StreamID: Int] {
        let reply = try await redis.send(
            [
                "XPENDING", RedisArgument(stream), RedisArgument(group), RedisArgument(first.description),
                RedisArgument(last.description), RedisArgument(count), RedisArgument(consumer),
            ],
            key: key
        )
        return Self.decodePendingCounts(reply)
    }

    /// `[[id, consumer, idle, deliveries], …]` as deliveries by ID.
    package static func decodePendingCounts(_ reply: RESPValue) -> [StreamID: Int] {
        var counts: [StreamID: Int] = [:]
        for item in reply.array ?? [] {
            guard let fields = item.array, fields.count >= 4, let id = fields[0].string.flatMap({ StreamID($0) }),
                let count = fields[3].int
            else { continue }
            counts[id] = Int(count)
        }
        return counts
    }

    /// Takes over entries that have been pending, with any consumer, for at least `idle`:
    /// the work of consumers that died. `XPENDING … IDLE` finds them with their delivery counts,
    /// and `XCLAIM` with the same minimum idle time takes only those still idle, so two
    /// claimers never both get an entry.
    public func claimIdle(
        _ redis: some RoutedRedis,
        consumer: String,
        idle: Duration,
        count: Int
    ) async throws -> Delivery {
        let milliseconds = RedisArgument(String(idle.wholeMilliseconds))
        let pending = try await redis.send(
            ["XPENDING", RedisArgument(stream), RedisArgument(group), "IDLE", milliseconds, "-", "+", RedisArgument(count)],
            key: key
        )
        let counts = Self.decodePendingCounts(pending)
        guard !counts.isEmpty else { return Delivery() }
        let ids = counts.keys.sorted()
        let claimed = try await redis.send(
            ["XCLAIM", RedisArgument(stream), RedisArgument(group), RedisArgument(consumer), milliseconds]
                + ids.map { RedisArgument($0.description) },
            key: key,
            decode: Self.decodeEntries
        )
        var delivery = Delivery()
        for (id, entry) in claimed {
            delivery.ids.append(id)
            delivery.entries.append(entry)
            // XCLAIM counted one more delivery.
            delivery.deliveries[id] = (counts[id] ?? 0) + 1
        }
        return delivery
    }

    /// Entries from `start` (inclusive) on, without the consumer group; for the dry run.
    public func range(_ redis: some RoutedRedis, from start: String, count: Int) async throws -> [StreamEntry] {
        try await redis.send(
            ["XRANGE", RedisArgument(stream), RedisArgument(start), "+", "COUNT", RedisArgument(count)],
            key: key,
            decode: Self.decodeEntries
        )
        .compactMap(\.1)
    }

    /// Acknowledges a finished batch: one XACK for the done entries, and for each dead letter a
    /// MULTI/EXEC that adds it to the dead-letter stream and acknowledges it together.
    ///
    /// On a cluster the dead-letter stream and this stream are in different slots, where no
    /// transaction spans them: there the caller adds the dead letters (`addDeadLetters`) and
    /// then acknowledges everything (`acknowledge`), each retried on its own.
    public func finish(_ redis: some RoutedRedis, _ acknowledgement: Acknowledgement, at time: Timestamp) async throws {
        guard !redis.isCluster else {
            throw HistorianError(.invalidConfiguration, "a dead letter and its acknowledgement span two slots on a cluster")
        }
        var commands: [[RedisArgument]] = []
        if !acknowledgement.acknowledge.isEmpty {
            commands.append(
                ["XACK", RedisArgument(stream), RedisArgument(group)]
                    + acknowledgement.acknowledge.map { RedisArgument($0.description) }
            )
        }
        for letter in acknowledgement.deadLetters {
            commands.append(["MULTI"])
            commands.append(deadLetterCommand(letter, at: time))
            commands.append(["XACK", RedisArgument(stream), RedisArgument(group), RedisArgument(letter.entry.id.description)])
            commands.append(["EXEC"])
        }
        guard !commands.isEmpty else { return }
        let key = self.key
        try Self.check(try await redis.pipeline(commands.map { (key: key, command: $0) }))
    }

    /// A batch's dead letters added to the dead-letter stream, without acknowledging them: the
    /// first step of `finish` on a cluster. Until the second, a crash leaves the entries
    /// pending, and their redelivery adds them a second time (the same `dlq_source_id`): never
    /// a loss.
    public func addDeadLetters(_ redis: some RoutedRedis, _ letters: [DeadLetter], at time: Timestamp) async throws {
        guard !letters.isEmpty else { return }
        let dlq = RedisArgument(dlqStream)
        try Self.check(try await redis.pipeline(letters.map { (key: dlq, command: deadLetterCommand($0, at: time)) }))
    }

    /// One XACK of every entry the acknowledgement names, dead letters included: the second
    /// step of `finish` on a cluster, once the dead letters are in their stream.
    public func acknowledge(_ redis: some RoutedRedis, _ acknowledgement: Acknowledgement) async throws {
        let ids = acknowledgement.acknowledge + acknowledgement.deadLetters.map(\.entry.id)
        guard !ids.isEmpty else { return }
        _ = try await redis.send(
            ["XACK", RedisArgument(stream), RedisArgument(group)] + ids.map { RedisArgument($0.description) },
            key: key
        )
    }

    /// Throws the first error reply, at the top level or inside an `EXEC`'s reply.
    private static func check(_ replies: [RESPValue]) throws {
        for reply in replies {
            if case .error(let message) = reply {
                throw RedisError(code: .server, message: message)
            }
            if let inner = reply.array {
                for case .error(let message) in inner {
                    throw RedisError(code: .server, message: message)
                }
            }
        }
    }

    /// The stream's key, where its commands are routed.
    var key: RedisArgument { RedisArgument(stream) }

    /// `XADD <dlq> * <original fields…> dlq_reason … dlq_at …`.
    func deadLetterCommand(_ letter: DeadLetter, at time: Timestamp) -> [RedisArgument] {
        var command: [RedisArgument] = ["XADD", RedisArgument(dlqStream), "*"]
        let prefix = Array("dlq_".utf8)
        for field in letter.entry.fields where !field.name.starts(with: prefix) {
            command.append(RedisArgument(field.name))
            command.append(RedisArgument(field.value))
        }
        command += [
            "dlq_reason", RedisArgument(letter.rejection.reason.rawValue),
            "dlq_detail", RedisArgument(letter.rejection.detail),
            "dlq_source_stream", RedisArgument(stream),
            "dlq_source_id", RedisArgument(letter.entry.id.description),
            "dlq_at", RedisArgument(time.rfc3339),
        ]
        return command
    }
}

extension RESPValue {
    /// A flat `[name, value, …]` reply (XINFO and friends) as a dictionary.
    public var fieldPairs: [String: RESPValue] {
        var result: [String: RESPValue] = [:]
        let items = array ?? []
        var index = 0
        while index + 1 < items.count {
            if let name = items[index].string { result[name] = items[index + 1] }
            index += 2
        }
        return result
    }
}
