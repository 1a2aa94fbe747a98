import Foundation
import Historian
import PostgresClient
import RedisClient
import Testing

/// The write-behind core against real servers: stream in, PostgreSQL out, exactly once.
@Suite(.serialized)
struct IngestTests {
    /// Appends `messages`, stores them with `run --once` and these options at debug level, checks
    /// that every one is stored, and returns the batches the daemon logged.
    static func storeOnce(
        _ messages: [TestMessage],
        options: [String],
        in environment: TestEnvironment
    ) async throws -> [(entries: Int, bytes: Int)] {
        let redis = try await environment.redis()
        defer { redis.close() }
        try await Producer.append(messages, redis: redis)
        let run = try await HistorianProcess.run(
            ["run", "--once", "--log-level", "debug"] + options,
            environment: environment.historianEnvironment
        )
        #expect(run.status == 0, "\(run.errors)")
        try await expectStored(messages, in: environment)
        return batchesDone(run.errors)
    }

    @Test(
        "20,000 messages, 200 conversations, 2 processes × 2 workers, as deploy/'s Redis user and PostgreSQL runtime role: each stored once, byte-identical; FLUSHALL, CONFIG, DROP TABLE refused"
    )
    func twoProcessesTwoWorkers() async throws {
        // Least privilege: Redis under deploy/redis-acl.conf (the frontend user writes, the
        // historian user runs), PostgreSQL under deploy/postgres-roles.sql (the owner role
        // migrates, the runtime role runs).
        try await TestEnvironment.with(leastPrivilege: true) { environment in
            try await environment.migrate()
            let messages = Producer.workload(count: 20_000, conversations: 200)
            let redis = try await environment.redis()
            defer { redis.close() }
            let frontend = try await RedisConnection.connect(
                RedisConfiguration(
                    url: LeastPrivilege.redisURL(
                        environment.redisServer,
                        user: "frontend",
                        password: LeastPrivilege.frontendPassword
                    )
                ),
                logger: environment.logger
            )
            defer { frontend.close() }
            try await Producer.append(messages, redis: frontend)

            let started = ContinuousClock.now
            let processes = try ["a", "b"].map { name in
                try HistorianProcess(
                    ["run", "--workers", "2", "--consumer", "test-\(name)"],
                    environment: environment.historianEnvironment
                )
            }
            try await eventually("all 20,000 messages stored and acknowledged", timeout: .seconds(300)) {
                let stored = try await environment.scalar("SELECT count(*) FROM messages")
                let pending = try await environment.pendingCount()
                return stored == messages.count && pending == 0
            }
            let elapsed = ContinuousClock.now - started
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            print("ingest: \(messages.count) messages in \(elapsed) (\(Int(Double(messages.count) / seconds)) messages/s)")

            for process in processes { process.signal(SIGTERM) }
            for process in processes {
                let status = try await process.wait(timeout: .seconds(30))
                #expect(status == 0, "\(process.errorOutput)")
            }
            try await expectStored(messages, in: environment)
            #expect(try await environment.pendingCount() == 0)
            #expect(try await deadLetterCount(redis) == 0)
            // Both processes did share the work.
            let consumers = try await redis.send("XINFO", "CONSUMERS", "chat:messages", "historian")
            #expect((consumers.array ?? []).count == 4)

            try await Self.expectLeastPrivilege(environment, frontend: frontend, sample: messages[0])
        }
    }

    /// The first word of an error reply.
    static func refusal(_ reply: RESPValue) -> String? {
        guard case .error(let text) = reply else { return nil }
        return RedisError(serverReply: text).serverErrorPrefix
    }

    /// What the users and roles of deploy/ may not do, and what `historian check` says of them.
    static func expectLeastPrivilege(
        _ environment: TestEnvironment,
        frontend: RedisConnection,
        sample: TestMessage
    ) async throws {
        let historian = try await RedisConnection.connect(
            RedisConfiguration(url: environment.historianRedisURL),
            logger: environment.logger
        )
        defer { historian.close() }
        for command: [RedisArgument] in [["FLUSHALL"], ["CONFIG", "GET", "maxmemory"], ["KEYS", "*"], ["SET", "other", "1"]] {
            let reply = try await historian.pipeline([command])[0]
            #expect(refusal(reply) == "NOPERM", "historian user: \(command.first!) answered \(reply)")
        }
        // The frontend reads the recent lists, and neither deletes them nor touches dead letters.
        let recent = "history:\(sample.conversationID):recent"
        #expect((try await frontend.send("LRANGE", RedisArgument(recent), "0", "-1").array ?? []).count == 10)
        for command: [RedisArgument] in [["DEL", RedisArgument(recent)], ["XRANGE", "chat:messages:dlq", "-", "+"], ["FLUSHALL"]] {
            let reply = try await frontend.pipeline([command])[0]
            #expect(refusal(reply) == "NOPERM", "frontend user: \(command.first!) answered \(reply)")
        }

        let runtime = try await PostgresConnection.connect(conninfo: environment.historianPostgresURL, logger: environment.logger)
        defer { runtime.close() }
        for statement in [
            "DROP TABLE messages", "TRUNCATE messages", "ALTER TABLE messages ADD COLUMN x int",
            "CREATE TABLE intruder (x int)",
        ] {
            do {
                try await runtime.execute(statement)
                Issue.record("the runtime role ran \(statement)")
            } catch let error as PostgresError {
                #expect(error.sqlState == "42501", "\(statement): \(error)")
            }
        }
        #expect(try await environment.scalar("SELECT count(*) FROM messages") == 20_000)

        // check: healthy and quiet under the runtime role; a warning as the superuser or the owner.
        let quiet = try await HistorianProcess.run(["check"], environment: environment.historianEnvironment)
        #expect(quiet.status == 0, "\(quiet.output)\(quiet.errors)")
        #expect(quiet.output.contains("healthy") && !quiet.output.contains("warning:"), "\(quiet.output)")
        var asOwner = environment.historianEnvironment
        asOwner["HISTORIAN_POSTGRES_URL"] = LeastPrivilege.postgresURL(
            environment.postgresServer,
            role: LeastPrivilege.ownerRole,
            database: environment.database
        )
        let owner = try await HistorianProcess.run(["check"], environment: asOwner)
        #expect(owner.status == 0)
        #expect(owner.output.contains("warning: PostgreSQL role historian_owner owns archived_conversations, conversations,"))
        var asSuperuser = environment.historianEnvironment
        asSuperuser["HISTORIAN_POSTGRES_URL"] = environment.postgresURL
        let superuser = try await HistorianProcess.run(["check"], environment: asSuperuser)
        #expect(superuser.status == 0)
        #expect(superuser.output.contains("is a superuser"), "\(superuser.output)")
    }

    @Test("the same entries delivered twice: nothing duplicated, nothing changed")
    func replayedEntries() async throws {
        try await TestEnvironment.with { environment in
            let messages = Producer.workload(count: 3_000, conversations: 40, seed: 1)
            let redis = try await environment.redis()
            defer { redis.close() }
            try await Producer.append(messages, redis: redis)
            let first = try await HistorianProcess.run(["run", "--once"], environment: environment.historianEnvironment)
            #expect(first.status == 0, "\(first.errors)")
            // Every column of every row, arrival and stream entry included.
            let snapshot = "SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM messages t"
            let conversationsSnapshot = "SELECT md5(string_agg(c::text, '|' ORDER BY c.id)) FROM conversations c"
            let contextsSnapshot = "SELECT md5(string_agg(x::text, '|' ORDER BY x.id)) FROM message_contexts x"
            let before = try await environment.rows(snapshot + ";").first?.first ?? nil
            let conversationsBefore = try await environment.rows(conversationsSnapshot).first?.first ?? nil
            let contextsBefore = try await environment.rows(contextsSnapshot).first?.first ?? nil

            // A producer retry: every entry appended again, some in a shuffled order.
            try await Producer.append(messages.shuffled(), redis: redis)
            let second = try await HistorianProcess.run(
                ["run", "--once", "--workers", "2"],
                environment: environment.historianEnvironment
            )
            #expect(second.status == 0, "\(second.errors)")

            #expect(try await environment.scalar("SELECT count(*) FROM messages") == messages.count)
            #expect(try await environment.rows(snapshot + ";").first?.first ?? nil == before)
            #expect(try await environment.rows(conversationsSnapshot).first?.first ?? nil == conversationsBefore)
            #expect(try await environment.rows(contextsSnapshot).first?.first ?? nil == contextsBefore)
            #expect(try await environment.scalar("SELECT count(*) FROM message_contexts") == messages.filter { $0.contexts != nil }.count)
            #expect(try await deadLetterCount(redis) == 0)
            #expect(try await environment.pendingCount() == 0)
            try await expectStored(messages, in: environment)
        }
    }

    @Test("two processes starting on an empty database at once: schema created once, version recorded")
    func concurrentStart() async throws {
        try await TestEnvironment.with { environment in
            let processes = try [
                HistorianProcess(["run", "--once", "--consumer", "a"], environment: environment.historianEnvironment),
                HistorianProcess(["run", "--once", "--consumer", "b"], environment: environment.historianEnvironment),
                HistorianProcess(["migrate"], environment: environment.historianEnvironment),
                HistorianProcess(["migrate"], environment: environment.historianEnvironment),
            ]
            for process in processes {
                let status = try await process.wait(timeout: .seconds(60))
                #expect(status == 0, "\(process.errorOutput)")
            }
            let versions = try await environment.rows("SELECT version FROM historian_schema_migrations ORDER BY version")
            #expect(versions.map { $0[0] } == Schema.migrations.map { String($0.version) })
            #expect(try await environment.scalar("SELECT count(*) FROM pg_tables WHERE tablename = 'messages'") == 1)
            // And the schema works: a message goes through.
            let redis = try await environment.redis()
            defer { redis.close() }
            try await Producer.append(Producer.workload(count: 10, conversations: 2, seed: 2), redis: redis)
            let run = try await HistorianProcess.run(["run", "--once", "--consumer", "a"], environment: environment.historianEnvironment)
            #expect(run.status == 0)
            #expect(try await environment.scalar("SELECT count(*) FROM messages") == 10)
        }
    }

    @Test("workers connect to PostgreSQL before the first entry arrives, so the first batch waits for no setup; each has a thread of its own")
    func connectedBeforeFirstEntry() async throws {
        try await TestEnvironment.with { environment in
            let process = try HistorianProcess(["run", "--workers", "3"], environment: environment.historianEnvironment)
            try await eventually("three worker sessions in PostgreSQL", timeout: .seconds(30)) {
                try await environment.scalar(
                    """
                    SELECT count(*) FROM pg_stat_activity
                    WHERE application_name = 'historian' AND datname = current_database() AND pid <> pg_backend_pid()
                    """
                ) == 3
            }
            #expect(try await environment.scalar("SELECT count(*) FROM messages") == 0)
            // Each worker runs, and its connections block, on a thread of its own (BlockingThreadExecutor), and so
            // does its end stage. A thread names itself when it first runs, and the count above may include the
            // startup connection on its way out.
            let pid = process.child.pid
            try await eventually("a thread for each worker", timeout: .seconds(10)) {
                let threads = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task").map {
                    (try? String(contentsOfFile: "/proc/\(pid)/task/\($0)/comm", encoding: .utf8)) ?? ""
                }
                return threads.filter { $0.hasPrefix("worker-") }.sorted()
                    == ["worker-0\n", "worker-0-end\n", "worker-1\n", "worker-1-end\n", "worker-2\n", "worker-2-end\n"]
            }
            process.signal(SIGTERM)
            let status = try await process.wait(timeout: .seconds(15))
            #expect(status == 0, "\(process.errorOutput)")
        }
    }

    @Test("idle workers wait on the stream one at a time, so a burst is read as one batch")
    func burstIsOneBatch() async throws {
        try await TestEnvironment.with { environment in
            let process = try HistorianProcess(
                ["run", "--workers", "4", "--log-level", "debug"],
                environment: environment.historianEnvironment
            )
            let redis = try await environment.redis()
            defer { redis.close() }
            /// Clients blocked in a command: the workers waiting in `XREADGROUP`.
            func blockedReaders() async throws -> Int {
                let clients = try await redis.send("CLIENT", "LIST").string ?? ""
                return clients.split(separator: "\n").filter { line in
                    line.split(separator: " ").contains { $0.hasPrefix("flags=") && $0.contains("b") }
                }.count
            }
            try await eventually("a worker waiting for entries", timeout: .seconds(30)) {
                try await blockedReaders() == 1
            }
            // Four workers are idle, and only one of them waits in Redis (between two of its
            // reads, for a moment, none does).
            var samples: [Int] = []
            for _ in 0..<10 {
                samples.append(try await blockedReaders())
                try await Task.sleep(for: .milliseconds(50))
            }
            #expect(samples.max() == 1, "clients blocked in XREADGROUP: \(samples)")

            // One pipeline: Redis hands the first entry to the waiting worker before it adds
            // the others; that worker collects the rest before it stores anything.
            let burst = Producer.workload(count: 10, conversations: 3, seed: 5)
            _ = try await Producer.append(burst, redis: redis)
            try await eventually("the burst stored", timeout: .seconds(30)) {
                try await environment.scalar("SELECT count(*) FROM messages") == 10
            }
            process.signal(SIGTERM)
            let status = try await process.wait(timeout: .seconds(15))
            #expect(status == 0, "\(process.errorOutput)")
            let batches = batchesDone(process.errorOutput)
            #expect(batches.map(\.entries) == [10], "\(batches)")
        }
    }

    @Test("large entries make smaller batches: a batch stays within batch_bytes")
    func batchesStayWithinTheirBytes() async throws {
        try await TestEnvironment.with { environment in
            // 30 entries of about 60 KB, against a budget of 256 KiB: four to a batch at most.
            let messages = Producer.workload(count: 30, conversations: 5, seed: 6).enumerated().map { index, message in
                var message = message
                message.content = String(repeating: "a page of a long document. ", count: 60_000 / 27) + "#\(index)"
                // Three sentences are 80 characters.
                message.derivedTitle = "a page of a long document. a page of a long document. a page of a long document."
                return message
            }
            let batches = try await Self.storeOnce(messages, options: ["--batch-bytes", "256KiB"], in: environment)
            #expect(batches.reduce(0) { $0 + $1.entries } == 30, "\(batches)")
            #expect(batches.allSatisfy { $0.bytes <= 256 << 10 }, "\(batches)")
            // The first read assumes entries of max_content_bytes (1 MiB) and takes one; the rest of
            // each batch is sized by the entries it holds: four of them fill the budget.
            #expect(batches.count >= 8, "\(batches)")
            #expect(batches.map(\.entries).max() == 4, "\(batches)")
        }
    }

    @Test("after a cautious first read, what is waiting is read at once, whatever the linger: one batch")
    func cautiousFirstReadStillFillsTheBatch() async throws {
        try await TestEnvironment.with { environment in
            // The first read assumes entries of max_content_bytes (1 MiB) and asks for four; no
            // linger at all, so only the rule "a full read is followed by another" reads the rest.
            let messages = Producer.workload(count: 300, conversations: 30, seed: 8)
            let batches = try await Self.storeOnce(messages, options: ["--batch-linger", "0ms"], in: environment)
            #expect(batches.map(\.entries) == [300], "\(batches)")
        }
    }

    @Test("SIGTERM while idle: exit 0 promptly")
    func sigtermWhileIdle() async throws {
        try await TestEnvironment.with { environment in
            let process = try HistorianProcess(["run"], environment: environment.historianEnvironment)
            try await eventually("the consumer group to exist", timeout: .seconds(30)) {
                let redis = try await environment.redis()
                defer { redis.close() }
                return (try? await redis.send("XINFO", "GROUPS", "chat:messages"))?.array?.count == 1
            }
            let signalled = ContinuousClock.now
            process.signal(SIGTERM)
            let status = try await process.wait(timeout: .seconds(15))
            #expect(status == 0, "\(process.errorOutput)")
            #expect(ContinuousClock.now - signalled < .seconds(5))
        }
    }
}
