import Foundation
@testable import Historian
import RedisClient
import Testing

/// What LangChain's stock readers find (contract §8): `message_store:{id}` in Redis with
/// `langchain_cache: true`, and the `langchain_chat_history` view in PostgreSQL.
@Suite(.serialized)
struct LangchainTests {
    @Test("LangChain's RedisChatMessageHistory and PostgresChatMessageHistory read every role, late messages in order")
    func stockReadersReadWhatHistorianStores() async throws {
        let python = try langchainPython()
        try await TestEnvironment.with { environment in
            let conversations = LangchainWorkload.conversations(40)
            let redis = try await environment.redis()
            defer { redis.close() }
            let langchain = environment.historianEnvironment.merging(["HISTORIAN_LANGCHAIN_CACHE": "true"]) { $1 }
            // The first run stores all but the late messages, the second the late ones, each
            // older than messages stored before it.
            for part in [LangchainWorkload.onTime(conversations), LangchainWorkload.late(conversations)] {
                try await Producer.append(part, redis: redis)
                let run = try await HistorianProcess.run(["run", "--once", "--workers", "3", "--batch-size", "50"], environment: langchain)
                #expect(run.status == 0, "\(run.errors)")
            }
            #expect(try await environment.scalar("SELECT count(*) FROM messages") == conversations.joined().count)

            let expected = conversations.reduce(into: [String: [[String: String]]]()) { expected, messages in
                expected[messages[0].conversationID] = messages.map { message in
                    var dict = ["id": message.id, "type": LangchainWorkload.type(of: message.role), "content": message.content]
                    if message.role == "tool" { dict["tool_call_id"] = LangchainWorkload.toolCallID(of: message) }
                    return dict
                }
            }
            let request: [String: Any] = [
                "redis_url": environment.redisURL, "postgres_url": environment.postgresURL, "recent_size": 10,
                "key_prefix": "", "conversations": expected,
            ]
            let requestFile = FileManager.default.temporaryDirectory.appendingPathComponent("langchain-\(UUID().uuidString).json")
            try JSONSerialization.data(withJSONObject: request).write(to: requestFile)
            defer { try? FileManager.default.removeItem(at: requestFile) }
            let read = try runProgram([python, LangchainWorkload.readerScript, requestFile.path])
            #expect(read.status == 0, "\(read.text)")
            #expect(read.text.contains("40 conversations"), "\(read.text)")
        }
    }

    @Test("the LangChain list mirrors the recent list: key_prefix, 3 workers, late messages, turned on later, removed, wrong type")
    func listsMirrorTheRecentLists() async throws {
        try await TestEnvironment.with { environment in
            let conversations = LangchainWorkload.conversations(100, minimumLength: 7)
            let redis = try await environment.redis()
            defer { redis.close() }
            let prefixed = environment.historianEnvironment.merging(["HISTORIAN_KEY_PREFIX": "app:"]) { $1 }
            let langchain = prefixed.merging(["HISTORIAN_LANGCHAIN_CACHE": "true"]) { $1 }
            // Each conversation's messages at these positions, some late.
            func run(_ positions: Range<Int>, _ environment: [String: String]) async throws {
                let part = conversations.map { Array($0[positions.clamped(to: $0.indices)]) }
                try await Producer.append(LangchainWorkload.onTime(part) + LangchainWorkload.late(part), redis: redis)
                let run = try await HistorianProcess.run(["run", "--once", "--workers", "3", "--batch-size", "40"], environment: environment)
                #expect(run.status == 0, "\(run.errors)")
            }
            let ids = conversations.map { $0[0].conversationID }

            // Off: no LangChain list.
            try await run(0..<3, prefixed)
            for id in ids { #expect(try await redis.send("EXISTS", RedisArgument("app:message_store:\(id)")).int == 0) }

            // Turned on: the next messages of each conversation build its whole list.
            try await run(3..<6, langchain)
            var differing = try await mirrorsDiffering(ids, environment, redis)
            #expect(differing.isEmpty, "\(differing.count) differ, e.g. \(differing.prefix(3))")

            // Removed, or holding another type: rebuilt or repaired with the next message.
            for id in ids.prefix(10) { _ = try await redis.send("DEL", RedisArgument("app:message_store:\(id)")) }
            for id in ids[10..<15] { _ = try await redis.send("SET", RedisArgument("app:message_store:\(id)"), "not a list") }
            try await run(6..<100, langchain)
            differing = try await mirrorsDiffering(ids, environment, redis)
            #expect(differing.isEmpty, "\(differing.count) differ, e.g. \(differing.prefix(3))")
            for id in ids {
                let ttl = try await redis.send("PTTL", RedisArgument("app:message_store:\(id)")).int ?? -3
                #expect(ttl > 0 && ttl <= 1_800_000, "TTL \(ttl) of app:message_store:\(id)")
            }

            // Archived: the LangChain list goes with the recent list.
            let archive = try await HistorianProcess.run(["archive", "--older-than", "0s"], environment: langchain)
            #expect(archive.status == 0, "\(archive.errors)")
            for id in ids { #expect(try await redis.send("EXISTS", RedisArgument("app:message_store:\(id)")).int == 0) }
        }
    }

    @Test("langchain_chat_history orders each conversation as the contract does, and reads it through an index")
    func viewOrdersAndUsesAnIndex() async throws {
        try await TestEnvironment.with { environment in
            let conversations = LangchainWorkload.conversations(100)
            let redis = try await environment.redis()
            defer { redis.close() }
            try await Producer.append(LangchainWorkload.onTime(conversations) + LangchainWorkload.late(conversations), redis: redis)
            let run = try await HistorianProcess.run(["run", "--once"], environment: environment.historianEnvironment)
            #expect(run.status == 0, "\(run.errors)")

            let rows = try await environment.rows(
                """
                SELECT session_id::text, id::text, message #>> '{data,id}', message ->> 'type', message #>> '{data,content}'
                FROM langchain_chat_history AS v ORDER BY v.session_id, v.id
                """
            )
            var read: [String: [String]] = [:]
            for row in rows {
                read[row[0]!, default: []].append(row[2]!)
                #expect(Int(row[1]!) == read[row[0]!]!.count, "ids count 1, 2, … in each conversation")
            }
            for messages in conversations {
                #expect(read[messages[0].conversationID] == messages.map(\.id))
            }

            // Enough rows that PostgreSQL would rather scan the table than the index, if it could
            // not push the session's condition under the window.
            for statement in [
                """
                INSERT INTO conversations (id, user_id, created_at, updated_at)
                SELECT gen_random_uuid(), 'bulk', now(), now() FROM generate_series(1, 2000)
                """,
                """
                INSERT INTO messages (id, conversation_id, role, content, created_at, stream_entry)
                SELECT gen_random_uuid(), c.id, 'user', 'bulk', now(), '0-0'
                FROM conversations AS c, generate_series(1, 20) WHERE c.user_id = 'bulk'
                """,
                "ANALYZE messages",
            ] {
                _ = try await environment.rows(statement)
            }
            let plan = try await environment.rows(
                """
                EXPLAIN SELECT message FROM langchain_chat_history
                WHERE session_id = '\(conversations[0][0].conversationID)' ORDER BY id
                """
            ).map { $0[0] ?? "" }.joined(separator: "\n")
            #expect(plan.contains("Index Scan on messages_conversation_order_idx") || plan.contains("Index Scan using messages_conversation_order_idx"), "\(plan)")
            #expect(!plan.contains("Seq Scan"), "\(plan)")
        }
    }

    /// The conversations whose LangChain list (under the `app:` prefix) is not their recent list
    /// turned into LangChain's dicts, newest first.
    private func mirrorsDiffering(_ ids: [String], _ environment: TestEnvironment, _ redis: RedisConnection) async throws -> [String] {
        var differing: [String] = []
        for id in ids {
            let recent = try await cachedRecentList(redis, id, keyPrefix: "app:")
            let reply = try await redis.send("LRANGE", RedisArgument("app:message_store:\(id)"), "0", "-1")
            let twin = try (reply.array ?? []).map { try jsonObject($0.string ?? "{}") }.reversed()
            let expected = recent.map { element -> NSDictionary in
                let role = element["role"] as! String
                let type = LangchainWorkload.type(of: role)
                var data: [String: Any] = [
                    "content": element["content"]!, "additional_kwargs": [String: Any](), "response_metadata": [String: Any](),
                    "type": type, "name": NSNull(), "id": element["id"]!,
                ]
                if role == "assistant" {
                    data["tool_calls"] = [Any]()
                    data["invalid_tool_calls"] = [Any]()
                    data["usage_metadata"] = NSNull()
                }
                if role == "tool" {
                    let metadata = element["metadata"] as? NSDictionary
                    data["tool_call_id"] = metadata?["tool_call_id"] as? String ?? ""
                    data["artifact"] = NSNull()
                    data["status"] = "success"
                }
                return ["type": type, "data": data] as NSDictionary
            }
            if recent.isEmpty || Array(twin) != expected { differing.append(id) }
        }
        return differing
    }
}

/// Python of the virtual environment with LangChain (scripts/langchain-venv makes it, or finds
/// it made).
private func langchainPython() throws -> String {
    let script = LangchainWorkload.packageRoot + "/scripts/langchain-venv"
    let made = try runProgram(["bash", script])
    guard made.status == 0, let python = made.text.split(separator: "\n").last.map(String.init),
        FileManager.default.isExecutableFile(atPath: python)
    else {
        throw TestFailure("scripts/langchain-venv failed (status \(made.status)): it needs python3-venv and PyPI")
    }
    return python
}

struct TestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Conversations of every role, with awkward content and tool calls, some longer than a
/// recent list; each conversation's messages in the contract's order (distinct `created_at`).
enum LangchainWorkload {
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path
    static let readerScript = packageRoot + "/Tests/LangchainReaders/read_histories.py"

    static func conversations(_ count: Int, minimumLength: Int = 3) -> [[TestMessage]] {
        let contents = [
            "How do I request vacation?",
            #"quotes " and \ backslashes \" and ", "metadata" : {} inside"#,
            "\"content\" : \"not the field\"\nsecond line\ttab",
            "Grüße — 日本語 — 🚀👩‍💻",
            "",
            "control \u{1} \u{1F} bytes",
        ]
        let start: Int64 = 1_767_225_600_000  // 2026-01-01T00:00:00Z, in milliseconds
        return (0..<count).map { conversation in
            let length = minimumLength + conversation % 20
            return (0..<length).map { position in
                let role: String
                switch position % 4 {
                case 0: role = position == 0 && conversation % 3 == 0 ? "system" : "user"
                case 1, 3: role = "assistant"
                default: role = "tool"
                }
                var metadata: String? = nil
                if role == "tool" {
                    switch (conversation + position) % 5 {
                    case 0: metadata = nil
                    case 1: metadata = #"{"tool_call_id": 42}"#
                    default: metadata = #"{"tool_call_id": "call_\#(conversation)_\#(position)", "tool": "search"}"#
                    }
                }
                let index = conversation * 100 + position
                return TestMessage(
                    id: Producer.uuid(0x31, index),
                    conversationID: Producer.uuid(0x32, conversation),
                    userID: "u-\(conversation % 7)",
                    role: role,
                    content: "\(contents[index % contents.count]) #\(position)",
                    createdAt: String(start + Int64(conversation) * 1_000_000 + Int64(position) * 1000),
                    metadata: metadata
                )
            }
        }
    }

    /// Messages at positions that are multiples of 4 (past the first) arrive late.
    static func isLate(_ position: Int) -> Bool { position > 0 && position % 4 == 0 }

    /// The messages that arrive on time, conversations interleaved; in every other
    /// conversation the second and third swapped, so that a batch holds a message older than
    /// one before it.
    static func onTime(_ conversations: [[TestMessage]]) -> [TestMessage] {
        let sequences = conversations.enumerated().map { number, messages in
            var onTime = messages.indices.filter { !isLate($0) }.map { messages[$0] }
            if number % 2 == 0, onTime.count > 2 { onTime.swapAt(1, 2) }
            return onTime
        }
        let longest = sequences.map(\.count).max() ?? 0
        return (0..<longest).flatMap { index in sequences.compactMap { index < $0.count ? $0[index] : nil } }
    }

    /// The late messages: each older than messages `onTime` stored before it.
    static func late(_ conversations: [[TestMessage]]) -> [TestMessage] {
        conversations.flatMap { messages in messages.indices.filter(isLate).map { messages[$0] } }
    }

    static func type(of role: String) -> String {
        ["user": "human", "assistant": "ai", "system": "system", "tool": "tool"][role]!
    }

    static func toolCallID(of message: TestMessage) -> String {
        guard let metadata = message.metadata,
            let object = try? JSONSerialization.jsonObject(with: Data(metadata.utf8)) as? [String: Any]
        else { return "" }
        return object["tool_call_id"] as? String ?? ""
    }
}
