import Foundation
import Historian
import RedisClient
import Testing

/// `run --dry-run` and `check` against real servers.
@Suite(.serialized)
struct CommandTests {
    /// Everything a dry run must leave as it found: row counts, every Redis key with its type,
    /// length and content digest, and the group's pending and last-delivered state.
    static func snapshot(_ environment: TestEnvironment) async throws -> [String] {
        var lines: [String] = []
        for table in ["conversations", "messages", "message_contexts", "archived_conversations", "historian_schema_migrations"] {
            let present = try await environment.scalar("SELECT count(*) FROM pg_tables WHERE tablename = '\(table)'")
            let count = present == 1 ? try await environment.scalar("SELECT count(*) FROM \(table)") : -1
            lines.append("table \(table): \(count)")
        }
        let presentConversations = try await environment.scalar("SELECT count(*) FROM pg_tables WHERE tablename = 'conversations'")
        if presentConversations == 1 {
            let latest = try await environment.rows("SELECT max(updated_at)::text FROM conversations").first?.first ?? nil
            lines.append("max(updated_at): \(latest ?? "-")")
        }
        let redis = try await environment.redis()
        defer { redis.close() }
        let keys = try await redis.send("KEYS", "*").array?.compactMap(\.string).sorted() ?? []
        for key in keys {
            let type = try await redis.send("TYPE", RedisArgument(key)).string ?? "?"
            let ttl = try await redis.send("PTTL", RedisArgument(key)).int ?? 0
            let dump = try await redis.send("DUMP", RedisArgument(key)).bytes ?? []
            lines.append("key \(key) \(type) ttl:\(ttl > 0 ? "set" : "\(ttl)") dump:\(dump.count):\(dump.hashValue)")
        }
        let groups = keys.contains("chat:messages") ? try await redis.send("XINFO", "GROUPS", "chat:messages").array ?? [] : []
        for group in groups {
            lines.append("group \(group)")
        }
        if !groups.isEmpty {
            let pending = try await redis.send("XPENDING", "chat:messages", "historian", "-", "+", "1000")
            lines.append("pending \((pending.array ?? []).map { $0.array?.prefix(2).map { "\($0)" } ?? [] })")
            for consumer in try await redis.send("XINFO", "CONSUMERS", "chat:messages", "historian").array ?? [] {
                let info = consumer.array ?? []
                // Idle times move on their own; names and pending counts must not.
                lines.append("consumer \(info.count > 3 ? "\(info[1]) \(info[3])" : "\(consumer)")")
            }
        }
        return lines
    }

    @Test("dry run writes nothing and names the right outcome for each entry")
    func dryRun() async throws {
        try await TestEnvironment.with { environment in
            let redis = try await environment.redis()
            defer { redis.close() }
            let stored = Producer.workload(count: 20, conversations: 4, seed: 3)
            try await Producer.append(stored, redis: redis)
            let first = try await HistorianProcess.run(["run", "--once"], environment: environment.historianEnvironment)
            #expect(first.status == 0, "\(first.errors)")

            // Waiting now: a replay of a stored message, a conflicting one, new messages (one
            // opening a new conversation), an invalid one and one by another user.
            let new = Producer.workload(count: 3, conversations: 3, seed: 4)
            var conflicting = stored[1]
            conflicting.content = "something else"
            var intruder = Producer.workload(count: 1, conversations: 1, seed: 5)[0]
            intruder.conversationID = stored[0].conversationID
            intruder.userID = "someone-else"
            let waiting: [[(String, String)]] =
                [stored[0].fields, conflicting.fields] + new.map(\.fields)
                + [[("message_id", "not-a-uuid"), ("conversation_id", stored[0].conversationID), ("user_id", "u"), ("role", "user"), ("content", "x")]]
                + [intruder.fields]
            // A pending entry too: delivered to a consumer that has not finished it.
            let pendingIDs = try await Producer.append(Producer.workload(count: 1, conversations: 1, seed: 6), redis: redis)
            _ = try await redis.send("XREADGROUP", "GROUP", "historian", "stuck", "COUNT", "1", "STREAMS", "chat:messages", ">")
            let ids = try await Producer.appendRaw(waiting, redis: redis)

            let before = try await Self.snapshot(environment)
            let dryRun = try await HistorianProcess.run(["run", "--dry-run", "--once"], environment: environment.historianEnvironment)
            let after = try await Self.snapshot(environment)
            #expect(dryRun.status == 0, "\(dryRun.errors)")
            #expect(before == after)

            func verdict(_ id: String) -> String? {
                dryRun.output.split(separator: "\n").first { $0.hasPrefix(id + " ") }
                    .map { $0.split(separator: " ", omittingEmptySubsequences: true)[1] }.map(String.init)
            }
            #expect(verdict(ids[0]) == "already-stored")
            #expect(verdict(ids[1]) == "dead-letter")
            #expect(dryRun.output.contains("\(ids[1])  dead-letter") && dryRun.output.contains("conflict:"))
            #expect(verdict(ids[2]) == "store")
            #expect(verdict(ids[3]) == "store")
            #expect(verdict(ids[4]) == "store")
            #expect(dryRun.output.contains("\(ids[2])  store") && dryRun.output.contains("(new conversation)"))
            #expect(verdict(ids[5]) == "dead-letter")
            #expect(dryRun.output.contains("invalid_uuid"))
            #expect(verdict(ids[6]) == "dead-letter")
            #expect(dryRun.output.contains("user_mismatch"))
            #expect(verdict(pendingIDs[0]) == "store")
            #expect(dryRun.output.contains("[pending]"))
            #expect(dryRun.output.contains("summary: 8 entries: 4 store, 1 already-stored, 3 dead-letter"))
            // No message body in the report.
            #expect(!dryRun.output.contains("something else"))

            // A run then does what the dry run said.
            let run = try await HistorianProcess.run(["run", "--once"], environment: environment.historianEnvironment)
            #expect(run.status == 0)
            #expect(try await deadLetterCount(redis) == 3)
        }
    }

    @Test("dry run on an empty database migrates nothing and creates no group")
    func dryRunOnEmptyDatabase() async throws {
        try await TestEnvironment.with { environment in
            let redis = try await environment.redis()
            defer { redis.close() }
            let ids = try await Producer.append(Producer.workload(count: 3, conversations: 1, seed: 7), redis: redis)
            let before = try await Self.snapshot(environment)
            let dryRun = try await HistorianProcess.run(["run", "--dry-run", "--once"], environment: environment.historianEnvironment)
            #expect(dryRun.status == 0, "\(dryRun.errors)")
            #expect(try await Self.snapshot(environment) == before)
            #expect(dryRun.output.contains("run would migrate it first"))
            #expect(dryRun.output.contains("group historian does not exist"))
            #expect(dryRun.output.contains("\(ids[0])  store"))
            #expect(try await environment.scalar("SELECT count(*) FROM pg_tables WHERE tablename = 'messages'") == 0)
        }
    }

    @Test("check exits 0 when healthy and 1, naming the problem, when PostgreSQL is down")
    func check() async throws {
        try await TestEnvironment.with { environment in
            let unmigrated = try await HistorianProcess.run(["check"], environment: environment.historianEnvironment)
            #expect(unmigrated.status == 1)
            #expect(unmigrated.output.contains("problem: schema: not created"))

            try await environment.migrate()
            let redis = try await environment.redis()
            defer { redis.close() }
            try await Producer.append(Producer.workload(count: 5, conversations: 1, seed: 8), redis: redis)
            _ = try await redis.send("XGROUP", "CREATE", "chat:messages", "historian", "0")

            let healthy = try await HistorianProcess.run(["check"], environment: environment.historianEnvironment)
            #expect(healthy.status == 0, "\(healthy.output)")
            #expect(healthy.output.contains("ok: schema version \(Schema.currentVersion)"))
            #expect(healthy.output.contains("ok: stream chat:messages: 5 entries"))
            #expect(healthy.output.contains("lag 5"))
            #expect(healthy.output.contains("ok: archive_dir \(environment.archiveDir) is writable"), "\(healthy.output)")

            // An archive directory that cannot be made: a file stands where a parent should be.
            let blocker = environment.archiveDir + "-file"
            #expect(FileManager.default.createFile(atPath: blocker, contents: Data("x".utf8)))
            defer { try? FileManager.default.removeItem(atPath: blocker) }
            var blocked = environment.historianEnvironment
            blocked["HISTORIAN_ARCHIVE_DIR"] = blocker + "/archive"
            let unwritable = try await HistorianProcess.run(["check"], environment: blocked)
            #expect(unwritable.status == 1)
            #expect(unwritable.output.contains("problem: archive_dir \(blocker)/archive: \(blocker) is not a directory"), "\(unwritable.output)")

            try await environment.postgresServer.stop()
            let down = try await HistorianProcess.run(["check"], environment: environment.historianEnvironment)
            #expect(down.status == 1)
            #expect(down.output.contains("problem: PostgreSQL unreachable"))
            #expect(down.output.contains("ok: Redis reachable"))
        }
    }

    @Test("no password reaches check's output or the logs")
    func secretsStayHidden() async throws {
        try await TestEnvironment.with { environment in
            var variables = environment.historianEnvironment
            variables["HISTORIAN_REDIS_URL"] = "redis://user:s3cret-redis@127.0.0.1:\(environment.redisServer.port)"
            variables["HISTORIAN_POSTGRES_URL"] = "postgresql://historian:s3cret-pg@127.0.0.1:1/historian"
            let result = try await HistorianProcess.run(["check"], environment: variables)
            #expect(result.status == 1)
            #expect(!result.output.contains("s3cret"))
            #expect(!result.errors.contains("s3cret"))
            #expect(result.output.contains("redis_url = redis://user:***@127.0.0.1"))
        }
    }
}
