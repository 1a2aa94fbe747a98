import Foundation
@testable import Historian
import PostgresClient
import Testing

/// The two store functions against a real PostgreSQL: `historian_store_new` must leave exactly
/// what `historian_store_checked` leaves, and hand anything unusual to it.
@Suite(.serialized)
struct MessageStoreTests {
    /// Conversations with out-of-order, tied and explicit-title messages, contexts and metadata,
    /// delivered in three units so later units change titles and creation times.
    static func units() -> [[IncomingMessage]] {
        var random = SystemRandomNumberGenerator()
        let conversations = (0..<6).map { _ in CanonicalUUID(UUID().uuidString)! }
        let base = Timestamp(milliseconds: 1_780_000_000_000)
        var sequence: UInt64 = 0
        func message(
            _ conversation: Int,
            _ role: Role,
            _ content: String,
            at offset: Int64,
            title: String? = nil,
            metadata: String? = nil,
            contexts: String? = nil
        ) -> IncomingMessage {
            sequence += 1
            return IncomingMessage(
                entryID: StreamID(milliseconds: 1_780_000_000_000, sequence: sequence),
                id: CanonicalUUID(UUID().uuidString.lowercased())!,
                conversationID: conversations[conversation],
                userID: "user-\(conversation % 3)",
                role: role,
                content: content,
                createdAt: Timestamp(microseconds: base.microseconds + offset * 1000),
                sessionID: conversation % 2 == 0 ? "s-\(conversation)" : nil,
                deptID: conversation == 1 ? "d-1" : nil,
                title: title,
                tokensUsed: role == .assistant ? Int32.random(in: 0...4000, using: &random) : nil,
                latencyMs: role == .assistant ? 120 : nil,
                metadata: metadata,
                contexts: contexts
            )
        }
        let contexts = #"[{"doc_id":"d1","content":"Tab\there, \"quoted\" \\ backslash","score":0.5},{"doc_id":"d2","metadata":{"k":[1,2]}},{"doc_id":"d3","metadata":"not an object"}]"#
        let first: [IncomingMessage] = [
            message(0, .user, "How do I request vacation?\nSecond line", at: 10),
            message(0, .assistant, "Open the portal.", at: 20, metadata: #"{"model":"m-1","t":[1,2.5,"x"]}"#, contexts: contexts),
            message(1, .assistant, "Hello! I am the assistant.", at: 5),
            message(1, .user, "Late-arriving user line ✓ with emoji 🚀", at: 30),
            message(2, .system, "system prompt", at: 1, title: "Explicit 1"),
            message(2, .user, "user asks", at: 2),
            message(2, .user, "same time as the last", at: 2, title: "Explicit 2"),
            message(3, .user, "   spaced    words\tand tabs \\ backslash   ", at: 50),
            message(4, .tool, #"{"tool":"output","quote":"\""}"#, at: 40),
        ]
        let second: [IncomingMessage] = [
            message(0, .user, "An earlier user message names the conversation now", at: 5),
            message(1, .user, "another user line", at: 3),
            message(3, .assistant, "reply", at: 60, metadata: "{}"),
            message(4, .user, "first user message of conversation four", at: 45),
            message(5, .user, "brand new conversation", at: 70),
        ]
        let third: [IncomingMessage] = [
            message(0, .assistant, "tie one", at: 80),
            message(0, .assistant, "tie two", at: 80),
            message(2, .user, "no title change: explicit titles stay", at: 0),
            message(3, .user, "", at: 55),
            message(5, .assistant, "title now explicit", at: 71, title: "Explicit 5"),
            // What the direct path's elements, built in Swift, must escape and print exactly as
            // PostgreSQL does: control bytes, quotes, backslashes, characters JSON leaves alone,
            // and metadata that `jsonb` rewrites (key order, a duplicate, numbers, escapes).
            message(
                4, .assistant, "controls \u{01}\u{08}\u{0C}\r\u{1F} del \u{7F} separator \u{2028} \"q\" \\ / é",
                at: 90,
                metadata: #"{"b":1,"a":1.50,"a":2,"e":1E3,"s":"\u00e9\/\"","n":null,"t":true,"arr":[ 1 , {"z":0,"y":[]} ]}"#
            ),
        ]
        return [first, second, third]
    }

    /// Everything both paths write, as text, in a stable order (arrival numbers are compared as
    /// an order, not as values).
    static func snapshot(_ session: PostgresSession) throws -> [String] {
        var lines: [String] = []
        let conversations = try session.query(
            """
            SELECT id, user_id, dept_id, title, title_derived_from, created_at, cache_version, metadata
            FROM conversations ORDER BY id
            """
        )
        lines += conversations.rows.map { "c " + $0.map { $0 ?? "∅" }.joined(separator: "|") }
        let messages = try session.query(
            """
            SELECT id, conversation_id, role, content, tokens_used, latency_ms, created_at, metadata, session_id,
                stream_entry, row_number() OVER (PARTITION BY conversation_id ORDER BY created_at, arrival)
            FROM messages ORDER BY conversation_id, created_at, arrival
            """
        )
        lines += messages.rows.map { "m " + $0.map { $0 ?? "∅" }.joined(separator: "|") }
        let contexts = try session.query(
            "SELECT id, message_id, position, doc_id, content, score, metadata FROM message_contexts ORDER BY id"
        )
        lines += contexts.rows.map { "x " + $0.map { $0 ?? "∅" }.joined(separator: "|") }
        return lines
    }

    static func migrated(_ environment: TestEnvironment, database: String) async throws -> PostgresConnection {
        try await environment.postgresServer.createDatabase(database)
        let connection = try await PostgresConnection.connect(
            conninfo: environment.postgresServer.url(database: database),
            logger: environment.logger
        )
        try await Schema.migrate(connection, logger: environment.logger)
        try await connection.withSession { try MessageStore.prepare($0) }
        return connection
    }

    @Test("preparing a connection for the store fails at once on a database without the schema")
    func prepareChecksTheSchema() async throws {
        try await TestEnvironment.with { environment in
            try await environment.postgresServer.createDatabase("unmigrated")
            let connection = try await PostgresConnection.connect(
                conninfo: environment.postgresServer.url(database: "unmigrated"),
                logger: environment.logger
            )
            defer { connection.close() }
            let error = await #expect(throws: PostgresError.self) {
                try await connection.withSession { try MessageStore.prepare($0) }
            }
            #expect(error?.sqlState == "42883", "undefined function, got \(String(describing: error))")
        }
    }

    /// The report of a unit that was stored (not found archived).
    static func stored(_ outcome: MessageStore.Outcome) throws -> MessageStore.Report {
        guard case .stored(let report) = outcome else { throw FoundArchived() }
        return report
    }

    struct FoundArchived: Error {}

    @Test("both store functions leave identical rows and cache deltas; new messages take historian_store_new")
    func pathsAgree() async throws {
        try await TestEnvironment.with { environment in
            let direct = try await Self.migrated(environment, database: "direct")
            let staged = try await Self.migrated(environment, database: "staged")
            defer {
                direct.close()
                staged.close()
            }
            var builtInSwift: [String: [[UInt8]]] = [:]
            for (number, unit) in Self.units().enumerated() {
                let viaDirect = try Self.stored(try await direct.withSession { try MessageStore.store(unit, in: $0) })
                for write in viaDirect.cacheWrites {
                    builtInSwift[write.conversationID, default: []] += write.elements.map { Array($0.utf8) }
                }
                let viaStaged = try Self.stored(try await staged.withSession { try MessageStore.storeChecked(unit, in: $0) })
                #expect(viaDirect.path == .new, "unit \(number) was turned away by historian_store_new")
                #expect(viaStaged.path == .checked)
                #expect(viaDirect.results == viaStaged.results, "unit \(number)")
                #expect(viaDirect.results.count == unit.count)
                #expect(Set(viaDirect.results.values) == [.stored])
                #expect(viaDirect.cacheWrites == viaStaged.cacheWrites, "unit \(number): cache deltas differ")
            }
            // The elements built in Swift are, byte for byte, those PostgreSQL builds for a
            // rebuild (`json_build_object`), control bytes, escapes and `jsonb` rewrites included.
            let conversations = builtInSwift.keys.sorted()
            let rebuilt = try await direct.withSession { try RecentCache.snapshots(of: conversations, size: 1000, in: $0) }
            #expect(rebuilt.count == conversations.count)
            for snapshot in rebuilt {
                let swift = Set(builtInSwift[snapshot.conversationID] ?? [])
                let postgres = Set(snapshot.elements.map { Array($0.utf8) })
                let differing = swift.subtracting(postgres).map { String(decoding: $0, as: UTF8.self) }
                #expect(swift.count == postgres.count && differing.isEmpty, "conversation \(snapshot.conversationID): \(differing)")
            }
            let directRows = try await direct.withSession { try Self.snapshot($0) }
            let stagedRows = try await staged.withSession { try Self.snapshot($0) }
            #expect(directRows.count == 6 + 20 + 3)
            #expect(directRows == stagedRows, "first difference: \(zip(directRows, stagedRows).first { $0 != $1 }.map { "\($0.0) / \($0.1)" } ?? "-")")
            // The titles the contract asks for, spelled out.
            let titles = try await direct.withSession {
                try $0.query("SELECT title FROM conversations ORDER BY created_at").rows.map { $0[0] ?? "∅" }
            }
            #expect(titles.contains("An earlier user message names the conversation now"))
            #expect(titles.contains("Explicit 2"))
            #expect(titles.contains("Explicit 5"))
            #expect(titles.contains("first user message of conversation four"))
        }
    }

    @Test("redeliveries, conflicts and other owners leave the direct path and are judged like before")
    func unusualUnitsFallBack() async throws {
        try await TestEnvironment.with { environment in
            let connection = try await Self.migrated(environment, database: "fallback")
            defer { connection.close() }
            let units = Self.units()
            _ = try await connection.withSession { try MessageStore.store(units[0], in: $0) }
            let before = try await connection.withSession { try Self.snapshot($0) }

            // The whole unit again: every message is already stored, nothing changes.
            let again = try Self.stored(try await connection.withSession { try MessageStore.store(units[0], in: $0) })
            #expect(again.path == .checked)
            #expect(again.results.count == units[0].count)
            #expect(Set(again.results.values) == [.alreadyStored])
            #expect(again.cacheWrites.isEmpty)
            #expect(try await connection.withSession { try Self.snapshot($0) } == before)
            // The functions allow cached plans (and forbid sequential scans) for their own
            // statements only, also when they roll back; the connection's statements are still
            // planned on every call, with every plan allowed.
            #expect(try await Self.settings(connection) == ["force_custom_plan", "on"])

            // One new message beside one with another user and one conflicting redelivery.
            var fresh = units[1][0]
            var stranger = units[1][1]
            stranger.userID = "someone-else"
            var conflicting = units[0][0]
            conflicting.content = "changed content"
            let mixed = try Self.stored(try await connection.withSession { try MessageStore.store([fresh, stranger, conflicting], in: $0) })
            #expect(mixed.path == .checked)
            #expect(mixed.results[fresh.id] == .stored)
            #expect(mixed.results[stranger.id] == .userMismatch)
            #expect(mixed.results[conflicting.id] == .conflict)
            let stored = try await connection.withSession {
                try $0.query("SELECT content FROM messages WHERE id = $1", [conflicting.id.text]).rows.first?.first ?? nil
            }
            #expect(stored == units[0][0].content)

            // A new conversation whose second message comes from another user: the first owns it.
            fresh = units[1][4]
            var intruder = units[2][4]
            intruder.userID = "intruder"
            let newConversation = try Self.stored(try await connection.withSession { try MessageStore.store([fresh, intruder], in: $0) })
            #expect(newConversation.path == .checked)
            #expect(newConversation.results[fresh.id] == .stored)
            #expect(newConversation.results[intruder.id] == .userMismatch)
        }
    }

    @Test("the store function's cached plans look rows up by key, whatever the statistics said when they were made")
    func cachedPlansLookUpByKey() async throws {
        try await TestEnvironment.with { environment in
            let connection = try await Self.migrated(environment, database: "plans")
            defer { connection.close() }
            // A few conversations, and statistics that say so, as autovacuum leaves them early
            // on. Each statement's generic plan is made now, as the plan cache would make it,
            // with the settings the function runs with.
            _ = try await connection.withSession { try MessageStore.store(Self.units()[0], in: $0) }
            try await connection.execute("ANALYZE conversations")
            let types = StoreFunctions.newParameterTypes.joined(separator: ", ")
            let arguments = StoreFunctions.newParameterTypes.map { _ in "'{}'" }.joined(separator: ", ")
            func plan(_ sql: String) async throws -> String {
                try await connection.withSession { session in
                    try session.execute("BEGIN")
                    defer {
                        _ = try? session.execute("ROLLBACK")
                        _ = try? session.execute("DEALLOCATE checked_statement")
                    }
                    try session.execute("SET LOCAL enable_seqscan = off")
                    try session.execute("SET LOCAL plan_cache_mode = force_generic_plan")
                    try session.execute("PREPARE checked_statement (\(types)) AS \(sql)")
                    return try session.query("EXPLAIN EXECUTE checked_statement (\(arguments))").rows
                        .compactMap { $0.first ?? nil }.joined(separator: "\n")
                }
            }
            /// Whether every scan of a table is an index lookup with a condition.
            func looksUpByKey(_ plan: String) -> Bool {
                let scans = plan.components(separatedBy: " Scan using ").count + plan.components(separatedBy: "Bitmap Index Scan on ").count - 1
                return !plan.contains("Seq Scan") && scans == plan.components(separatedBy: "Index Cond:").count
            }
            for statement in StoreFunctions.newStatements {
                let cached = try await plan(statement)
                #expect(looksUpByKey(cached), "\(statement): \(cached)")
            }
            // Why the update also names its conversations in an `= ANY` condition: joined only
            // to the array, its generic plan reads every conversation, even without
            // sequential scans (a hash join, or a nested loop, over the whole index).
            let joinedOnly = try await plan(
                "UPDATE conversations AS c SET cache_version = c.cache_version FROM unnest($13) AS t (id) WHERE c.id = t.id"
            )
            #expect(joinedOnly.contains("conversations_pkey on conversations"))
            #expect(!looksUpByKey(joinedOnly), "\(joinedOnly)")
        }
    }

    /// `plan_cache_mode` and `enable_seqscan` of the connection's session.
    static func settings(_ connection: PostgresConnection) async throws -> [String?] {
        try await connection.query(
            "SELECT current_setting('plan_cache_mode'), current_setting('enable_seqscan')"
        ).rows.first ?? []
    }

    @Test("concurrent writers sharing conversations neither deadlock nor lose a version")
    func concurrentWritersShareConversations() async throws {
        try await TestEnvironment.with { environment in
            let first = try await Self.migrated(environment, database: "concurrent")
            let second = try await PostgresConnection.connect(
                conninfo: environment.postgresServer.url(database: "concurrent"),
                logger: environment.logger
            )
            try await second.withSession { try MessageStore.prepare($0) }
            defer {
                first.close()
                second.close()
            }
            // 40 conversations; every unit touches all of them, in its own shuffled order, so
            // two writers that locked them in arrival order would deadlock at once.
            let conversations = (0..<40).map { _ in CanonicalUUID(UUID().uuidString.lowercased())! }
            var sequence: UInt64 = 0
            func unit() -> [IncomingMessage] {
                conversations.shuffled().map { conversation in
                    sequence += 1
                    return IncomingMessage(
                        entryID: StreamID(milliseconds: 1_780_000_000_000, sequence: sequence),
                        id: CanonicalUUID(UUID().uuidString.lowercased())!,
                        conversationID: conversation,
                        userID: "owner",
                        role: .user,
                        content: "message \(sequence)",
                        createdAt: Timestamp(milliseconds: 1_780_000_000_000 + Int64(sequence))
                    )
                }
            }
            let unitsPerWriter = 25
            let work = [(0..<unitsPerWriter).map { _ in unit() }, (0..<unitsPerWriter).map { _ in unit() }]
            try await withThrowingTaskGroup(of: Void.self) { group in
                for (connection, units) in zip([first, second], work) {
                    group.addTask {
                        for unit in units {
                            let report = try Self.stored(try await connection.withSession { try MessageStore.store(unit, in: $0) })
                            #expect(Set(report.results.values) == [.stored])
                        }
                    }
                }
                try await group.waitForAll()
            }
            let rows = try await first.query(
                "SELECT count(*), min(cache_version), max(cache_version) FROM conversations"
            ).rows
            #expect(rows.first?.map { $0 ?? "∅" } == ["40", String(2 * unitsPerWriter), String(2 * unitsPerWriter)])
            let messages = try await first.query("SELECT count(*) FROM messages").rows.first?.first ?? nil
            #expect(messages == String(2 * unitsPerWriter * conversations.count))
            // Every title comes from its conversation's earliest message, whichever writer's
            // unit committed first.
            let wrongTitles = try await first.query(
                """
                SELECT c.id FROM conversations AS c
                WHERE c.title IS DISTINCT FROM (
                    SELECT m.content FROM messages AS m WHERE m.conversation_id = c.id ORDER BY m.created_at LIMIT 1)
                """
            ).rows
            #expect(wrongTitles.isEmpty)
        }
    }
}
