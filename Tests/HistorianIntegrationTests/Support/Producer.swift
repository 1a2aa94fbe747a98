import Foundation
import RedisClient

/// A message as a test produces it.
struct TestMessage: Sendable, Hashable {
    var id: String
    var conversationID: String
    var userID: String
    var role: String
    var content: String
    var title: String?
    var createdAt: String?
    var sessionID: String?
    var metadata: String?
    var contexts: String?
    var deptID: String?
    var tokensUsed: Int?
    var latencyMs: Int?

    /// What `expectStored` holds PostgreSQL to, written out by hand: the title the contract
    /// derives from `content` (nil: none) …
    var derivedTitle: String?
    /// … and `created_at` as PostgreSQL holds it, in ``TestTime/utc(microseconds:)``'s form.
    /// Nil: `createdAt` as it is, or, without one, the stream entry's time.
    var storedCreatedAt: String?

    var fields: [(String, String)] {
        var fields = [
            ("message_id", id), ("conversation_id", conversationID), ("user_id", userID), ("role", role),
            ("content", content),
        ]
        if let title { fields.append(("title", title)) }
        if let createdAt { fields.append(("created_at", createdAt)) }
        if let sessionID { fields.append(("session_id", sessionID)) }
        if let deptID { fields.append(("dept_id", deptID)) }
        if let tokensUsed { fields.append(("tokens_used", String(tokensUsed))) }
        if let latencyMs { fields.append(("latency_ms", String(latencyMs))) }
        if let metadata { fields.append(("metadata", metadata)) }
        if let contexts { fields.append(("contexts", contexts)) }
        return fields
    }
}

/// Builds deterministic workloads and appends them to a stream.
enum Producer {
    /// A UUID whose tail is `number` and whose first group tells workloads apart.
    static func uuid(_ kind: UInt8, _ number: Int) -> String {
        let hex = String(number, radix: 16)
        let padded = String(repeating: "0", count: 12 - hex.count) + hex
        return String(format: "0193%02x00-0000-7000-8000-", kind) + padded
    }

    /// `count` messages spread round-robin over `conversations` conversations; every
    /// conversation opens with a user message. Contents mix ASCII, non-ASCII and, one in a
    /// thousand, 100 KiB bodies. Every optional field appears: a title opens one conversation in
    /// ten, whose messages carry no `created_at` (the entry's time counts); the others' times
    /// grow with the index, in UTC with microseconds or at +02:00 with milliseconds, from
    /// 2025-01-01. Assistant messages carry `tokens_used` and `latency_ms`, one conversation in
    /// four a `dept_id`.
    static func workload(count: Int, conversations: Int, seed: Int = 0) -> [TestMessage] {
        let samples = [
            "How do I request vacation?",
            "Grüße aus München — naïve café, déjà vu",
            "日本語のメッセージです。よろしくお願いします。",
            "Emoji: 🚀🔥👩‍💻 and math ∑∫√",
            "tabs\tand\nnewlines\r\nand \\backslashes\\ and \"quotes\"",
        ]
        let start: Int64 = 1_735_689_600_000_000  // 2025-01-01T00:00:00Z
        var messages: [TestMessage] = []
        messages.reserveCapacity(count)
        for index in 0..<count {
            let conversation = index % conversations
            let turn = index / conversations
            let sample = (index + seed) % samples.count
            var content = "\(samples[sample]) #\(index)"
            // The title of a short line is the line; of the tabs sample, its first line.
            var title = sample == 4 ? "tabs and" : content
            if index % 1000 == 999 {
                content = String(repeating: "large body ü ", count: 100 * 1024 / 14) + "#\(index)"
                // As many whole words as 80 characters hold.
                title = "large body ü large body ü large body ü large body ü large body ü large body ü"
            }
            let titled = conversation % 10 == 3
            let createdAt: (input: String, stored: String)?
            if titled {
                createdAt = nil
            } else if conversation % 2 == 0 {
                let microseconds = start + Int64(index) * 1_000_001
                createdAt = (TestTime.utc(microseconds: microseconds), TestTime.utc(microseconds: microseconds))
            } else {
                let microseconds = start + Int64(index) * 1_001_000
                createdAt = (
                    TestTime.rfc3339(microseconds: microseconds, offsetHours: 2), TestTime.utc(microseconds: microseconds)
                )
            }
            let assistant = turn % 2 == 1
            messages.append(
                TestMessage(
                    id: uuid(0x01, index + seed * 1_000_000),
                    conversationID: uuid(0x02, conversation + seed * 1_000_000),
                    userID: "u-\(conversation % 37)",
                    role: assistant ? "assistant" : "user",
                    content: content,
                    title: titled && turn == 0 ? "Explicit title \(conversation)" : nil,
                    createdAt: createdAt?.input,
                    sessionID: "s-\(conversation % 23)",
                    metadata: index % 7 == 0 ? #"{"source":"web","n":\#(index)}"# : nil,
                    contexts: index % 11 == 0
                        ? #"[{"doc_id":"d-\#(index)","content":"retrieved","score":0.75,"metadata":{"page":3}}]"# : nil,
                    deptID: conversation % 4 == 1 ? "dept-\(conversation % 7)" : nil,
                    tokensUsed: assistant ? index % 1000 : nil,
                    latencyMs: assistant ? index * 7 % 5000 : nil,
                    derivedTitle: title,
                    storedCreatedAt: createdAt?.stored
                )
            )
        }
        return messages
    }

    /// Appends the messages with pipelined XADDs; returns the entry IDs in order.
    @discardableResult
    static func append(_ messages: [TestMessage], to stream: String = "chat:messages", redis: RedisConnection) async throws
        -> [String]
    {
        try await appendRaw(messages.map(\.fields), to: stream, redis: redis)
    }

    /// Appends entries given as field lists, 500 to a pipeline.
    @discardableResult
    static func appendRaw(_ entries: [[(String, String)]], to stream: String = "chat:messages", redis: RedisConnection)
        async throws -> [String]
    {
        try await send(entries.map { xadd($0, to: stream) }, redis: redis)
    }

    /// Sends `XADD` commands (see ``xadd(_:to:maxlen:)``), 500 to a pipeline; returns the entry
    /// IDs in order.
    @discardableResult
    static func send(_ commands: [[RedisArgument]], redis: RedisConnection) async throws -> [String] {
        var ids: [String] = []
        var start = 0
        while start < commands.count {
            for reply in try await redis.pipeline(Array(commands[start..<min(start + 500, commands.count)])) {
                guard let id = reply.string else { throw ProducerError(reply: "\(reply)") }
                ids.append(id)
            }
            start += 500
        }
        return ids
    }

    struct ProducerError: Error { var reply: String }
}
