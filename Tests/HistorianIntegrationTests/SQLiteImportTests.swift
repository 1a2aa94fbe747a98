import Foundation
import Historian
import SQLiteReader
import Testing

/// `historian import sqlite`: the real binary imports a SQLite store of the tutorial schema into
/// a real PostgreSQL. Every good row lands with the right IDs, content, order, owner, title and
/// metadata; every bad row is reported with its SQLite IDs and reason; a second import adds
/// nothing; a dry run writes nothing; Redis is never touched.
@Suite(.serialized)
struct SQLiteImportTests {
    // MARK: The fixture

    /// A message row as the fixture writes it, and what the import should make of it.
    struct Message {
        var sqliteID: Int64 = 0
        var role: SQLiteValue
        var content: SQLiteValue
        var timestamp: SQLiteValue
        var metadata: SQLiteValue = .null
        /// What PostgreSQL should hold: role, content, `created_at`; `nil` for a bad row.
        var expected: (role: String, content: String, microseconds: Int64)?
        /// The reason it is reported with, for a bad row.
        var reason: String?
    }

    struct Conversation {
        var index: Int
        var sqliteID: String
        var userID: String
        var title: String?
        var createdAt: Int64?
        var metadata: String?
        var messages: [Message] = []
        /// The reason the conversation row is reported with.
        var reason: String?

        var uuid: CanonicalUUID { ImportIDs.conversation(Array(sqliteID.utf8)).id }
        var isUUID: Bool { ImportIDs.conversation(Array(sqliteID.utf8)).isSourceUUID }
    }

    /// The tutorial's schema, as its application creates it.
    static let schema = """
        CREATE TABLE conversations (
            id TEXT PRIMARY KEY,
            user_id TEXT NOT NULL,
            title TEXT,
            created_at DATETIME DEFAULT CURRENT_TIMESTAMP,
            updated_at DATETIME DEFAULT CURRENT_TIMESTAMP,
            metadata TEXT
        );
        CREATE TABLE messages (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            conversation_id TEXT NOT NULL,
            role TEXT NOT NULL,
            content TEXT NOT NULL,
            timestamp DATETIME DEFAULT CURRENT_TIMESTAMP,
            metadata TEXT,
            FOREIGN KEY (conversation_id) REFERENCES conversations (id)
        );
        CREATE INDEX idx_messages_conversation ON messages (conversation_id);
        """

    static let conversationCount = 1000
    static let messageCount = 20000
    /// Conversations without messages: the last five.
    static let empty = 995..<1000
    /// 2024-01-01T00:00:00Z.
    static let base: Int64 = 1_704_067_200_000_000
    /// Owned in PostgreSQL by another user before the import.
    static let mismatched = 22
    /// Its first message is in PostgreSQL already, with other content.
    static let conflicting = 23

    /// `YYYY-MM-DD HH:MM:SS`, as SQLite's `CURRENT_TIMESTAMP` writes it.
    static func sqliteTime(_ microseconds: Int64) -> String {
        String(TestTime.utc(microseconds: microseconds).replacingOccurrences(of: "T", with: " ").prefix(19))
    }

    /// 1,000 conversations (a quarter with lowercase UUIDs, a quarter with uppercase ones, half
    /// with other IDs; five without messages) and 20,000 messages, spread round-robin so that a
    /// conversation's rows are far apart in the file, two of them in no conversation.
    static func fixture() -> [Conversation] {
        var conversations = (0..<conversationCount).map { index in
            let sqliteID =
                switch index % 4 {
                case 0: String(format: "0194%04x-0000-7000-8000-%012x", index, index)
                case 1: String(format: "0194%04X-0000-7000-8000-%012X", index, index).uppercased()
                default: "conv-\(index)"
                }
            return Conversation(
                index: index,
                sqliteID: sqliteID,
                userID: "u-\(index % 50)",
                title: index % 5 == 0 ? "Title \(index) ✓" : nil,
                // Ten minutes before its first message; none for one in ten.
                createdAt: index % 10 == 3 ? nil : base + Int64(index) * 3_600_000_000 - 600_000_000,
                metadata: index % 2 == 0 ? #"{"app": "tutorial", "n": \#(index)}"# : nil
            )
        }
        let withMessages = (0..<conversationCount).filter { !empty.contains($0) }
        for number in 0..<(messageCount - 2) {
            let index = withMessages[number % withMessages.count]
            let k = conversations[index].messages.count
            var at = base + Int64(index) * 3_600_000_000 + Int64(k) * 60_000_000
            // Ties, which arrival (the SQLite ID) orders; and a late row with the earliest time.
            if index % 7 == 0, k == 2 { at -= 60_000_000 }
            if index % 11 == 0, k == 20 { at = base + Int64(index) * 3_600_000_000 - 30_000_000 }
            let timestamp: SQLiteValue
            switch number % 4 {
            case 0: timestamp = .text(sqliteTime(at))
            case 1: timestamp = .text(TestTime.rfc3339(microseconds: at, offsetHours: 2))
            case 2: timestamp = .integer(at / 1_000_000)
            default:
                at += 123_000
                timestamp = .integer(at / 1000)
            }
            let isUser = k % 2 == 0
            var role = isUser ? "user" : "assistant"
            if index % 17 == 0, k == 0 { role = "system" }
            let given = index % 13 == 0 ? (role == "user" ? "human" : role == "assistant" ? "ai" : role) : role
            let content =
                isUser
                ? "Question \(k) of \(index): über Ärger ✓"
                : "Answer \(k) of \(index)\nwith a second line, \"quotes\" and a tab\t."
            var message = Message(
                role: .text(given),
                content: .text(content),
                timestamp: timestamp,
                metadata: number % 9 == 0 ? .text(#"{"k": \#(k)}"#) : .null,
                expected: (role, content, at)
            )
            if index == 24, k == 1 { message.content = .blob(Array(content.utf8)) }
            conversations[index].messages.append(message)
        }

        func spoil(_ indexes: [Int], _ k: Int, _ reason: String, _ change: (inout Message) -> Void) {
            for index in indexes {
                change(&conversations[index].messages[k])
                conversations[index].messages[k].expected = nil
                conversations[index].messages[k].reason = reason
            }
        }
        spoil([1, 2, 3, 4, 5], 3, "invalid_role") { $0.role = .text("narrator") }
        spoil([6, 7, 8], 4, "invalid_utf8") { $0.content = .text([0x61, 0xC3, 0x28, 0x62]) }
        spoil([9, 10], 4, "invalid_utf8") { $0.content = .blob([0xFF, 0xFE, 0x41]) }
        spoil([11, 12, 13], 5, "nul_byte") { $0.content = .text([0x61, 0x00, 0x62]) }
        spoil([14, 15, 16], 6, "invalid_timestamp") { $0.timestamp = .text("next tuesday") }
        spoil([17, 18, 19], 7, "invalid_json") { $0.metadata = .text("{not json") }
        for index in [20, 26] {
            conversations[index].metadata = #"{"broken": "#
            conversations[index].reason = "invalid_json"
        }
        conversations[mismatched].reason = "user_mismatch"
        for k in conversations[mismatched].messages.indices {
            conversations[mismatched].messages[k].expected = nil
            conversations[mismatched].messages[k].reason = "user_mismatch"
        }
        conversations[conflicting].messages[0].expected = nil
        conversations[conflicting].messages[0].reason = "conflict"
        return conversations
    }

    /// The two messages of the fixture whose conversation is not in the file.
    static let orphans = ["ghost-1", "ghost-2"]

    /// Writes the fixture to a SQLite file, in file order round-robin as `fixture` spread it,
    /// and gives each message its SQLite ID.
    static func write(_ conversations: inout [Conversation], to path: String) throws {
        let database = try SQLiteDatabase(path: path, mode: .readWriteCreate)
        try database.execute(schema)
        try database.execute("BEGIN")
        let insertConversation = try database.prepare(
            "INSERT INTO conversations (id, user_id, title, created_at, metadata) VALUES (?1, ?2, ?3, ?4, ?5)"
        )
        for conversation in conversations {
            try insertConversation.run([
                .text(conversation.sqliteID), .text(conversation.userID), conversation.title.map { .text($0) } ?? .null,
                conversation.createdAt.map { .text(sqliteTime($0)) } ?? .null,
                conversation.metadata.map { .text($0) } ?? .null,
            ])
        }
        let insertMessage = try database.prepare(
            "INSERT INTO messages (conversation_id, role, content, timestamp, metadata) VALUES (?1, ?2, ?3, ?4, ?5)"
        )
        var nextID: Int64 = 1
        let longest = conversations.map(\.messages.count).max() ?? 0
        for k in 0..<longest {
            for index in conversations.indices where k < conversations[index].messages.count {
                let message = conversations[index].messages[k]
                try insertMessage.run([
                    .text(conversations[index].sqliteID), message.role, message.content, message.timestamp,
                    message.metadata,
                ])
                conversations[index].messages[k].sqliteID = nextID
                nextID += 1
            }
        }
        for orphan in orphans {
            try insertMessage.run([.text(orphan), .text("user"), .text("lost"), .text("2024-01-01 00:00:00"), .null])
        }
        try database.execute("COMMIT")
    }

    // MARK: What PostgreSQL should hold

    /// Each good message's row, in the conversation's order: `created_at`, then arrival.
    static func expectedRows(_ conversation: Conversation) -> [[String?]] {
        conversation.messages.filter { $0.expected != nil }
            .sorted { ($0.expected!.microseconds, $0.sqliteID) < ($1.expected!.microseconds, $1.sqliteID) }
            .map { message in
                let metadata: String? =
                    if case .text(let bytes) = message.metadata { String(decoding: bytes, as: UTF8.self) } else { nil }
                return [
                    ImportIDs.message(message.sqliteID, in: conversation.uuid).text, message.expected!.role,
                    message.expected!.content,
                    TestTime.utc(microseconds: message.expected!.microseconds), metadata, "0-\(message.sqliteID)",
                ]
            }
    }

    static let messageRows = """
        SELECT m.conversation_id::text, m.id::text, m.role, m.content, \(TestTime.sql("m.created_at")), m.metadata::text, m.stream_entry
        FROM messages AS m ORDER BY m.conversation_id, m.created_at, m.arrival
        """

    static let conversationRows = """
        SELECT c.id::text, c.user_id, c.title, \(TestTime.sql("c.created_at")), c.metadata ->> 'source_id',
            c.metadata ->> 'app', c.metadata ->> 'n', (SELECT count(*) FROM jsonb_object_keys(c.metadata))::text
        FROM conversations AS c
        """

    /// Everything in both tables, to see that a run changed nothing at all.
    static let everything = """
        SELECT (SELECT string_agg(c::text, E'\\n' ORDER BY c.id) FROM conversations AS c),
            (SELECT string_agg(m::text, E'\\n' ORDER BY m.id) FROM messages AS m)
        """

    // MARK: Reports

    /// The `conversation … [message …]: reason: …` lines of an output, as `sqlite ID|message|reason`.
    static func reported(_ output: String) -> [String] {
        output.split(separator: "\n").compactMap { line -> String? in
            guard line.hasPrefix("conversation ") else { return nil }
            let parts = line.dropFirst("conversation ".count).split(
                separator: ": ",
                maxSplits: 2,
                omittingEmptySubsequences: false
            )
            guard parts.count == 3 else { return nil }
            let ids = parts[0].split(separator: " message ")
            return "\(ids[0])|\(ids.count > 1 ? String(ids[1]) : "")|\(parts[1])"
        }
    }

    static func expectedReports(_ conversations: [Conversation]) -> [String] {
        var lines: [String] = []
        for conversation in conversations {
            if let reason = conversation.reason { lines.append("\(conversation.sqliteID)||\(reason)") }
            // A conversation row that fails keeps its messages out without a line each.
            guard conversation.reason == nil || conversation.index == mismatched else { continue }
            for message in conversation.messages {
                if let reason = message.reason {
                    lines.append("\(conversation.sqliteID)|\(message.sqliteID)|\(reason)")
                }
            }
        }
        let firstOrphan = Int64(messageCount - orphans.count + 1)
        for (offset, orphan) in orphans.enumerated() {
            lines.append("\(orphan)|\(firstOrphan + Int64(offset))|missing_field")
        }
        return lines.sorted()
    }

    /// The summary's counts line for `noun`: `messages: 1 imported, 2 already present, 3 reported`.
    static func counts(_ output: String, _ noun: String) -> String? {
        output.split(separator: "\n").first { $0.hasPrefix("\(noun): ") }.map(String.init)
    }

    // MARK: The test

    @Test func importsEveryGoodRowReportsEveryBadOneAndAddsNothingTheSecondTime() async throws {
        let directory = try TemporaryDirectory("sqlite-import")
        defer { directory.remove() }
        let path = directory.path + "/chat.db"
        var conversations = Self.fixture()
        try Self.write(&conversations, to: path)
        let good = conversations.filter { $0.reason == nil || $0.index == Self.mismatched }
        let goodMessages = conversations.filter { $0.reason == nil }.reduce(0) {
            $0 + $1.messages.filter { $0.expected != nil }.count
        }
        let reportedMessages = Self.messageCount - goodMessages
        let importedConversations = Self.conversationCount - 3

        try await TestEnvironment.with { environment in
            try await environment.migrate()
            // Before the import: a conversation of the file owned by someone else, and a message
            // of the file stored with other content.
            let intruder = conversations[Self.mismatched]
            let conflict = conversations[Self.conflicting]
            let conflictID = ImportIDs.message(conflict.messages[0].sqliteID, in: conflict.uuid).text
            let postgres = try await environment.postgres()
            try await postgres.withSession { session in
                _ = try session.query(
                    "INSERT INTO conversations (id, user_id, created_at, updated_at) VALUES ($1, 'intruder', now(), now())",
                    [intruder.uuid.text]
                )
                _ = try session.query(
                    "INSERT INTO conversations (id, user_id, created_at, updated_at) VALUES ($1, $2, '2030-01-01T00:00:00Z', now())",
                    [conflict.uuid.text, conflict.userID]
                )
                _ = try session.query(
                    """
                    INSERT INTO messages (id, conversation_id, role, content, created_at, stream_entry)
                    VALUES ($1, $2, 'user', 'stored before, differently', '2030-01-01T00:00:00Z', '1-0')
                    """,
                    [conflictID, conflict.uuid.text]
                )
            }
            postgres.close()
            let before = try await environment.rows(Self.everything)
            let expectedReports = Self.expectedReports(conversations)

            // A dry run: everything read and judged, nothing written.
            let dryRun = try await HistorianProcess.run(
                ["import", "sqlite", path, "--dry-run"],
                environment: environment.historianEnvironment
            )
            #expect(dryRun.status == 1, "\(dryRun.errors)")
            #expect(try await environment.rows(Self.everything) == before)
            #expect(Self.reported(dryRun.output).sorted() == expectedReports)
            #expect(
                Self.counts(dryRun.output, "messages")
                    == "messages: \(goodMessages) to import, 0 already present, \(reportedMessages) reported"
            )
            #expect(
                Self.counts(dryRun.output, "conversations")
                    == "conversations: \(importedConversations) to import, 0 already present, 3 reported"
            )
            #expect(dryRun.output.contains("dry run: nothing written"))

            // The import.
            let first = try await HistorianProcess.run(
                ["import", "sqlite", path],
                environment: environment.historianEnvironment
            )
            #expect(first.status == 1, "\(first.errors)")
            let rate = first.output.split(separator: "\n").first { $0.contains("messages read in") }.map(String.init)
            print(
                "SQLite import of \(Self.conversationCount) conversations, \(Self.messageCount) messages: \(rate ?? "no summary")"
            )
            #expect(Self.reported(first.output).sorted() == expectedReports)
            #expect(
                Self.counts(first.output, "messages")
                    == "messages: \(goodMessages) imported, 0 already present, \(reportedMessages) reported"
            )
            #expect(
                Self.counts(first.output, "conversations")
                    == "conversations: \(importedConversations) imported, 0 already present, 3 reported"
            )
            #expect(first.output.contains("progress: 100%"), "plain progress lines when the output is not a terminal")
            #expect(!first.output.contains("über Ärger"), "a report never shows content")
            #expect(
                first.output.contains(
                    "conversation conv-26: invalid_json: metadata is not a JSON object "
                        + "(its \(conversations[26].messages.count) messages are not imported)"
                )
            )

            // Every good message, in its conversation's order, with its IDs and columns.
            var stored: [String: [[String?]]] = [:]
            for row in try await environment.rows(Self.messageRows) {
                stored[row[0]!, default: []].append(Array(row[1...]))
            }
            #expect(stored.values.reduce(0) { $0 + $1.count } == goodMessages + 1)
            var mismatches = 0
            for conversation in good where conversation.index != Self.mismatched {
                var expected = Self.expectedRows(conversation)
                if conversation.index == Self.conflicting {
                    expected.append([
                        conflictID, "user", "stored before, differently", "2030-01-01T00:00:00.000000Z", nil, "1-0",
                    ])
                }
                let rows = stored[conversation.uuid.text] ?? []
                if rows != expected, mismatches < 3 {
                    mismatches += 1
                    Issue.record(
                        "conversation \(conversation.sqliteID): stored \(rows.prefix(3)) …, expected \(expected.prefix(3)) …"
                    )
                }
            }
            #expect(mismatches == 0)
            #expect(stored[intruder.uuid.text] == nil)

            // Every good conversation, with its owner, title, created_at and metadata.
            var rows: [String: [String?]] = [:]
            for row in try await environment.rows(Self.conversationRows) { rows[row[0]!] = Array(row[1...]) }
            #expect(rows.count == importedConversations + 1)
            #expect(rows[intruder.uuid.text]?[0] == "intruder")
            mismatches = 0
            for conversation in good where conversation.index != Self.mismatched {
                let messages = conversation.messages.filter { $0.expected != nil }
                let firstUser = messages.filter { $0.expected!.role == "user" }
                    .min { ($0.expected!.microseconds, $0.sqliteID) < ($1.expected!.microseconds, $1.sqliteID) }
                let createdAt = ([conversation.createdAt] + messages.map { $0.expected!.microseconds }).compactMap {
                    $0
                }.min()
                let keys = (conversation.metadata == nil ? 0 : 2) + (conversation.isUUID ? 0 : 1)
                let expected: [String?] = [
                    conversation.userID,
                    conversation.title ?? firstUser.map { Title.derive(from: $0.expected!.content)! },
                    createdAt.map { TestTime.utc(microseconds: $0) },
                    conversation.isUUID ? nil : conversation.sqliteID,
                    conversation.metadata == nil ? nil : "tutorial",
                    conversation.metadata == nil ? nil : String(conversation.index),
                    String(keys),
                ]
                if rows[conversation.uuid.text] != expected, mismatches < 3 {
                    mismatches += 1
                    Issue.record(
                        "conversation \(conversation.sqliteID): \(rows[conversation.uuid.text] ?? []), expected \(expected)"
                    )
                }
            }
            #expect(mismatches == 0)

            // Redis: not touched.
            let redis = try await environment.redis()
            #expect(try await redis.send("DBSIZE").int == 0)
            redis.close()

            // Again: nothing added, nothing changed, the same rows reported.
            let imported = try await environment.rows(Self.everything)
            let second = try await HistorianProcess.run(
                ["import", "sqlite", path],
                environment: environment.historianEnvironment
            )
            #expect(second.status == 1, "\(second.errors)")
            #expect(try await environment.rows(Self.everything) == imported)
            #expect(Self.reported(second.output).sorted() == expectedReports)
            #expect(
                Self.counts(second.output, "messages")
                    == "messages: 0 imported, \(goodMessages) already present, \(reportedMessages) reported"
            )
            #expect(
                Self.counts(second.output, "conversations")
                    == "conversations: 0 imported, \(importedConversations) already present, 3 reported"
            )
            let dryAgain = try await HistorianProcess.run(
                ["import", "sqlite", path, "--dry-run"],
                environment: environment.historianEnvironment
            )
            #expect(
                Self.counts(dryAgain.output, "messages")
                    == "messages: 0 to import, \(goodMessages) already present, \(reportedMessages) reported"
            )
        }
    }

    /// A file with nothing wrong in it imports with status 0; one that is missing or not of the
    /// tutorial schema stops the import with status 2, before anything is written.
    @Test func exitStatuses() async throws {
        let directory = try TemporaryDirectory("sqlite-import")
        defer { directory.remove() }
        let path = directory.path + "/chat.db"
        do {
            let database = try SQLiteDatabase(path: path, mode: .readWriteCreate)
            try database.execute(Self.schema)
            try database.execute(
                """
                INSERT INTO conversations (id, user_id, title) VALUES ('c-1', 'u-1', NULL), ('c-2', 'u-2', 'Empty');
                INSERT INTO messages (conversation_id, role, content) VALUES ('c-1', 'human', 'Hello there'), ('c-1', 'ai', 'Hi!');
                """
            )
        }
        // A variant of the tutorial without titles or metadata.
        let minimal = directory.path + "/minimal.db"
        do {
            let database = try SQLiteDatabase(path: minimal, mode: .readWriteCreate)
            try database.execute(
                """
                CREATE TABLE conversations (id TEXT PRIMARY KEY, user_id TEXT);
                CREATE TABLE messages (id INTEGER PRIMARY KEY, conversation_id TEXT, role TEXT, content TEXT, timestamp INTEGER);
                INSERT INTO conversations VALUES ('c-3', 'u-3');
                INSERT INTO messages VALUES (1, 'c-3', 'user', 'Short and sweet', 1705314600);
                """
            )
        }
        let other = directory.path + "/other.db"
        do {
            let database = try SQLiteDatabase(path: other, mode: .readWriteCreate)
            try database.execute("CREATE TABLE conversations (id TEXT PRIMARY KEY, owner TEXT)")
        }
        try await TestEnvironment.with { environment in
            let run = try await HistorianProcess.run(
                ["import", "sqlite", path, "--batch-size", "1"],
                environment: environment.historianEnvironment
            )
            #expect(run.status == 0, "\(run.output)\(run.errors)")
            #expect(Self.counts(run.output, "messages") == "messages: 2 imported, 0 already present, 0 reported")
            #expect(
                Self.counts(run.output, "conversations") == "conversations: 2 imported, 0 already present, 0 reported"
            )
            #expect(
                try await environment.rows(
                    "SELECT title, (SELECT count(*) FROM messages AS m WHERE m.conversation_id = c.id)::text FROM conversations AS c ORDER BY title"
                )
                    == [["Empty", "0"], ["Hello there", "2"]]
            )
            let short = try await HistorianProcess.run(
                ["import", "sqlite", minimal],
                environment: environment.historianEnvironment
            )
            #expect(short.status == 0, "\(short.output)\(short.errors)")
            #expect(
                try await environment.rows(
                    "SELECT title, user_id FROM conversations WHERE metadata ->> 'source_id' = 'c-3'"
                )
                    == [["Short and sweet", "u-3"]]
            )
            for (file, says) in [
                (directory.path + "/missing.db", "unable to open"), (other, "not a store of the tutorial schema"),
            ] {
                let failed = try await HistorianProcess.run(
                    ["import", "sqlite", file],
                    environment: environment.historianEnvironment
                )
                #expect(failed.status == 2)
                #expect(failed.errors.contains(says), "\(failed.errors)")
            }
            #expect(try await environment.scalar("SELECT count(*) FROM messages") == 3)
        }
    }
}
