import Logging
import RedisClient

/// `historian dlq list` and `historian dlq replay`: the dead-letter stream, for an operator.
///
/// Nothing here prints a field that can carry a message body (`content`, `title`, `metadata`,
/// `contexts`, unknown fields): a dead letter is shown by its identifiers, its reason and the
/// size of its content.
public struct DeadLetters: Sendable {
    let dlqStream: String
    /// Where a dead letter without `dlq_source_stream` is replayed to.
    let stream: String
    let endpoints: ServerEndpoints
    let logger: Logger
    /// Reads of the dead-letter stream stay within `batch_bytes`, as a worker's do: a dead
    /// letter can be far larger than `max_content_bytes` (`too_large`).
    let firstBudget: ReadBudget

    /// How often a replay starts over when the dead-letter stream changed under it.
    static let replayAttempts = 20
    /// How much of a `message_id` or `conversation_id` is shown: a UUID has 36 characters, and
    /// a producer that put something else there must not get a message body printed.
    static let identifierLimit = 64

    public init(configuration: HistorianConfiguration, logger: Logger) throws {
        try configuration.requireSingleNode(for: "historian dlq")
        self.dlqStream = configuration.dlqStream
        self.stream = configuration.stream
        self.endpoints = try ServerEndpoints(configuration)
        self.logger = logger
        self.firstBudget = ReadBudget(
            batchSize: 100,
            batchBytes: configuration.batchBytes,
            firstEntryBytes: configuration.maxContentBytes
        )
    }

    // MARK: - Dead letters as shown

    /// One dead letter as `list` shows it: no field that can carry a message body.
    public struct Letter: Sendable, Hashable {
        public var id: StreamID
        public var at: String?
        public var reason: String?
        public var detail: String?
        public var sourceStream: String?
        public var sourceID: String?
        /// At most ``DeadLetters/identifierLimit`` characters, like ``conversationID``.
        public var messageID: String?
        public var conversationID: String?
        /// The size of `content`, the only thing shown of it; `nil` when the entry has none.
        public var contentBytes: Int?
        /// The bytes of the entry's field names and values.
        var bytes = 0

        init(id: StreamID) {
            self.id = id
        }

        /// One line of text; `source_stream` is named only when it is not `stream`.
        public func text(stream: String) -> String {
            let reason = Self.printable(reason ?? "-")
            var text =
                "\(id)  \(Self.printable(at ?? "-"))  \(reason.padding(toLength: 20, withPad: " ", startingAt: 0))"
            text += "  source=\(Self.printable(sourceID ?? "-"))"
            if let sourceStream, sourceStream != stream { text += "  source_stream=\(Self.printable(sourceStream))" }
            if let messageID { text += "  message=\(Self.printable(messageID))" }
            if let conversationID { text += "  conversation=\(Self.printable(conversationID))" }
            text += contentBytes.map { "  content=\($0) bytes" } ?? "  content=absent"
            if let detail { text += "  \(Self.printable(detail))" }
            return text
        }

        /// One JSON object with the same fields as ``text(stream:)``; absent fields are `null`.
        public var json: String {
            var out: [UInt8] = []
            func string(_ key: StaticString, _ value: String?, first: Bool = false) {
                out.append(contentsOf: (first ? "{\"" : ",\"").utf8)
                out.append(contentsOf: UnsafeBufferPointer(start: key.utf8Start, count: key.utf8CodeUnitCount))
                out.append(contentsOf: "\":".utf8)
                if let value {
                    RecentCache.appendJSONString(value, to: &out)
                } else {
                    out.append(contentsOf: "null".utf8)
                }
            }
            string("id", id.description, first: true)
            string("dlq_at", at)
            string("dlq_reason", reason)
            string("dlq_detail", detail)
            string("dlq_source_stream", sourceStream)
            string("dlq_source_id", sourceID)
            string("message_id", messageID)
            string("conversation_id", conversationID)
            out.append(contentsOf: ",\"content_bytes\":\(contentBytes.map(String.init) ?? "null")}".utf8)
            return String(decoding: out, as: UTF8.self)
        }

        /// Control characters (a terminal's escape sequences among them) as `\u{1b}`.
        static func printable(_ text: String) -> String {
            var result = ""
            for scalar in text.unicodeScalars {
                if scalar.value < 0x20 || (0x7F...0x9F).contains(scalar.value) {
                    result += "\\u{\(String(scalar.value, radix: 16))}"
                } else {
                    result.unicodeScalars.append(scalar)
                }
            }
            return result
        }

        /// A field's value as text, invalid UTF-8 replaced, cut to `limit` characters.
        static func shown(_ bytes: UnsafeRawBufferPointer, limit: Int) -> String {
            let text = String(decoding: bytes, as: UTF8.self)
            return text.count > limit ? String(text.prefix(limit)) + "…" : text
        }

        /// Decodes one `[id, [field, value, …]]` element of an XRANGE reply in place, copying
        /// only the fields shown; of `content`, only its size.
        static func decode(_ item: RedisReplyView?) throws -> Letter {
            guard let item, item.count == 2, let id = item[0]?.withBytes({ StreamID(ascii: $0) }) else {
                throw HistorianError(.unexpectedReply, "a dead letter had an unexpected shape")
            }
            var letter = Letter(id: id)
            guard let flat = item[1], flat.kind == .array else { return letter }
            var index = 0
            while index + 1 < flat.count, let nameView = flat[index], let value = flat[index + 1] {
                index += 2
                let name = nameView.withBytes { String(decoding: $0, as: UTF8.self) }
                let size = value.withBytes { $0.count }
                letter.bytes += name.utf8.count + size
                // An original field keeps its first value, as ingest reads it; the dlq_ fields
                // come last, so the last of each is Historian's own.
                switch name {
                case "content" where letter.contentBytes == nil:
                    letter.contentBytes = size
                case "message_id" where letter.messageID == nil:
                    letter.messageID = value.withBytes { shown($0, limit: DeadLetters.identifierLimit) }
                case "conversation_id" where letter.conversationID == nil:
                    letter.conversationID = value.withBytes { shown($0, limit: DeadLetters.identifierLimit) }
                case "dlq_at": letter.at = value.withBytes { shown($0, limit: 64) }
                case "dlq_reason": letter.reason = value.withBytes { shown($0, limit: 64) }
                case "dlq_detail": letter.detail = value.withBytes { shown($0, limit: 1000) }
                case "dlq_source_stream": letter.sourceStream = value.withBytes { shown($0, limit: 1000) }
                case "dlq_source_id": letter.sourceID = value.withBytes { shown($0, limit: 64) }
                default: break
                }
            }
            return letter
        }
    }

    // MARK: - list

    /// What `list` found.
    public struct Listing: Sendable {
        /// The letters shown, oldest first.
        public var letters: [Letter] = []
        /// `XLEN` of the dead-letter stream before the letters were read.
        public var length = 0
        /// How many letters were read, shown or not, and their reasons.
        public var read = 0
        public var byReason: [String: Int] = [:]
        /// Whether every letter was read; if not, ``byReason`` covers the oldest ``read``.
        public var complete = true
        /// The last line of the report.
        public var summary = ""
    }

    /// Reports the oldest `count` dead letters (of `reason`, if given), one at a time.
    public func list(
        reason: DeadLetterReason?,
        count: Int,
        report: @Sendable (Letter) -> Void
    ) async throws -> Listing {
        let redis = try await endpoints.connectRedis(logger: logger)
        defer { redis.close() }
        var listing = Listing()
        if try await dlqExists(redis) {
            listing.length = Int(try await redis.send("XLEN", RedisArgument(dlqStream)).int ?? 0)
            let reachedEnd = try await scan(redis) { letter in
                listing.read += 1
                listing.byReason[letter.reason ?? "-", default: 0] += 1
                if reason == nil || letter.reason == reason?.rawValue {
                    listing.letters.append(letter)
                    report(letter)
                }
                return listing.letters.count < count
            }
            listing.complete = reachedEnd || listing.read >= listing.length
        }
        var summary = "summary: \(listing.letters.count) shown"
        if let reason { summary += " (reason \(reason))" }
        summary += " of \(listing.length) dead letters in \(dlqStream)"
        let counts = Self.ordered(listing.byReason).map { "\($0.1) \(Letter.printable($0.0))" }.joined(separator: ", ")
        if listing.complete {
            if !counts.isEmpty { summary += ": \(counts)" }
        } else {
            summary += "; the oldest \(listing.read) of them: \(counts); --count shows more"
        }
        listing.summary = summary
        return listing
    }

    /// Reason counts in the contract's order, then any other values alphabetically.
    static func ordered(_ counts: [String: Int]) -> [(String, Int)] {
        let known = DeadLetterReason.allCases.map(\.rawValue)
        return known.compactMap { name in counts[name].map { (name, $0) } }
            + counts.filter { !known.contains($0.key) }.sorted { $0.key < $1.key }
    }

    // MARK: - replay

    /// Which dead letters `replay` takes.
    public enum Selection: Sendable, Hashable {
        /// These, in this order.
        case ids([StreamID])
        /// The oldest `limit` (every one, for `nil`) of one reason.
        case reason(DeadLetterReason, limit: Int?)
        /// The oldest `limit` (every one, for `nil`).
        case all(limit: Int?)
    }

    /// What `replay` did.
    public struct ReplayResult: Sendable {
        /// Old ID and new ID of each dead letter replayed (with `dryRun`, the new ID is `nil`).
        public var replayed: [(from: StreamID, to: StreamID?)] = []
        /// Asked for by ID, but not in the dead-letter stream.
        public var notFound: [StreamID] = []
        /// Chosen by reason, but deleted from the dead-letter stream before their turn came.
        public var gone: [StreamID] = []
        public var failed: [StreamID] = []

        /// Whether every dead letter asked for was replayed (or would be).
        public var succeeded: Bool { notFound.isEmpty && failed.isEmpty }
    }

    /// Puts the chosen dead letters back on their source streams: each one's original fields
    /// (every field but the `dlq_` ones, in order, byte for byte) are appended with `XADD *`,
    /// and the dead letter deleted, in one `MULTI`/`EXEC`. With `dryRun`, writes nothing.
    public func replay(
        _ selection: Selection,
        dryRun: Bool,
        report: @Sendable (String) -> Void
    ) async throws -> ReplayResult {
        let redis = try await endpoints.connectRedis(logger: logger)
        defer { redis.close() }
        var result = ReplayResult()
        let exists = try await dlqExists(redis)
        var streams = Set<String>()

        func take(_ id: StreamID, chosenByID: Bool) async throws {
            let outcome = exists ? try await replayOne(id, redis: redis, dryRun: dryRun, streams: &streams) : .notFound
            switch outcome {
            case .replayed(let newID, let source, let reason):
                result.replayed.append((id, newID))
                report("replayed \(id) -> \(newID) on \(Letter.printable(source))  (\(Letter.printable(reason)))")
            case .wouldReplay(let source, let reason, let fields):
                result.replayed.append((id, nil))
                report(
                    "would replay \(id) -> \(Letter.printable(source))  (\(Letter.printable(reason)), \(fields) fields)"
                )
            case .notFound where chosenByID:
                result.notFound.append(id)
                report("not found: \(id) is not in \(dlqStream)")
            case .notFound:
                result.gone.append(id)
                report("skipped: \(id) left \(dlqStream) before its turn")
            case .failed(let why):
                result.failed.append(id)
                report("failed: \(id): \(why)")
            }
        }

        func takeScanned(reason: DeadLetterReason?, limit: Int?) async throws {
            guard exists, limit != 0 else { return }
            // Only the letters there now: one replayed and dead-lettered again while this runs
            // is not taken a second time.
            let newest = try await redis.send("XREVRANGE", RedisArgument(dlqStream), "+", "-", "COUNT", "1")
            guard let last = newest.array?.first?.array?.first?.string else { return }
            var chosen = 0
            _ = try await scan(redis, through: last) { letter in
                guard reason == nil || letter.reason == reason?.rawValue else { return true }
                try await take(letter.id, chosenByID: false)
                chosen += 1
                return limit.map { chosen < $0 } ?? true
            }
        }

        switch selection {
        case .ids(let ids):
            var seen = Set<StreamID>()
            for id in ids where seen.insert(id).inserted {
                try await take(id, chosenByID: true)
            }
        case .reason(let reason, let limit):
            try await takeScanned(reason: reason, limit: limit)
        case .all(let limit):
            try await takeScanned(reason: nil, limit: limit)
        }

        var summary =
            dryRun
            ? "summary (dry run, nothing written): \(result.replayed.count) would be replayed"
            : "summary: \(result.replayed.count) replayed"
        if !result.notFound.isEmpty { summary += ", \(result.notFound.count) not found" }
        if !result.gone.isEmpty { summary += ", \(result.gone.count) skipped" }
        if !result.failed.isEmpty { summary += ", \(result.failed.count) failed" }
        report(summary)
        return result
    }

    enum Outcome {
        case replayed(StreamID, source: String, reason: String)
        case wouldReplay(source: String, reason: String, fields: Int)
        case notFound
        case failed(String)
    }

    /// Replays one dead letter. `WATCH` on the dead-letter stream makes the `EXEC` fail if the
    /// stream changed since the letter was read (a concurrent replay took it, say), and then
    /// the letter is read again: it is never appended twice, and never deleted unless appended.
    ///
    /// `streams` holds the source keys already found to be streams (or absent): each is checked
    /// once, so that between `WATCH` and `EXEC` there is one round trip, and new dead letters
    /// arriving meanwhile seldom make the `EXEC` fail.
    func replayOne(
        _ id: StreamID,
        redis: RedisConnection,
        dryRun: Bool,
        streams: inout Set<String>
    ) async throws -> Outcome {
        let dlq = RedisArgument(dlqStream)
        let idArgument = RedisArgument(id.description)
        for _ in 0..<Self.replayAttempts {
            var read: [[RedisArgument]] = [["XRANGE", dlq, idArgument, idArgument]]
            if !dryRun { read.insert(["WATCH", dlq], at: 0) }
            let replies = try await redis.pipeline(read) { view -> StreamEntry? in
                switch view.kind {
                case .error:
                    throw RedisError(serverReply: view.withBytes { String(decoding: $0, as: UTF8.self) })
                case .array:
                    return try IngestStream.decodeEntries(view).first?.1
                default:
                    return nil
                }
            }
            func abandon(_ outcome: Outcome) async throws -> Outcome {
                if !dryRun { _ = try await redis.send("UNWATCH") }
                return outcome
            }
            guard let entry = replies.last ?? nil else { return try await abandon(.notFound) }

            let prefix = Array("dlq_".utf8)
            let original = entry.fields.filter { !$0.name.starts(with: prefix) }
            let source = entry["dlq_source_stream"].flatMap { String(validating: $0, as: UTF8.self) } ?? ""
            let target = source.isEmpty ? stream : source
            let reason = entry["dlq_reason"].map { String(decoding: $0, as: UTF8.self) } ?? "-"
            guard !original.isEmpty else {
                return try await abandon(.failed("it has no fields but dlq_ ones; nothing to replay"))
            }
            guard target != dlqStream else {
                return try await abandon(.failed("its source stream is the dead-letter stream itself"))
            }
            // A runtime error inside EXEC does not undo the other command: an XADD to a key of
            // another type would fail and the XDEL still delete the letter.
            if !streams.contains(target) {
                let type = try await redis.send("TYPE", RedisArgument(target)).string ?? "?"
                guard type == "stream" || type == "none" else {
                    return try await abandon(
                        .failed("its source stream \(Letter.printable(target)) is a \(type), not a stream")
                    )
                }
                streams.insert(target)
            }
            if dryRun { return .wouldReplay(source: target, reason: reason, fields: original.count) }

            var add: [RedisArgument] = ["XADD", RedisArgument(target), "*"]
            for field in original {
                add.append(RedisArgument(field.name))
                add.append(RedisArgument(field.value))
            }
            let transaction = try await redis.pipeline([["MULTI"], add, ["XDEL", dlq, idArgument], ["EXEC"]])
            switch transaction[3] {
            case .null:
                continue  // the dead-letter stream changed: read the letter again
            case .error(let text):
                // Refused before anything ran (EXECABORT).
                throw RedisError(serverReply: text)
            case .array(let results) where results.count == 2:
                if let newID = results[0].string.flatMap({ StreamID($0) }), results[1].int == 1 {
                    logger.debug(
                        "Replayed a dead letter",
                        metadata: ["stream.entry": "\(id)", "replay.entry": "\(newID)", "replay.stream": "\(target)"]
                    )
                    return .replayed(newID, source: target, reason: reason)
                }
                if case .error(let text) = results[0], results[1].int == 1 {
                    return .failed(try await restore(entry, redis: redis, after: RedisError(serverReply: text)))
                }
                return .failed("unexpected EXEC results \(results.map(Self.kind))")
            default:
                return .failed("unexpected EXEC reply \(Self.kind(transaction[3]))")
            }
        }
        return .failed("\(dlqStream) kept changing for \(Self.replayAttempts) attempts; nothing was done, try again")
    }

    /// Puts a dead letter whose XADD failed inside EXEC (while its XDEL went through) back in
    /// the dead-letter stream, every field as it was, under a new ID.
    private func restore(_ entry: StreamEntry, redis: RedisConnection, after error: RedisError) async throws -> String {
        var add: [RedisArgument] = ["XADD", RedisArgument(dlqStream), "*"]
        for field in entry.fields {
            add.append(RedisArgument(field.name))
            add.append(RedisArgument(field.value))
        }
        let newID = try await redis.send(add).string ?? "?"
        return "appending to its source stream failed (\(error.message)); the dead letter is back as \(newID)"
    }

    /// A reply's kind, for an error message: never its bytes.
    static func kind(_ reply: RESPValue) -> String {
        switch reply {
        case .simpleString: "status"
        case .bulkString: "string"
        case .integer: "integer"
        case .array: "array"
        case .null: "nil"
        case .error(let text): "error \(RedisError(serverReply: text).message)"
        }
    }

    // MARK: - Reading

    /// Whether the dead-letter stream exists; throws if its key holds something else.
    private func dlqExists(_ redis: RedisConnection) async throws -> Bool {
        let type = try await redis.send("TYPE", RedisArgument(dlqStream)).string ?? "?"
        switch type {
        case "stream": return true
        case "none": return false
        default: throw HistorianError(.invalidConfiguration, "dlq_stream \(dlqStream) is a \(type), not a stream")
        }
    }

    /// Hands the dead letters up to `end` to `body`, oldest first, until it returns `false`.
    /// - Returns: whether the scan reached `end`.
    private func scan(
        _ redis: RedisConnection,
        through end: String = "+",
        _ body: (Letter) async throws -> Bool
    ) async throws -> Bool {
        var budget = firstBudget
        var start = "-"
        while true {
            let asked = budget.count()
            let letters = try await redis.send(
                [
                    "XRANGE", RedisArgument(dlqStream), RedisArgument(start), RedisArgument(end), "COUNT",
                    RedisArgument(asked),
                ]
            ) { reply in
                try (0..<reply.count).map { try Letter.decode(reply[$0]) }
            }
            budget.observe(largestEntryBytes: letters.reduce(0) { max($0, $1.bytes) })
            for letter in letters {
                guard try await body(letter) else { return false }
            }
            guard letters.count == asked, let last = letters.last else { return true }
            start = "(" + last.id.description
        }
    }
}
