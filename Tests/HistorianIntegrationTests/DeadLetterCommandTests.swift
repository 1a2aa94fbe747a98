import Foundation
import RedisClient
import Testing

/// `dlq list` and `dlq replay` against real servers, on dead letters that `run --once` made.
@Suite(.serialized)
struct DeadLetterCommandTests {
    /// In the content, title and metadata of every bad entry; no command may print it.
    static let secret = "SECRET-body-7f3a"
    /// The contract's reasons (CONTRACT.md §1), in its order.
    static let contractReasons = [
        "missing_field", "invalid_uuid", "invalid_role", "invalid_utf8", "nul_byte", "too_large", "invalid_json",
        "invalid_timestamp", "invalid_number", "conflict", "user_mismatch", "poison", "rejected_by_database",
    ]

    struct Field: Hashable {
        var name: String
        var value: [UInt8]

        init(_ name: String, _ value: [UInt8]) {
            self.name = name
            self.value = value
        }

        init(_ name: String, _ value: String) {
            self.init(name, Array(value.utf8))
        }

        var pair: (String, [UInt8]) { (name, value) }
    }

    struct Entry: Hashable {
        var id: String
        var fields: [Field]

        func value(_ name: String) -> String? {
            fields.last { $0.name == name }.map { String(decoding: $0.value, as: UTF8.self) }
        }

        var original: [Field] { fields.filter { !$0.name.hasPrefix("dlq_") } }
    }

    /// The bad entries as appended, and the dead letters `run --once` made of them, in order.
    struct Made {
        var bad: [[Field]]
        var sourceIDs: [String]
        var letters: [Entry]
        var ownerConversation: String

        /// The dead letter of bad entry `index`.
        func letter(_ index: Int) -> Entry {
            letters.first { $0.value("dlq_source_id") == sourceIDs[index] }!
        }
    }

    static let invalidRole = 0
    static let invalidUUID = 1
    static let userMismatch = 2

    /// Stores one good message, then appends three bad entries and lets `run --once` dead-letter
    /// them: `invalid_role` (with an unknown field of binary bytes), `invalid_uuid` and
    /// `user_mismatch`.
    static func makeDeadLetters(_ environment: TestEnvironment, _ redis: RedisConnection) async throws -> Made {
        let owner = TestMessage(
            id: Producer.uuid(0x31, 1),
            conversationID: Producer.uuid(0x32, 1),
            userID: "u-owner",
            role: "user",
            content: "hello"
        )
        try await Producer.append([owner], redis: redis)
        let first = try await HistorianProcess.run(["run", "--once"], environment: environment.historianEnvironment)
        #expect(first.status == 0, "\(first.errors)")

        let bad: [[Field]] = [
            [
                Field("message_id", Producer.uuid(0x31, 2)), Field("conversation_id", Producer.uuid(0x32, 2)),
                Field("user_id", "u-1"), Field("role", "admin"), Field("content", "\(secret) one"),
                Field("title", "\(secret) title"), Field("x_blob", [0xFF, 0x00, 0x1B, 0x5B, 0x32, 0x4A, 0x80]),
            ],
            [
                Field("message_id", "not-a-uuid"), Field("conversation_id", Producer.uuid(0x32, 3)),
                Field("user_id", "u-1"), Field("role", "user"), Field("content", "\(secret) two, a little longer"),
                Field("metadata", #"{"note":"\#(secret)"}"#),
            ],
            [
                Field("message_id", Producer.uuid(0x31, 4)), Field("conversation_id", owner.conversationID),
                Field("user_id", "intruder"), Field("role", "user"), Field("content", "\(secret) three"),
                Field("contexts", #"[{"doc_id":"d","content":"\#(secret)"}]"#),
            ],
        ]
        var sourceIDs: [String] = []
        for reply in try await redis.pipeline(bad.map { xadd($0.map(\.pair)) }) {
            sourceIDs.append(try #require(reply.string))
        }
        let second = try await HistorianProcess.run(["run", "--once"], environment: environment.historianEnvironment)
        #expect(second.status == 0, "\(second.errors)")

        let letters = try await entries(redis, "chat:messages:dlq")
        try #require(letters.count == 3, "dead letters: \(letters.map { $0.value("dlq_reason") ?? "-" })")
        let made = Made(bad: bad, sourceIDs: sourceIDs, letters: letters, ownerConversation: owner.conversationID)
        try #require(made.letter(invalidRole).value("dlq_reason") == "invalid_role")
        try #require(made.letter(invalidUUID).value("dlq_reason") == "invalid_uuid")
        try #require(made.letter(userMismatch).value("dlq_reason") == "user_mismatch")
        return made
    }

    // MARK: - list

    @Test("dlq list shows every dead letter with its reason and IDs, never the content")
    func list() async throws {
        try await TestEnvironment.with { environment in
            let redis = try await environment.redis()
            defer { redis.close() }
            let made = try await Self.makeDeadLetters(environment, redis)

            let result = try await HistorianProcess.run(["dlq", "list"], environment: environment.historianEnvironment)
            #expect(result.status == 0, "\(result.errors)")
            let lines = result.output.split(separator: "\n").map(String.init)
            #expect(lines.count == 4, "\(lines)")
            // Oldest first, one line each.
            #expect(lines.prefix(3).map { $0.split(separator: " ").first.map(String.init) } == made.letters.map(\.id))
            for (index, reason) in ["invalid_role", "invalid_uuid", "user_mismatch"].enumerated() {
                let letter = made.letter(index)
                let line = lines.first { $0.hasPrefix(letter.id + " ") } ?? ""
                #expect(line.contains("  \(reason) "), "\(line)")
                #expect(line.contains("source=\(made.sourceIDs[index])"), "\(line)")
                #expect(line.contains(letter.value("dlq_at")!), "\(line)")
                #expect(line.contains(letter.value("dlq_detail")!), "\(line)")
                let contentBytes = made.bad[index].first { $0.name == "content" }!.value.count
                #expect(line.contains("content=\(contentBytes) bytes"), "\(line)")
            }
            let intruder = lines.first { $0.hasPrefix(made.letter(Self.userMismatch).id + " ") } ?? ""
            #expect(intruder.contains("message=\(Producer.uuid(0x31, 4))"))
            #expect(intruder.contains("conversation=\(made.ownerConversation)"))
            let summary = "summary: 3 shown of 3 dead letters in chat:messages:dlq: "
            #expect(lines.last == summary + "1 invalid_uuid, 1 invalid_role, 1 user_mismatch")
            // No body, and none of the unknown field's bytes (an escape sequence among them).
            #expect(!result.output.contains(Self.secret))
            #expect(!result.errors.contains(Self.secret))
            #expect(!result.output.contains("\u{1B}"))

            let filtered = try await HistorianProcess.run(
                ["dlq", "list", "--reason", "user_mismatch"],
                environment: environment.historianEnvironment
            )
            #expect(filtered.status == 0, "\(filtered.errors)")
            let filteredLines = filtered.output.split(separator: "\n").map(String.init)
            #expect(filteredLines.count == 2, "\(filteredLines)")
            #expect(filteredLines.first?.hasPrefix(made.letter(Self.userMismatch).id + " ") == true)
            #expect(filteredLines.last?.hasPrefix("summary: 1 shown (reason user_mismatch) of 3 dead letters") == true)

            let counted = try await HistorianProcess.run(
                ["dlq", "list", "--count", "2"],
                environment: environment.historianEnvironment
            )
            #expect(counted.status == 0, "\(counted.errors)")
            let countedLines = counted.output.split(separator: "\n").map(String.init)
            #expect(countedLines.count == 3, "\(countedLines)")
            #expect(
                countedLines.prefix(2).map { $0.split(separator: " ").first.map(String.init) }
                    == made.letters.prefix(2).map(\.id)
            )
            #expect(countedLines.last?.hasPrefix("summary: 2 shown of 3 dead letters") == true, "\(countedLines)")
            #expect(countedLines.last?.contains("--count shows more") == true)

            let unknown = try await HistorianProcess.run(
                ["dlq", "list", "--reason", "bogus"],
                environment: environment.historianEnvironment
            )
            #expect(unknown.status == 64)
            #expect(unknown.output.isEmpty)
            #expect(unknown.errors.contains("unknown reason 'bogus'"), "\(unknown.errors)")
            #expect(unknown.errors.contains(Self.contractReasons.joined(separator: ", ")), "\(unknown.errors)")
        }
    }

    @Test("dlq list --json prints one JSON object per dead letter, the summary on standard error")
    func listJSON() async throws {
        try await TestEnvironment.with { environment in
            let redis = try await environment.redis()
            defer { redis.close() }
            let made = try await Self.makeDeadLetters(environment, redis)

            let result = try await HistorianProcess.run(
                ["dlq", "list", "--json"],
                environment: environment.historianEnvironment
            )
            #expect(result.status == 0, "\(result.errors)")
            #expect(!result.output.contains(Self.secret))
            let objects = try result.output.split(separator: "\n").map { line in
                try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], "\(line)")
            }
            #expect(objects.count == 3)
            #expect(objects.map { $0["id"] as? String } == made.letters.map(\.id))
            for (index, reason) in ["invalid_role", "invalid_uuid", "user_mismatch"].enumerated() {
                let letter = made.letter(index)
                guard let object = objects.first(where: { $0["id"] as? String == letter.id }) else {
                    Issue.record("no JSON object for \(letter.id)")
                    continue
                }
                #expect(object["dlq_reason"] as? String == reason)
                #expect(object["dlq_source_id"] as? String == made.sourceIDs[index])
                #expect(object["dlq_source_stream"] as? String == "chat:messages")
                #expect(object["dlq_at"] as? String == letter.value("dlq_at"))
                #expect(object["dlq_detail"] as? String == letter.value("dlq_detail"))
                #expect(object["message_id"] as? String == letter.value("message_id"))
                #expect(object["conversation_id"] as? String == letter.value("conversation_id"))
                let contentBytes = made.bad[index].first { $0.name == "content" }!.value.count
                #expect(object["content_bytes"] as? Int == contentBytes)
                #expect(object["content"] == nil && object["title"] == nil && object["metadata"] == nil)
            }
            #expect(result.errors.contains("summary: 3 shown of 3 dead letters"), "\(result.errors)")

            let filtered = try await HistorianProcess.run(
                ["dlq", "list", "--json", "--reason", "invalid_uuid"],
                environment: environment.historianEnvironment
            )
            #expect(filtered.status == 0, "\(filtered.errors)")
            let filteredLines = filtered.output.split(separator: "\n")
            #expect(filteredLines.count == 1)
            let object =
                try JSONSerialization.jsonObject(with: Data((filteredLines.first ?? "").utf8)) as? [String: Any]
            #expect(object?["id"] as? String == made.letter(Self.invalidUUID).id)
            #expect(object?["message_id"] as? String == "not-a-uuid")
        }
    }

    // MARK: - replay

    @Test("dlq replay moves dead letters back verbatim, and a run dead-letters them again for the same reason")
    func replayRoundTrip() async throws {
        try await TestEnvironment.with { environment in
            let redis = try await environment.redis()
            defer { redis.close() }
            let made = try await Self.makeDeadLetters(environment, redis)
            let chosen = [Self.invalidRole, Self.userMismatch]
            let sourceLength = try await Self.length(redis, "chat:messages")

            let result = try await HistorianProcess.run(
                ["dlq", "replay"] + chosen.map { made.letter($0).id },
                environment: environment.historianEnvironment
            )
            #expect(result.status == 0, "\(result.output)\(result.errors)")
            #expect(!result.output.contains(Self.secret))
            #expect(result.output.contains("summary: 2 replayed"), "\(result.output)")

            // Gone from the dead-letter stream, the other one untouched.
            #expect(try await Self.entries(redis, "chat:messages:dlq") == [made.letter(Self.invalidUUID)])
            #expect(try await Self.length(redis, "chat:messages") == sourceLength + 2)
            var newIDs: [String] = []
            for index in chosen {
                let old = made.letter(index).id
                let line = result.output.split(separator: "\n").first { $0.hasPrefix("replayed \(old) -> ") }
                let newID = line.flatMap { $0.split(separator: " ").dropFirst(3).first }.map(String.init)
                guard let newID else {
                    Issue.record("no line for \(old) in \(result.output)")
                    continue
                }
                newIDs.append(newID)
                #expect(line?.contains(" on chat:messages ") == true)
                // Exactly the original fields, in order, byte for byte, and no dlq_ field.
                let replayed = try await Self.entries(redis, "chat:messages", from: newID, to: newID)
                #expect(replayed.map(\.fields) == [made.bad[index]])
            }

            // They are still bad: a run dead-letters them again, for the same reasons.
            let run = try await HistorianProcess.run(["run", "--once"], environment: environment.historianEnvironment)
            #expect(run.status == 0, "\(run.errors)")
            let letters = try await Self.entries(redis, "chat:messages:dlq")
            #expect(letters.count == 3)
            for (index, newID) in zip(chosen, newIDs) {
                let again = letters.first { $0.value("dlq_source_id") == newID }
                #expect(again?.value("dlq_reason") == made.letter(index).value("dlq_reason"), "\(newID)")
                #expect(again?.original == made.bad[index])
            }
            #expect(
                try await environment.scalar("SELECT count(*) FROM messages WHERE id = '\(Producer.uuid(0x31, 4))'")
                    == 0
            )
            #expect(try await environment.pendingCount() == 0)
        }
    }

    @Test("dlq replay --dry-run writes nothing; --reason and --all --count take the oldest of their kind")
    func replayDryRunAndReason() async throws {
        try await TestEnvironment.with { environment in
            let redis = try await environment.redis()
            defer { redis.close() }
            let made = try await Self.makeDeadLetters(environment, redis)

            let before = try await Self.snapshot(redis)
            let dryAll = try await HistorianProcess.run(
                ["dlq", "replay", "--all", "--dry-run"],
                environment: environment.historianEnvironment
            )
            let dryOne = try await HistorianProcess.run(
                ["dlq", "replay", "--dry-run", made.letter(Self.userMismatch).id],
                environment: environment.historianEnvironment
            )
            #expect(try await Self.snapshot(redis) == before)
            #expect(dryAll.status == 0, "\(dryAll.errors)")
            #expect(dryOne.status == 0, "\(dryOne.errors)")
            for letter in made.letters {
                #expect(dryAll.output.contains("would replay \(letter.id) -> chat:messages"), "\(dryAll.output)")
            }
            #expect(dryAll.output.contains("summary (dry run, nothing written): 3 would be replayed"))
            #expect(dryOne.output.contains("would replay \(made.letter(Self.userMismatch).id) -> chat:messages"))
            #expect(!dryOne.output.contains(made.letter(Self.invalidRole).id))

            // A reason no dead letter has: nothing to do, nothing done.
            let none = try await HistorianProcess.run(
                ["dlq", "replay", "--reason", "conflict"],
                environment: environment.historianEnvironment
            )
            #expect(none.status == 0, "\(none.errors)")
            #expect(none.output.contains("summary: 0 replayed"))
            #expect(try await Self.snapshot(redis) == before)

            let sourceLength = try await Self.length(redis, "chat:messages")
            let byReason = try await HistorianProcess.run(
                ["dlq", "replay", "--reason", "invalid_uuid"],
                environment: environment.historianEnvironment
            )
            #expect(byReason.status == 0, "\(byReason.errors)")
            #expect(byReason.output.contains("replayed \(made.letter(Self.invalidUUID).id) -> "))
            #expect(byReason.output.contains("summary: 1 replayed"))
            #expect(
                try await Self.entries(redis, "chat:messages:dlq").map(\.id)
                    == [made.letter(Self.invalidRole).id, made.letter(Self.userMismatch).id]
            )
            #expect(try await Self.length(redis, "chat:messages") == sourceLength + 1)

            let oldest = try await HistorianProcess.run(
                ["dlq", "replay", "--all", "--count", "1"],
                environment: environment.historianEnvironment
            )
            #expect(oldest.status == 0, "\(oldest.errors)")
            #expect(oldest.output.contains("replayed \(made.letter(Self.invalidRole).id) -> "))
            #expect(try await Self.entries(redis, "chat:messages:dlq").map(\.id) == [made.letter(Self.userMismatch).id])
            #expect(try await Self.length(redis, "chat:messages") == sourceLength + 2)
        }
    }

    @Test("dlq replay: an unknown ID exits 1 after the rest are replayed; no source stream means --stream")
    func replayUnknownID() async throws {
        try await TestEnvironment.with { environment in
            let redis = try await environment.redis()
            defer { redis.close() }
            let made = try await Self.makeDeadLetters(environment, redis)
            let known = made.letter(Self.userMismatch)

            let result = try await HistorianProcess.run(
                ["dlq", "replay", "1-0", known.id],
                environment: environment.historianEnvironment
            )
            #expect(result.status == 1, "\(result.output)\(result.errors)")
            #expect(result.output.contains("not found: 1-0 is not in chat:messages:dlq"), "\(result.output)")
            #expect(result.output.contains("replayed \(known.id) -> "), "\(result.output)")
            #expect(result.output.contains("summary: 1 replayed, 1 not found"))
            #expect(try await Self.entries(redis, "chat:messages:dlq", from: known.id, to: known.id).isEmpty)
            let line = result.output.split(separator: "\n").first { $0.hasPrefix("replayed \(known.id) -> ") }
            let newID = try #require(line?.split(separator: " ").dropFirst(3).first.map(String.init))
            let replayed = try await Self.entries(redis, "chat:messages", from: newID, to: newID)
            #expect(replayed.map(\.fields) == [made.bad[Self.userMismatch]])

            // A dead letter that does not name its source stream goes to the configured stream.
            let handMade = [Field("message_id", "m-1"), Field("content", "\(Self.secret) four")]
            let handMadeID = try #require(
                try await redis.send(
                    xadd(
                        (handMade + [Field("dlq_reason", "invalid_uuid"), Field("dlq_source_id", "5-0")]).map(\.pair),
                        to: "chat:messages:dlq"
                    )
                ).string
            )
            let fallback = try await HistorianProcess.run(
                ["dlq", "replay", handMadeID, "--stream", "other:stream"],
                environment: environment.historianEnvironment
            )
            #expect(fallback.status == 0, "\(fallback.output)\(fallback.errors)")
            #expect(fallback.output.contains("replayed \(handMadeID) -> "), "\(fallback.output)")
            #expect(try await Self.entries(redis, "other:stream").map(\.fields) == [handMade])

            // Naming no dead letter at all is a usage error, and changes nothing.
            let before = try await Self.snapshot(redis)
            let nothing = try await HistorianProcess.run(
                ["dlq", "replay"],
                environment: environment.historianEnvironment
            )
            #expect(nothing.status == 64)
            #expect(nothing.errors.contains("entry IDs, --reason CODE or --all"), "\(nothing.errors)")
            let both = try await HistorianProcess.run(
                ["dlq", "replay", "--all", made.letter(Self.invalidRole).id],
                environment: environment.historianEnvironment
            )
            #expect(both.status == 64)
            #expect(try await Self.snapshot(redis) == before)
        }
    }

    // MARK: - Helpers

    static func entries(
        _ redis: RedisConnection,
        _ stream: String,
        from: String = "-",
        to: String = "+"
    ) async throws -> [Entry] {
        try await streamRecords(redis, stream, from: from, to: to).map { record in
            Entry(id: record.id, fields: record.fields.map { Field($0.0, $0.1) })
        }
    }

    static func length(_ redis: RedisConnection, _ stream: String) async throws -> Int {
        Int(try await redis.send("XLEN", RedisArgument(stream)).int ?? -1)
    }

    /// Both streams and the fallback stream, entry by entry, with their counters: whatever a
    /// dry run must leave as it was, including an entry added and deleted again.
    static func snapshot(_ redis: RedisConnection) async throws -> [RESPValue] {
        var values: [RESPValue] = []
        for stream in ["chat:messages", "chat:messages:dlq", "other:stream"] {
            values.append(try await redis.send("XRANGE", RedisArgument(stream), "-", "+"))
            if try await redis.send("EXISTS", RedisArgument(stream)).int == 1 {
                values.append(try await redis.send("XINFO", "STREAM", RedisArgument(stream)))
            }
        }
        return values
    }
}
