import Foundation
import RedisClient
import Synchronization
import Testing

@testable import Historian

#if canImport(Glibc)
import Glibc
#endif

/// `historian forget` (contract §7): a user's or a conversation's rows, archive files, Redis
/// keys and dead letters erased, while the daemon stores messages, killed at each step and run
/// again, and run twice; everyone else's data byte for byte as it was.
@Suite(.serialized)
struct ForgetTests {
    static let user = "u-erased"
    static let sessions = ["s-erased-1", "s-erased-2"]
    static let tombstone = "9223372036854775807 "

    // MARK: - A user with live, archived and dead-lettered data, among others

    /// What `arrange` made: the erased user's conversations and what erasing them must remove.
    struct Scenario {
        var live: [String]
        var archived: [String]
        var othersLive: [String]
        var othersArchived: [String]
        /// A file named after one of the user's live conversations that no row records, as a
        /// restore that died before removing its file leaves.
        var orphan: String
        var expected: [String: Int]

        var conversations: Set<String> { Set(live + archived) }
    }

    /// Numbers for message IDs, apart from every other test's.
    static func message(
        _ number: Int,
        conversation: String,
        user: String,
        session: String?,
        content: String? = nil
    ) -> TestMessage {
        TestMessage(
            id: Producer.uuid(0x34, number),
            conversationID: conversation,
            userID: user,
            role: number % 2 == 0 ? "user" : "assistant",
            content: content ?? "message \(number) — grüße, 日本語, \"quotes\"\nand lines",
            sessionID: session,
            metadata: number % 2 == 0 ? #"{"n":\#(number)}"# : nil,
            contexts: number % 3 == 0 ? #"[{"doc_id":"d-\#(number)","content":"retrieved","score":0.5}]"# : nil
        )
    }

    /// Six messages in each conversation, alternating between the sessions given.
    static func conversationMessages(
        _ conversations: [String],
        user: String,
        sessions: [String],
        from first: Int
    )
        -> [TestMessage]
    {
        var messages: [TestMessage] = []
        for (index, conversation) in conversations.enumerated() {
            for turn in 0..<6 {
                let number = first + index * 6 + turn
                messages.append(
                    message(
                        number,
                        conversation: conversation,
                        user: user,
                        session: sessions[(index + turn) % sessions.count]
                    )
                )
            }
        }
        return messages
    }

    /// The erased user: three live conversations, two archived, two sessions, two dead letters
    /// (an `invalid_role`, and a `user_mismatch` in another user's conversation), LangChain
    /// lists, and a stray archive file. Others: live and archived conversations, and dead
    /// letters, one of them another user's `user_mismatch` in the erased user's conversation.
    static func arrange(_ environment: TestEnvironment, _ variables: [String: String]) async throws -> Scenario {
        let redis = try await environment.redis()
        defer { redis.close() }
        let erased = (0..<5).map { Producer.uuid(0x31, $0) }
        let others = (0..<4).map { Producer.uuid(0x32, $0) }
        let mine = conversationMessages(erased, user: user, sessions: sessions, from: 0)
        let theirs =
            conversationMessages(Array(others[0..<2]), user: "u-keep-1", sessions: ["s-keep-1"], from: 100)
            + conversationMessages(
                Array(others[2..<4]),
                user: "u-keep-2",
                sessions: ["s-keep-2", "s-keep-3"],
                from: 200
            )
        try await Producer.append(mine + theirs, redis: redis)
        let stored = try await HistorianProcess.run(["run", "--once"], environment: variables)
        #expect(stored.status == 0, "\(stored.errors)")

        let bad: [[(String, String)]] = [
            // The erased user's: a bad role, and a message into someone else's conversation.
            [
                ("message_id", Producer.uuid(0x35, 1)), ("conversation_id", erased[0]), ("user_id", user),
                ("role", "admin"), ("content", "erased user's bad role"),
            ],
            [
                ("message_id", Producer.uuid(0x35, 2)), ("conversation_id", others[0]), ("user_id", user),
                ("role", "user"), ("content", "erased user's message in another's conversation"),
            ],
            // Other users': a message into the erased user's conversation, a bad role, and one
            // whose user_id comes twice: ingest reads the first.
            [
                ("message_id", Producer.uuid(0x35, 3)), ("conversation_id", erased[1]), ("user_id", "u-intruder"),
                ("role", "user"), ("content", "intruder's message"),
            ],
            [
                ("message_id", Producer.uuid(0x35, 4)), ("conversation_id", others[1]), ("user_id", "u-keep-1"),
                ("role", "admin"), ("content", "kept bad role"),
            ],
            [
                ("message_id", Producer.uuid(0x35, 5)), ("conversation_id", others[2]), ("user_id", "u-keep-2"),
                ("user_id", user), ("role", "robot"), ("content", "kept: its user is u-keep-2"),
            ],
        ]
        try await Producer.appendRaw(bad, redis: redis)
        let judged = try await HistorianProcess.run(["run", "--once"], environment: variables)
        #expect(judged.status == 0, "\(judged.errors)")
        #expect(try await deadLetterCount(redis) == 5, "the dead letters the scenario needs")

        let archived = Array(erased[3...])
        let othersArchived = [others[3]]
        let quiet = (archived + othersArchived).map { "'\($0)'" }.joined(separator: ",")
        _ = try await environment.rows(
            "UPDATE conversations SET updated_at = now() - interval '40 days' WHERE id IN (\(quiet))"
        )
        let archive = try await HistorianProcess.run(["archive"], environment: variables)
        #expect(archive.status == 0, "\(archive.output)\(archive.errors)")
        #expect(try await environment.scalar("SELECT count(*) FROM archived_conversations") == 3)

        let strayDirectory = environment.archiveDir + "/2001/01/01"
        try FileManager.default.createDirectory(atPath: strayDirectory, withIntermediateDirectories: true)
        let orphan = "\(strayDirectory)/\(erased[2]).jsonl.gz"
        try Data("a stray archive".utf8).write(to: URL(fileURLWithPath: orphan))

        let live = Array(erased[0..<3])
        let liveMessages = mine.filter { live.contains($0.conversationID) }
        return Scenario(
            live: live,
            archived: archived,
            othersLive: Array(others[0..<3]),
            othersArchived: othersArchived,
            orphan: orphan,
            expected: [
                "conversations": 3, "messages": liveMessages.count,
                "contexts": liveMessages.filter { $0.contexts != nil }.count, "archived_conversations": 2,
                // Two archives with their .sha256, and the stray file.
                "archive_files": 5,
                // Per live conversation its list, version key and LangChain list; two session
                // hashes and the user's set.
                "redis_keys": 3 * 3 + 2 + 1,
                "dead_letters": 2,
            ]
        )
    }

    static func variables(_ environment: TestEnvironment, prefix: String = "") -> [String: String] {
        environment.historianEnvironment.merging(
            ["HISTORIAN_LANGCHAIN_CACHE": "true", "HISTORIAN_ARCHIVE_EVERY": "0s", "HISTORIAN_KEY_PREFIX": prefix]
        ) { $1 }
    }

    // MARK: - Everything the servers and the archive hold

    /// One thing stored somewhere, and whose it is.
    struct Item: Hashable, CustomStringConvertible {
        var kind: String
        var name: String
        var conversation: String?
        var user: String?
        var session: String?

        var description: String { "\(kind) \(name)" }
    }

    /// Every row, archive file, Redis key (but the streams) and dead letter, with its value as
    /// text (a file's bytes in base64).
    static func capture(_ environment: TestEnvironment, prefix: String = "") async throws -> [Item: String] {
        var state: [Item: String] = [:]
        for row in try await environment.rows("SELECT id::text, user_id, c::text FROM conversations AS c") {
            state[Item(kind: "conversations", name: row[0]!, conversation: row[0], user: row[1])] = row[2]
        }
        for row in try await environment.rows("SELECT conversation_id::text, id::text, m::text FROM messages AS m") {
            state[Item(kind: "messages", name: row[1]!, conversation: row[0])] = row[2]
        }
        for row in try await environment.rows(
            "SELECT m.conversation_id::text, x.id::text, x::text FROM message_contexts AS x JOIN messages AS m ON m.id = x.message_id"
        ) {
            state[Item(kind: "message_contexts", name: row[1]!, conversation: row[0])] = row[2]
        }
        for row in try await environment.rows("SELECT id::text, user_id, a::text FROM archived_conversations AS a") {
            state[Item(kind: "archived_conversations", name: row[0]!, conversation: row[0], user: row[1])] = row[2]
        }
        for path in ArchiveCrashTests.files(below: environment.archiveDir) {
            var name = (path as NSString).lastPathComponent
            if name.hasPrefix(".") { name.removeFirst() }
            let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
            state[Item(kind: "file", name: path, conversation: String(name.prefix(36)))] = bytes.base64EncodedString()
        }

        let redis = try await environment.redis()
        defer { redis.close() }
        let keys = try await redis.send("KEYS", "*").array?.compactMap(\.string) ?? []
        for key in keys where key != "chat:messages" && key != "chat:messages:dlq" {
            let argument = RedisArgument(key)
            let value: String
            switch try await redis.send("TYPE", argument).string {
            case "string": value = try await redis.send("GET", argument).string ?? ""
            case "list":
                value = (try await redis.send("LRANGE", argument, "0", "-1").array ?? []).compactMap(\.string).joined(
                    separator: "\n"
                )
            case "hash":
                let pairs = replyPairs(try await redis.send("HGETALL", argument))
                value = pairs.map { "\($0.key)=\($0.value.string ?? "")" }.sorted().joined(separator: "\n")
            case "set":
                value = (try await redis.send("SMEMBERS", argument).array ?? []).compactMap(\.string).sorted().joined(
                    separator: "\n"
                )
            case let other: value = "type \(other ?? "?")"
            }
            var item = Item(kind: "key", name: key)
            let bare = key.hasPrefix(prefix) ? String(key.dropFirst(prefix.count)) : key
            if bare.hasPrefix("history:") || bare.hasPrefix("message_store:") {
                item.conversation = String(bare.drop { $0 != ":" }.dropFirst().prefix(36))
            } else if bare.hasPrefix("session:") {
                item.session = String(bare.dropFirst("session:".count))
            } else if bare.hasPrefix("user:"), bare.hasSuffix(":sessions") {
                item.user = String(bare.dropFirst("user:".count).dropLast(":sessions".count))
            }
            state[item] = value
        }
        for record in try await streamRecords(redis, "chat:messages:dlq") {
            let item = Item(
                kind: "dead letter",
                name: record.id,
                conversation: record.value("conversation_id")?.lowercased(),
                user: record.value("user_id")
            )
            state[item] = zip(record.names, record.values).map { "\($0)=\(Data($1).base64EncodedString())" }.joined(
                separator: " "
            )
        }
        return state
    }

    /// Whose an item is, for an erasure of a user (with their conversations and sessions) or
    /// of one conversation: a user's dead letters are those with their user id; a
    /// conversation's, those headed for it.
    struct Erased {
        var user: String?
        var conversations: Set<String>
        var sessions: Set<String> = []

        func owns(_ item: Item) -> Bool {
            if item.kind == "dead letter" {
                return user.map { item.user == $0 } ?? item.conversation.map(conversations.contains) ?? false
            }
            if let user, item.user == user { return true }
            if let conversation = item.conversation, conversations.contains(conversation) { return true }
            return item.session.map(sessions.contains) ?? false
        }
    }

    /// Nothing of `erased` is left but the tombstones on its conversations' version keys, and
    /// everything else that was there before is there, byte for byte; anything new is
    /// `isNew`'s.
    static func expectErased(
        _ erased: Erased,
        before: [Item: String],
        after: [Item: String],
        prefix: String = "",
        isNew: (Item) -> Bool = { _ in false },
        sourceLocation: SourceLocation = #_sourceLocation
    ) {
        #expect(
            before.keys.contains { erased.owns($0) },
            "the scenario holds nothing to erase",
            sourceLocation: sourceLocation
        )
        let left = after.filter { erased.owns($0.key) }
        let tombstones = Set(erased.conversations.map { "\(prefix)history:\($0):recent:version" })
        let notTombstones = left.filter { !(tombstones.contains($0.key.name) && $0.value == Self.tombstone) }
        #expect(
            notTombstones.isEmpty,
            "left of the erased: \(notTombstones.keys.sorted { $0.name < $1.name })",
            sourceLocation: sourceLocation
        )
        #expect(
            Set(left.keys.map(\.name)) == tombstones,
            "a tombstone on each erased conversation's version key",
            sourceLocation: sourceLocation
        )

        let kept = before.filter { !erased.owns($0.key) }
        let changed = kept.filter { after[$0.key] != $0.value }.map(\.key)
        #expect(
            changed.isEmpty,
            "others' data changed or gone: \(changed.sorted { $0.name < $1.name })",
            sourceLocation: sourceLocation
        )
        let new = after.keys.filter { before[$0] == nil && !erased.owns($0) && !isNew($0) }
        #expect(new.isEmpty, "unexpected new data: \(new.sorted { $0.name < $1.name })", sourceLocation: sourceLocation)
    }

    /// The audit rows: each finished, the subject only as its SHA-256 (computed by PostgreSQL),
    /// no identifier of the subject anywhere in them.
    static func expectAudit(
        _ environment: TestEnvironment,
        scope: String,
        subject: String,
        identifiers: [String],
        rows: Int,
        sourceLocation: SourceLocation = #_sourceLocation
    ) async throws -> [[String: Int]] {
        let audit = try await environment.rows(
            """
            SELECT e::text, scope, subject_sha256 = encode(sha256(convert_to('\(subject)', 'UTF8')), 'hex'),
                finished_at IS NOT NULL AND pending IS NULL, step, conversations::text, messages::text, contexts::text,
                archived_conversations::text, archive_files::text, redis_keys::text, dead_letters::text
            FROM erasures AS e ORDER BY id
            """
        )
        #expect(audit.count == rows, "erasures rows: \(audit.map { $0[0] ?? "" })", sourceLocation: sourceLocation)
        let columns = [
            "conversations", "messages", "contexts", "archived_conversations", "archive_files", "redis_keys",
            "dead_letters",
        ]
        return audit.map { row in
            let text = row[0] ?? ""
            #expect(
                row[1] == scope && row[2] == "t" && row[3] == "t" && row[4] == "keys_removed_again",
                "\(text)",
                sourceLocation: sourceLocation
            )
            for identifier in identifiers {
                #expect(
                    !text.contains(identifier),
                    "the audit row names \(identifier): \(text)",
                    sourceLocation: sourceLocation
                )
            }
            return Dictionary(uniqueKeysWithValues: zip(columns, row[5...].map { Int($0 ?? "") ?? -1 }))
        }
    }

    static func counts(_ report: ErasureReport) -> [String: Int] {
        let removed = report.removed
        return [
            "conversations": removed.conversations, "messages": removed.messages, "contexts": removed.contexts,
            "archived_conversations": removed.archivedConversations, "archive_files": removed.archiveFiles,
            "redis_keys": removed.redisKeys, "dead_letters": removed.deadLetters,
        ]
    }

    static func report(_ output: String) throws -> ErasureReport {
        try JSONDecoder().decode(ErasureReport.self, from: Data(output.utf8))
    }

    // MARK: - Tests

    @Test("a user's live, archived and dead-lettered data erased while the daemon stores other users' messages")
    func userErasedWhileOthersAreStored() async throws {
        try await TestEnvironment.with { environment in
            try await environment.migrate()
            let variables = Self.variables(environment)
            let scenario = try await Self.arrange(environment, variables)
            let before = try await Self.capture(environment)
            let erased = Erased(user: Self.user, conversations: scenario.conversations, sessions: Set(Self.sessions))

            // Others' traffic, in new conversations of new users, all along.
            let liveKind = String(format: "0193%02x00", 0x33)
            let output = try await Daemons.with { daemons in
                let daemon = try daemons.start(["run", "--consumer", "forget"], variables: variables)
                // The erasure starts once others' traffic flows and the traffic stops only after
                // more of it followed the erasure, however slowly a loaded machine schedules it.
                let progress = TrafficProgress()
                let traffic = Task {
                    try await Self.traffic(environment, kind: 0x33, user: "u-live", progress: progress)
                }
                try await eventually("others' traffic under way") { progress.sent >= 50 }
                let forget = try await HistorianProcess.run(
                    ["forget", "--user", Self.user, "--json"],
                    environment: variables
                )
                #expect(forget.status == 0, "\(forget.output)\(forget.errors)")
                let sentByTheEnd = progress.sent
                try await eventually("others' traffic after the erasure") { progress.sent >= sentByTheEnd + 50 }
                traffic.cancel()
                let sent = try await traffic.value
                #expect(sent.count >= sentByTheEnd + 50, "traffic before, during and after the erasure")
                try await eventually("the traffic stored") {
                    let stored = try await environment.scalar(
                        "SELECT count(*) FROM messages WHERE conversation_id::text LIKE '\(liveKind)%'"
                    )
                    let pending = try await environment.pendingCount()
                    return stored == sent.count && pending == 0
                }
                daemon.signal(SIGTERM)
                #expect(try await daemon.wait(timeout: .seconds(30)) == 0)
                return forget
            }
            let after = try await Self.capture(environment)
            Self.expectErased(erased, before: before, after: after) { item in
                item.conversation?.hasPrefix(liveKind) == true || item.user?.hasPrefix("u-live") == true
                    || item.session?.hasPrefix("s-live") == true
            }
            #expect(!FileManager.default.fileExists(atPath: scenario.orphan))

            let report = try Self.report(output.output)
            #expect(Self.counts(report) == scenario.expected, "\(output.errors)")
            #expect(report.scope == .user && !report.dryRun && !report.resumed)
            #expect(!output.output.contains(Self.user) && !output.errors.contains(Self.user), "the user id printed")
            let audit = try await Self.expectAudit(
                environment,
                scope: "user",
                subject: Self.user,
                identifiers: [Self.user] + scenario.conversations + Self.sessions,
                rows: 1
            )
            #expect(audit.first == scenario.expected)

            // The cache writes of a batch that committed just before the erasure, arriving after
            // it, carrying erased messages: a brand-new conversation's first delta, and a
            // rebuild of a newer version. The tombstone turns both away, and they are not
            // reported stale (the pipeline would otherwise rebuild and retry).
            let redis = try await environment.redis()
            defer { redis.close() }
            let erasedElement = try #require(
                before.first { $0.key.name == "history:\(scenario.live[0]):recent" }?.value
            )
            let settings = CacheSettings(langchain: true)
            let late = [
                CacheWrite(mode: .delta, conversationID: scenario.live[0], version: 1, elements: [erasedElement]),
                CacheWrite(mode: .snapshot, conversationID: scenario.live[1], version: 1000, elements: [erasedElement]),
            ]
            let applied = try await RecentCache.apply(late, sessions: [], settings: settings, redis: redis)
            #expect(applied.stale.isEmpty)
            for conversation in scenario.live[0..<2] {
                let keys = ["history:\(conversation):recent", "message_store:\(conversation)"].map { RedisArgument($0) }
                #expect(
                    try await redis.send(["EXISTS"] + keys).int == 0,
                    "a late write brought \(conversation)'s list back"
                )
                let version = try await redis.send("GET", RedisArgument("history:\(conversation):recent:version"))
                #expect(version.string == Self.tombstone)
            }
        }
    }

    /// Appends messages of `user-N` (N = 0 … 3) in new conversations of `kind`, ten every 20
    /// ms, until cancelled; returns them.
    /// How many of the traffic's messages are in the stream so far, read while it runs.
    final class TrafficProgress: Sendable {
        private let count = Mutex(0)
        var sent: Int { count.withLock { $0 } }
        func add(_ number: Int) { count.withLock { $0 += number } }
    }

    static func traffic(
        _ environment: TestEnvironment,
        kind: UInt8,
        user: String,
        progress: TrafficProgress
    ) async throws -> [TestMessage] {
        let redis = try await environment.redis()
        defer { redis.close() }
        var sent: [TestMessage] = []
        var round = 0
        while !Task.isCancelled {
            let batch = (0..<10).map { index in
                let number = round * 10 + index
                return message(
                    1_000_000 + Int(kind) * 100_000 + number,
                    conversation: Producer.uuid(kind, number % 40),
                    user: "\(user)-\(number % 40 % 4)",
                    session: "s-live-\(number % 4)"
                )
            }
            try await Producer.append(batch, redis: redis)
            sent += batch
            progress.add(batch.count)
            round += 1
            try? await Task.sleep(for: .milliseconds(20))
        }
        return sent
    }

    @Test(
        "the user's own messages stored while the erasure runs: what is left was committed after it, and no list holds an erased message"
    )
    func userErasedWhileTheirMessagesAreStored() async throws {
        try await TestEnvironment.with { environment in
            // Commit times, to tell what committed before the erasure from what committed after.
            _ = try await environment.postgresServer.psql("ALTER SYSTEM SET track_commit_timestamp = on")
            try await environment.postgresServer.stop()
            try await environment.postgresServer.start()
            try await environment.migrate()
            let variables = Self.variables(environment)
            let racer = "u-racer"
            let redis = try await environment.redis()
            defer { redis.close() }
            let early = Self.conversationMessages(
                (0..<3).map { Producer.uuid(0x36, $0) },
                user: racer,
                sessions: ["s-racer"],
                from: 5000
            )
            try await Producer.append(early, redis: redis)
            #expect(try await HistorianProcess.run(["run", "--once"], environment: variables).status == 0)

            let (forget, sent) = try await Daemons.with { daemons in
                let daemon = try daemons.start(["run", "--consumer", "race", "--workers", "4"], variables: variables)
                // Before, during and after the erasure, the user writes five messages every 2 ms:
                // two to their old conversations, three opening new ones (the store calls that
                // create conversations are the ones a delete without the locks would miss).
                let progress = TrafficProgress()
                let racing = Task { () async throws -> [TestMessage] in
                    let redis = try await environment.redis()
                    defer { redis.close() }
                    var sent: [TestMessage] = []
                    var number = 0
                    while !Task.isCancelled {
                        let batch = (0..<5).map { index in
                            let conversation = Producer.uuid(
                                0x36,
                                index < 2 ? (number + index) % 3 : 3 + number + index
                            )
                            return Self.message(
                                6000 + number + index,
                                conversation: conversation,
                                user: racer,
                                session: "s-racer"
                            )
                        }
                        try await Producer.append(batch, redis: redis)
                        sent += batch
                        number += batch.count
                        progress.add(batch.count)
                        try? await Task.sleep(for: .milliseconds(2))
                    }
                    return sent
                }
                // The erasure starts once the daemon has stored some of the racing messages, and
                // the racing stops only after more followed the erasure, however slowly a loaded
                // machine schedules either.
                try await eventually("the racing messages being stored") {
                    try await environment.scalar(
                        "SELECT count(*) FROM messages AS m JOIN conversations AS c ON c.id = m.conversation_id WHERE c.user_id = '\(racer)'"
                    ) >= early.count + 20
                }
                let forget = try await HistorianProcess.run(
                    ["forget", "--user", racer, "--json"],
                    environment: variables
                )
                #expect(forget.status == 0, "\(forget.output)\(forget.errors)")
                let sentByTheEnd = progress.sent
                try await eventually("racing messages after the erasure") { progress.sent >= sentByTheEnd + 50 }
                racing.cancel()
                let sent = try await racing.value
                try await eventually("every entry consumed") {
                    guard let group = try await GroupState.of(redis) else { return false }
                    let last = try await streamInfo(redis).lastGenerated
                    return group.pending == 0 && group.lastDelivered == last
                }
                // The end stage of the last batches.
                try await Task.sleep(for: .milliseconds(500))
                daemon.signal(SIGTERM)
                #expect(try await daemon.wait(timeout: .seconds(30)) == 0)
                return (forget, sent)
            }
            let report = try Self.report(forget.output)
            #expect(report.removed.messages > early.count, "the erasure removed messages stored while it ran")

            // Each message, context and conversation row of the user that PostgreSQL holds was
            // committed after the erasure's transaction.
            let erasure =
                "(SELECT pg_xact_commit_timestamp((rows_deleted_xid::text::numeric % 4294967296)::text::xid) FROM erasures)"
            let committed = "pg_xact_commit_timestamp(m.xmin)"
            let mine =
                "FROM messages AS m JOIN conversations AS c ON c.id = m.conversation_id WHERE c.user_id = '\(racer)'"
            #expect(try await environment.scalar("SELECT count(*) FROM erasures WHERE \(erasure) IS NOT NULL") == 1)
            let before = try await environment.scalar("SELECT count(*) \(mine) AND NOT \(committed) > \(erasure)")
            #expect(before == 0, "messages of the user committed before the erasure are left")
            let contexts = try await environment.scalar(
                """
                SELECT count(*) FROM message_contexts AS x JOIN messages AS m ON m.id = x.message_id
                    JOIN conversations AS c ON c.id = m.conversation_id
                WHERE c.user_id = '\(racer)' AND NOT pg_xact_commit_timestamp(x.xmin) > \(erasure)
                """
            )
            #expect(contexts == 0, "contexts of the user committed before the erasure are left")
            let after = try await environment.scalar("SELECT count(*) \(mine) AND \(committed) > \(erasure)")
            #expect(after > 0, "messages stored after the erasure, as new data")
            #expect(after + report.removed.messages <= sent.count + early.count)
            // The journal's transaction id says the same, as docs/erasure.md tells operators.
            let xid = "(SELECT (rows_deleted_xid::text::numeric % 4294967296)::bigint FROM erasures)"
            #expect(try await environment.scalar("SELECT count(*) \(mine) AND (m.xmin::text)::bigint <= \(xid)") == 0)
            let earlyIDs = early.map { "'\($0.id)'" }.joined(separator: ",")
            #expect(try await environment.scalar("SELECT count(*) FROM messages WHERE id IN (\(earlyIDs))") == 0)
            #expect(try await deadLetterCount(redis) == 0)

            // No recent list, nor LangChain list, holds a message PostgreSQL does not.
            let stored = Set(try await environment.rows("SELECT id::text FROM messages").compactMap { $0[0] })
            for conversation in Set(sent.map(\.conversationID) + early.map(\.conversationID)) {
                let recent = try await cachedRecentList(redis, conversation).compactMap { $0["id"] as? String }
                #expect(recent.allSatisfy(stored.contains), "\(conversation)'s recent list holds erased messages")
                let langchain = try await redis.send(
                    "LRANGE",
                    RedisArgument("message_store:\(conversation)"),
                    "0",
                    "-1"
                )
                let ids = try (langchain.array ?? []).map { try jsonObject($0.string ?? "{}") }
                    .compactMap { ($0["data"] as? NSDictionary)?["id"] as? String }
                #expect(ids.allSatisfy(stored.contains), "\(conversation)'s LangChain list holds erased messages")
            }
            // The lists of the conversations the erasure found are off, behind their tombstones.
            for conversation in early.map(\.conversationID) {
                let version = try await redis.send("GET", RedisArgument("history:\(conversation):recent:version"))
                #expect(version.string == Self.tombstone)
                #expect(try await redis.send("EXISTS", RedisArgument("history:\(conversation):recent")).int == 0)
            }
        }
    }

    enum Point: String, CaseIterable, Sendable {
        case none
        case opened = "erasure-opened"
        case rowsDeleted = "erasure-rows-deleted"
        case keysRemoved = "erasure-keys-removed"
        case filesRemoved = "erasure-files-removed"
        case deadLettersRemoved = "erasure-dead-letters-removed"
        case keysRemovedAgain = "erasure-keys-removed-again"

        /// The step the journal row holds when the process dies here.
        var step: String { String(rawValue.dropFirst("erasure-".count)).replacingOccurrences(of: "-", with: "_") }
    }

    @Test("killed at each step, the erasure run again ends as an uninterrupted one does", arguments: Point.allCases)
    func killedAtAStep(_ point: Point) async throws {
        try await TestEnvironment.with { environment in
            try await environment.migrate()
            let variables = Self.variables(environment)
            let scenario = try await Self.arrange(environment, variables)
            let before = try await Self.capture(environment)
            let erased = Erased(user: Self.user, conversations: scenario.conversations, sessions: Set(Self.sessions))

            if point != .none {
                var crashing = variables
                crashing["HISTORIAN_TEST_CRASH_AT"] = point.rawValue
                let crashed = try await HistorianProcess.run(["forget", "--user", Self.user], environment: crashing)
                #expect(
                    crashed.status == 128 + SIGKILL,
                    "forget did not die at \(point.rawValue): \(crashed.output)\(crashed.errors)"
                )
                let open = try await environment.rows("SELECT step, finished_at IS NULL FROM erasures")
                #expect(open == [[point.step, "t"]], "the journal row")
                // What the step before the crash did, and what it did not.
                let rows = try await environment.scalar(
                    "SELECT count(*) FROM conversations WHERE user_id = '\(Self.user)'"
                )
                let redis = try await environment.redis()
                defer { redis.close() }
                let list = try await redis.send("EXISTS", RedisArgument("history:\(scenario.live[0]):recent")).int
                let files = FileManager.default.fileExists(atPath: scenario.orphan)
                let letters = try await deadLetterCount(redis)
                let done: (Bool, Bool, Bool, Bool) = (rows == 0, list == 0, !files, letters == 3)
                switch point {
                case .none: break
                case .opened: #expect(done == (false, false, false, false))
                case .rowsDeleted: #expect(done == (true, false, false, false))
                case .keysRemoved: #expect(done == (true, true, false, false))
                case .filesRemoved: #expect(done == (true, true, true, false))
                case .deadLettersRemoved, .keysRemovedAgain: #expect(done == (true, true, true, true))
                }
            }

            let rerun = try await HistorianProcess.run(
                ["forget", "--user", Self.user, "--json"],
                environment: variables
            )
            #expect(rerun.status == 0, "\(rerun.output)\(rerun.errors)")
            let report = try Self.report(rerun.output)
            #expect(report.resumed == (point != .none), "\(rerun.errors)")
            if point != .none { #expect(rerun.errors.contains("resuming erasure"), "\(rerun.errors)") }
            #expect(Self.counts(report) == scenario.expected, "\(rerun.errors)")

            let after = try await Self.capture(environment)
            Self.expectErased(erased, before: before, after: after)
            let audit = try await Self.expectAudit(
                environment,
                scope: "user",
                subject: Self.user,
                identifiers: [Self.user] + scenario.conversations + Self.sessions,
                rows: 1
            )
            #expect(audit.first == scenario.expected)
        }
    }

    @Test(
        "--conversation erases a live and an archived conversation, dry run first, and a second run removes nothing more"
    )
    func conversationErased() async throws {
        try await TestEnvironment.with { environment in
            try await environment.migrate()
            let prefix = "app:"
            let variables = Self.variables(environment, prefix: prefix)
            let scenario = try await Self.arrange(environment, variables)
            let live = scenario.live[1]
            let archived = scenario.archived[0]
            let redis = try await environment.redis()
            defer { redis.close() }
            // A dead letter headed for the live conversation, its id in upper case.
            try await Producer.appendRaw(
                [
                    [
                        ("message_id", Producer.uuid(0x35, 9)), ("conversation_id", live.uppercased()),
                        ("user_id", Self.user),
                        ("role", "admin"), ("content", "headed for the conversation"),
                    ]
                ],
                redis: redis
            )
            #expect(try await HistorianProcess.run(["run", "--once"], environment: variables).status == 0)
            #expect(try await deadLetterCount(redis) == 6)

            var before = try await Self.capture(environment, prefix: prefix)
            let dryRun = try await HistorianProcess.run(
                ["forget", "--conversation", live, "--dry-run", "--json"],
                environment: variables
            )
            #expect(dryRun.status == 0, "\(dryRun.errors)")
            let preview = try Self.report(dryRun.output)
            #expect(preview.dryRun && preview.erasureID == nil)
            #expect(try await Self.capture(environment, prefix: prefix) == before, "the dry run changed something")
            #expect(try await environment.scalar("SELECT count(*) FROM erasures") == 0)

            // The live one, in upper case: its rows, lists (tombstoned) and its two dead letters
            // (the intruder's and the one above); the user's sessions stay.
            let forgetLive = try await HistorianProcess.run(
                ["forget", "--conversation", live.uppercased(), "--json"],
                environment: variables
            )
            #expect(forgetLive.status == 0, "\(forgetLive.output)\(forgetLive.errors)")
            let liveReport = try Self.report(forgetLive.output)
            let liveExpected = [
                "conversations": 1, "messages": 6, "contexts": 2, "archived_conversations": 0, "archive_files": 0,
                "redis_keys": 3, "dead_letters": 2,
            ]
            #expect(Self.counts(liveReport) == liveExpected)
            #expect(Self.counts(preview) == liveExpected, "the dry run counted what the erasure removed")
            var after = try await Self.capture(environment, prefix: prefix)
            Self.expectErased(Erased(conversations: [live]), before: before, after: after, prefix: prefix)
            #expect(
                after.keys.contains { $0.name == "\(prefix)session:\(Self.sessions[0])" },
                "the user's sessions stay"
            )

            // The archived one: its row and files, never restored.
            before = after
            let forgetArchived = try await HistorianProcess.run(
                ["forget", "--conversation", archived, "--json"],
                environment: variables
            )
            #expect(forgetArchived.status == 0, "\(forgetArchived.output)\(forgetArchived.errors)")
            #expect(
                Self.counts(try Self.report(forgetArchived.output)) == [
                    "conversations": 0, "messages": 0, "contexts": 0, "archived_conversations": 1, "archive_files": 2,
                    "redis_keys": 0, "dead_letters": 0,
                ]
            )
            after = try await Self.capture(environment, prefix: prefix)
            Self.expectErased(Erased(conversations: [archived]), before: before, after: after, prefix: prefix)

            // Again: nothing more to remove, and a row that says so.
            let again = try await HistorianProcess.run(["forget", "--conversation", archived], environment: variables)
            #expect(again.status == 0, "\(again.output)\(again.errors)")
            #expect(
                again.output.contains(
                    "0 conversations, 0 messages, 0 contexts, 0 archived conversations, 0 archive files, 0 Redis keys, 0 dead letters"
                ),
                "\(again.output)"
            )
            #expect(try await Self.capture(environment, prefix: prefix) == after)
            let audit = try await environment.rows(
                "SELECT scope, archived_conversations::text, archive_files::text FROM erasures ORDER BY id"
            )
            #expect(audit == [["conversation", "0", "0"], ["conversation", "1", "2"], ["conversation", "0", "0"]])
            let naming =
                "SELECT count(*) FROM erasures AS e WHERE e::text LIKE '%\(archived)%' OR e::text LIKE '%\(live)%'"
            #expect(try await environment.scalar(naming) == 0, "an audit row names a conversation")
        }
    }

    @Test("forget names exactly one subject, and a conversation by a UUID")
    func usage() async throws {
        let environment = ChildEnvironment.clean([:])
        for arguments in [
            ["forget"], ["forget", "--user", "u", "--conversation", Producer.uuid(0x31, 0)],
            ["forget", "--conversation", "nope"], ["forget", "--user", ""],
        ] {
            let result = try await HistorianProcess.run(arguments, environment: environment)
            #expect(result.status == 64, "\(arguments): \(result.status) \(result.errors)")
        }
        let result = try await HistorianProcess.run(["forget", "--conversation", "nope"], environment: environment)
        #expect(result.errors.contains("'nope' is not a UUID"), "\(result.errors)")
    }
}
