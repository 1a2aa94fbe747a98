import Foundation
import Historian
import Logging
import PostgresClient
import RedisClient
import Testing

/// Archive passes, `historian archive` and `historian restore`, and messages for archived
/// conversations, against real servers and real files.
@Suite(.serialized)
struct ArchiveTests {
    /// Everything PostgreSQL holds of a conversation, as text, but for `updated_at` (a restore
    /// sets it to now).
    static func dump(_ environment: TestEnvironment, _ conversation: String) async throws -> [String] {
        let conversationRow = try await environment.rows(
            "SELECT (to_jsonb(c) - 'updated_at')::text FROM conversations AS c WHERE id = '\(conversation)'"
        )
        let messages = try await environment.rows(
            "SELECT row_to_json(m)::text FROM messages AS m WHERE conversation_id = '\(conversation)' ORDER BY created_at, arrival"
        )
        let contexts = try await environment.rows(
            """
            SELECT row_to_json(x)::text FROM message_contexts AS x JOIN messages AS m ON m.id = x.message_id
            WHERE m.conversation_id = '\(conversation)' ORDER BY x.id
            """
        )
        return (conversationRow + messages + contexts).map { $0[0] ?? "NULL" }
    }

    @Test(
        "an archive pass writes a verified gzipped JSONL file, then removes the conversation from PostgreSQL and Redis"
    )
    func archivePass() async throws {
        try await TestEnvironment.with { environment in
            let directory = environment.archiveDir
            let conversations = try await storeConversations(environment, idle: 2)
            let before = try await Self.dump(environment, conversations[0])
            let storedIDs = try await environment.rows(
                "SELECT id::text FROM messages WHERE conversation_id = '\(conversations[0])' ORDER BY created_at, arrival"
            ).map { $0[0] }
            let redis = try await environment.redis()
            defer { redis.close() }
            let recent = "history:\(conversations[0]):recent"
            #expect(try await redis.send("EXISTS", RedisArgument(recent)).int == 1)

            let pass = try await HistorianProcess.run(
                ["archive", "--archive-dir", directory],
                environment: environment.historianEnvironment
            )
            #expect(pass.status == 0, "\(pass.errors)")
            #expect(pass.output.contains("archived \(conversations[0]): 10 messages"), "\(pass.output)")
            #expect(pass.output.contains("archived \(conversations[1]): 10 messages"), "\(pass.output)")
            #expect(!pass.output.contains(conversations[2]))
            #expect(pass.output.contains("archived 2 conversations (20 messages)"), "\(pass.output)")

            // The file: gzip and sha256sum accept it, and every line is the JSON the contract names.
            let path = try await archivePath(directory, conversations[0], in: environment)
            let folder = (path as NSString).deletingLastPathComponent
            let name = (path as NSString).lastPathComponent
            #expect(try runProgram(["gzip", "-t", path]).status == 0)
            #expect(try runProgram(["sha256sum", "-c", "\(name).sha256"], in: folder).status == 0)
            let lines = try runProgram(["gzip", "-dc", path]).text.split(separator: "\n").map(String.init)
            let objects = try lines.map {
                try #require(JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])
            }
            #expect(objects.count == 11)
            #expect(objects.first?["type"] as? String == "conversation")
            #expect(objects.first?["id"] as? String == conversations[0])
            #expect(objects.first?["user_id"] as? String == "u-0")
            let messageIDs = objects.dropFirst().map { $0["id"] as? String }
            #expect(objects.dropFirst().allSatisfy { $0["type"] as? String == "message" && $0["contexts"] is [Any] })
            #expect(
                objects.dropFirst().contains { ($0["contexts"] as? [Any])?.isEmpty == false },
                "the workload has contexts"
            )
            let first = objects.dropFirst().first { $0["id"] as? String == storedIDs.first ?? nil }
            let firstContexts = first?["contexts"] as? [[String: Any]]
            #expect(firstContexts?.map { $0["doc_id"] as? String } == ["d-1", "d-2"], "both contexts, in order, on one line")
            #expect(firstContexts?.first?["content"] as? String == "line one\nline \"two\"")
            #expect(messageIDs == storedIDs, "the messages, in the conversation's order")

            // PostgreSQL: rows gone, the archive recorded.
            #expect(try await environment.scalar("SELECT count(*) FROM conversations") == 2)
            #expect(
                try await environment.scalar(
                    "SELECT count(*) FROM messages WHERE conversation_id = '\(conversations[0])'"
                ) == 0
            )
            let recorded = try await environment.rows(
                "SELECT user_id, path, message_count::text, sha256 FROM archived_conversations WHERE id = '\(conversations[0])'"
            )
            let digest = try String(contentsOfFile: "\(path).sha256", encoding: .utf8).prefix(64)
            #expect(recorded == [["u-0", path, "10", String(digest)]])
            // Redis: the recent list and its version key gone; the active conversations' kept.
            #expect(try await redis.send("EXISTS", RedisArgument(recent), RedisArgument("\(recent):version")).int == 0)
            #expect(try await redis.send("EXISTS", RedisArgument("history:\(conversations[2]):recent")).int == 1)

            // A second pass finds nothing more to do.
            let again = try await HistorianProcess.run(
                ["archive", "--archive-dir", directory],
                environment: environment.historianEnvironment
            )
            #expect(again.status == 0, "\(again.errors)")
            #expect(again.output.contains("archived 0 conversations"), "\(again.output)")

            // Restored: the same rows, the files and the record gone.
            let restore = try await HistorianProcess.run(
                ["restore", conversations[0]],
                environment: environment.historianEnvironment
            )
            #expect(restore.status == 0, "\(restore.errors)")
            #expect(restore.output.contains("restored \(conversations[0]): 10 messages"), "\(restore.output)")
            #expect(try await Self.dump(environment, conversations[0]) == before)
            #expect(
                try await environment.scalar(
                    "SELECT count(*) FROM archived_conversations WHERE id = '\(conversations[0])'"
                ) == 0
            )
            #expect(
                try await environment.scalar(
                    "SELECT count(*) FROM conversations WHERE id = '\(conversations[0])' AND updated_at > now() - interval '1 minute'"
                ) == 1
            )
            #expect(!FileManager.default.fileExists(atPath: path))
            #expect(!FileManager.default.fileExists(atPath: "\(path).sha256"))

            // Restoring again, or something never stored, says so.
            let twice = try await HistorianProcess.run(
                ["restore", conversations[0]],
                environment: environment.historianEnvironment
            )
            #expect(twice.status == 0)
            #expect(twice.output.contains("is in PostgreSQL, not archived"), "\(twice.output)")
            let unknown = try await HistorianProcess.run(
                ["restore", Producer.uuid(0x09, 1)],
                environment: environment.historianEnvironment
            )
            #expect(unknown.status == 1)
        }
    }

    @Test("archive --dry-run lists the quiet conversations and writes nothing")
    func dryRun() async throws {
        try await TestEnvironment.with { environment in
            let directory = environment.archiveDir
            let conversations = try await storeConversations(environment, idle: 1)
            let before = try await Self.dump(environment, conversations[0])
            let result = try await HistorianProcess.run(
                ["archive", "--dry-run", "--archive-dir", directory],
                environment: environment.historianEnvironment
            )
            #expect(result.status == 0, "\(result.errors)")
            #expect(result.output.contains("would archive \(conversations[0]): 10 messages"), "\(result.output)")
            #expect(!result.output.contains(conversations[1]))
            // Nothing written: the directory was not even created.
            #expect(!FileManager.default.fileExists(atPath: directory))
            #expect(try await Self.dump(environment, conversations[0]) == before)
            #expect(try await environment.scalar("SELECT count(*) FROM archived_conversations") == 0)

            // --older-than overrides archive_after: everything idle for over a second.
            try await Task.sleep(for: .seconds(1.5))
            let all = try await HistorianProcess.run(
                ["archive", "--dry-run", "--older-than", "1s", "--archive-dir", directory],
                environment: environment.historianEnvironment
            )
            #expect(all.output.contains("would archive 4 conversations (40 messages)"), "\(all.output)")
        }
    }

    @Test(
        "a pass stopped between the verified file and the delete leaves the conversation in PostgreSQL; the next completes it"
    )
    func interruptedPass() async throws {
        try await TestEnvironment.with { environment in
            let directory = environment.archiveDir
            let conversations = try await storeConversations(environment, idle: 1)
            let before = try await Self.dump(environment, conversations[0])
            var flags = ["archive_dir": directory]
            flags["redis_url"] = environment.redisURL
            flags["postgres_url"] = environment.postgresURL
            let configuration = try await HistorianConfiguration.load(flags: flags, configFile: nil, environment: [:])
            let pass = try ArchivePass(configuration: configuration, logger: Logger(label: "test"))

            struct Crash: Error {}
            let start = Date()
            let stopped = try await pass.run(olderThan: .seconds(30 * 86400), beforeDelete: { _ in throw Crash() }) {
                _ in
            }
            #expect(stopped.failed == 1 && stopped.archived == 0)
            // Not recorded as archived: the file is where a pass of this day (or the next, across
            // midnight) writes it.
            let candidates = archivePaths(directory, conversations[0], from: start, to: Date())
            let path = try #require(
                candidates.first { FileManager.default.fileExists(atPath: $0) },
                "no archive file at \(candidates)"
            )
            #expect(try runProgram(["gzip", "-t", path]).status == 0, "the verified file is there")
            #expect(try await Self.dump(environment, conversations[0]) == before, "and so are the rows")
            #expect(try await environment.scalar("SELECT count(*) FROM archived_conversations") == 0)

            // New messages between the file and the delete: the conversation stays, its stale file goes.
            let postgresURL = environment.postgresURL
            let moved = try await pass.run(
                olderThan: .seconds(30 * 86400),
                beforeDelete: { _ in
                    let done = DispatchSemaphore(value: 0)
                    Task {
                        defer { done.signal() }
                        let postgres = try await PostgresConnection.connect(
                            conninfo: postgresURL,
                            logger: Logger(label: "test")
                        )
                        defer { postgres.close() }
                        _ = try await postgres.execute("UPDATE conversations SET cache_version = cache_version + 1")
                    }
                    done.wait()
                }
            ) { _ in }
            #expect(moved.skipped == 1 && moved.archived == 0)
            let stale = archivePaths(directory, conversations[0], from: start, to: Date())
            #expect(!stale.contains { FileManager.default.fileExists(atPath: $0) }, "\(stale)")
            #expect(
                try await environment.scalar(
                    "SELECT count(*) FROM messages WHERE conversation_id = '\(conversations[0])'"
                ) == 10
            )

            let finished = try await pass.run(olderThan: .seconds(30 * 86400)) { _ in }
            #expect(finished.archived == 1 && finished.messages == 10)
            let archived = try await archivePath(directory, conversations[0], in: environment)
            #expect(try runProgram(["gzip", "-t", archived]).status == 0)
            #expect(
                try await environment.scalar("SELECT count(*) FROM archived_conversations WHERE message_count = 10")
                    == 1
            )
            #expect(
                try await environment.scalar("SELECT count(*) FROM conversations WHERE id = '\(conversations[0])'") == 0
            )
        }
    }

    @Test("restore refuses an archive file that does not match its record, and changes nothing")
    func damagedArchive() async throws {
        try await TestEnvironment.with { environment in
            let directory = environment.archiveDir
            let conversations = try await storeConversations(environment, idle: 1)
            let pass = try await HistorianProcess.run(
                ["archive", "--archive-dir", directory],
                environment: environment.historianEnvironment
            )
            #expect(pass.status == 0, "\(pass.errors)")
            let path = try await archivePath(directory, conversations[0], in: environment)
            // A flipped byte in the middle of the compressed data.
            var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
            bytes[bytes.count / 2] ^= 0xFF
            try Data(bytes).write(to: URL(fileURLWithPath: path))

            let restore = try await HistorianProcess.run(
                ["restore", conversations[0]],
                environment: environment.historianEnvironment
            )
            #expect(restore.status == 1)
            #expect(restore.output.contains("not restored"), "\(restore.output)")
            #expect(
                try await environment.scalar("SELECT count(*) FROM conversations WHERE id = '\(conversations[0])'") == 0
            )
            #expect(try await environment.scalar("SELECT count(*) FROM archived_conversations") == 1)
            #expect(FileManager.default.fileExists(atPath: path))
        }
    }

    @Test(
        "a message for an archived conversation brings it back first; the recent list holds the latest of all its messages"
    )
    func messageForArchivedConversation() async throws {
        try await TestEnvironment.with { environment in
            let directory = environment.archiveDir
            var historian = environment.historianEnvironment
            historian["HISTORIAN_ARCHIVE_DIR"] = directory
            let conversations = try await storeConversations(environment, idle: 1)
            let before = try await Self.dump(environment, conversations[0])
            let pass = try await HistorianProcess.run(["archive"], environment: historian)
            #expect(pass.status == 0, "\(pass.errors)")
            #expect(try await environment.scalar("SELECT count(*) FROM archived_conversations") == 1)

            let redis = try await environment.redis()
            defer { redis.close() }
            let later = TestMessage(
                id: Producer.uuid(0x05, 1),
                conversationID: conversations[0],
                userID: "u-0",
                role: "user",
                content: "Back after a long break",
                sessionID: "s-back"
            )
            // And one from someone else, which must not land in the restored conversation.
            var intruder = later
            intruder.id = Producer.uuid(0x05, 2)
            intruder.userID = "someone-else"
            try await Producer.append([later, intruder], redis: redis)
            let dryRun = try await HistorianProcess.run(["run", "--dry-run", "--once"], environment: historian)
            #expect(dryRun.status == 0, "\(dryRun.errors)")
            let predicted = dryRun.output.split(separator: "\n")
            #expect(
                predicted.contains {
                    $0.contains(later.id) && $0.contains("store")
                        && $0.contains("(archived conversation: restored first)")
                },
                "\(dryRun.output)"
            )
            #expect(predicted.contains { $0.contains(intruder.id) && $0.contains("user_mismatch") }, "\(dryRun.output)")
            #expect(
                try await environment.scalar("SELECT count(*) FROM archived_conversations") == 1,
                "a dry run restores nothing"
            )
            let run = try await HistorianProcess.run(["run", "--once"], environment: historian)
            #expect(run.status == 0, "\(run.errors)")

            #expect(try await environment.scalar("SELECT count(*) FROM archived_conversations") == 0)
            #expect(
                try await environment.scalar(
                    "SELECT count(*) FROM messages WHERE conversation_id = '\(conversations[0])'"
                ) == 11
            )
            // The archived rows came back as they were (the conversation row moves on: new message).
            let restored = try await Self.dump(environment, conversations[0])
            let newMessage = restored.filter { $0.contains(later.id) }
            #expect(restored.filter { !$0.contains(later.id) }.dropFirst() == before.dropFirst())
            #expect(newMessage.count == 1)
            let letters = try await streamRecords(redis, "chat:messages:dlq")
            #expect(letters.count == 1)
            let fields = letters.first?.strings ?? [:]
            #expect(fields["message_id"] == intruder.id && fields["dlq_reason"] == "user_mismatch", "\(fields)")

            // The recent list: the latest 10 of all 11, as PostgreSQL orders them.
            let latest = try await environment.rows(
                """
                SELECT id::text FROM (SELECT id, created_at, arrival FROM messages WHERE conversation_id = '\(conversations[0])'
                ORDER BY created_at DESC, arrival DESC LIMIT 10) AS l ORDER BY created_at, arrival
                """
            ).map { $0[0] ?? "" }
            let list =
                try await redis.send("LRANGE", RedisArgument("history:\(conversations[0]):recent"), "0", "-1").array
                ?? []
            let listed = try list.map { element -> String in
                let object = try #require(
                    JSONSerialization.jsonObject(with: Data((element.string ?? "").utf8)) as? [String: Any]
                )
                return object["id"] as? String ?? ""
            }
            #expect(listed == latest)
            #expect(listed.last == later.id)
        }
    }

    @Test("the daemon archives on its schedule (archive_every)")
    func scheduledPass() async throws {
        try await TestEnvironment.with { environment in
            let directory = environment.archiveDir
            let conversations = try await storeConversations(environment, idle: 1)
            var historian = environment.historianEnvironment
            historian["HISTORIAN_ARCHIVE_DIR"] = directory
            historian["HISTORIAN_ARCHIVE_EVERY"] = "1s"
            let daemon = try HistorianProcess(["run"], environment: historian)
            try await eventually("the quiet conversation archived", timeout: .seconds(60)) {
                try await environment.scalar(
                    "SELECT count(*) FROM archived_conversations WHERE id = '\(conversations[0])'"
                ) == 1
            }
            daemon.signal(SIGTERM)
            #expect(try await daemon.wait() == 0, "\(daemon.errorOutput)")
            let path = try await archivePath(directory, conversations[0], in: environment)
            #expect(try runProgram(["gzip", "-t", path]).status == 0)
            #expect(try await environment.scalar("SELECT count(*) FROM conversations") == 3)
        }
    }
}
