import Foundation
import Historian
import RedisClient
import Testing

/// The same `message_id` arriving again, field by field (contract §1, "Once" and "Conflicts are
/// never overwrites"): a different `role`, `conversation_id` or `content` is a dead letter
/// (`conflict`), any other difference a repeat that is acknowledged and not stored again. In
/// both cases PostgreSQL keeps the first version, every column of it.
@Suite(.serialized)
struct ConflictMatrixTests {
    /// How the second copy reaches the daemon.
    enum Arrival: String, CaseIterable, Sendable, CustomTestStringConvertible {
        /// Both copies in the stream before a single `run --once`: one batch holds both.
        case oneBatch
        /// The first copy stored by one `run --once`, the second read by the next.
        case acrossBatches

        var testDescription: String { rawValue }
    }

    typealias Fields = [(String, String)]

    /// A second copy of a message: what it changes, and what must become of it.
    struct Variant: Sendable {
        enum Expected: Sendable { case conflict, repeated }
        var name: String
        var expected: Expected
        var change: @Sendable (Fields) -> Fields
    }

    static let user = "u-conflict"
    static let conversation = "0193c000-0000-7000-8000-000000000001"
    /// The conversation a conflicting copy names instead: the same user's, not yet existing.
    static let otherConversation = "0193c000-0000-7000-8000-000000000002"

    static func replacing(_ name: String, with value: String?) -> @Sendable (Fields) -> Fields {
        { fields in
            var changed: Fields = []
            for (field, old) in fields {
                if field == name {
                    if let value { changed.append((field, value)) }
                } else {
                    changed.append((field, old))
                }
            }
            if let value, !fields.contains(where: { $0.0 == name }) { changed.append((name, value)) }
            return changed
        }
    }

    static let variants: [Variant] = [
        Variant(name: "another role", expected: .conflict, change: replacing("role", with: "assistant")),
        Variant(name: "another conversation_id, same user", expected: .conflict, change: replacing("conversation_id", with: otherConversation)),
        Variant(name: "another content", expected: .conflict) { fields in
            replacing("content", with: fields.first { $0.0 == "content" }!.1 + " (edited)")(fields)
        },
        // The same text to the eye, other bytes: é as e + U+0301 instead of U+00E9.
        Variant(name: "content in another Unicode normalization", expected: .conflict) { fields in
            let content = fields.first { $0.0 == "content" }!.1
            return replacing("content", with: content.decomposedStringWithCanonicalMapping)(fields)
        },
        Variant(name: "another created_at", expected: .repeated, change: replacing("created_at", with: "2001-02-03T04:05:06Z")),
        Variant(name: "another metadata", expected: .repeated, change: replacing("metadata", with: #"{"source":"retry","n":2}"#)),
        Variant(name: "another session_id", expected: .repeated, change: replacing("session_id", with: "s-other")),
        Variant(
            name: "other contexts",
            expected: .repeated,
            change: replacing("contexts", with: #"[{"doc_id":"d-other","content":"else","score":0.1,"metadata":null}]"#)
        ),
        Variant(name: "other tokens_used and latency_ms", expected: .repeated) { fields in
            replacing("latency_ms", with: "9")(replacing("tokens_used", with: "1")(fields))
        },
        Variant(name: "another title and dept_id", expected: .repeated) { fields in
            replacing("dept_id", with: "d-other")(replacing("title", with: "Another title")(fields))
        },
        Variant(name: "optional fields left out", expected: .repeated) { fields in
            let required: Set = ["message_id", "conversation_id", "user_id", "role", "content"]
            return fields.filter { required.contains($0.0) }
        },
        Variant(name: "IDs in upper case", expected: .repeated) { fields in
            fields.map { ["message_id", "conversation_id"].contains($0.0) ? ($0.0, $0.1.uppercased()) : $0 }
        },
    ]

    /// The first copy of the message that `variants[index]` copies again: every field set.
    static func original(_ index: Int) -> Fields {
        var fields: Fields = [
            ("message_id", String(format: "0193c100-0000-7000-8000-%012x", index + 1)),
            ("conversation_id", conversation),
            ("user_id", user),
            ("role", "user"),
            ("content", "Original #\(index): café in München — \"quoted\", tab\there 🚀"),
            ("created_at", String(format: "2024-05-06T07:08:%02d.123456Z", index)),
            ("session_id", "s-first"),
            ("dept_id", "d-7"),
            ("tokens_used", "\(100 + index)"),
            ("latency_ms", "\(2000 + index)"),
            ("metadata", #"{"source":"web","n":\#(index),"nested":{"a":[1,2.5,"x"]}}"#),
            ("contexts", #"[{"doc_id":"d-\#(index)","content":"retrieved ü","score":0.75,"metadata":{"page":3}},{"doc_id":null,"content":"second","score":1,"metadata":{}}]"#),
        ]
        // One explicit title for the conversation, on the variant that tries another one.
        if variants[index].name == "another title and dept_id" { fields.append(("title", "First title")) }
        return fields
    }

    @Test("same message_id again: role, conversation_id, content are conflicts; other fields are repeats; the first version stays", arguments: Arrival.allCases)
    func conflictMatrix(arrival: Arrival) async throws {
        try await TestEnvironment.with { environment in
            let redis = try await environment.redis()
            defer { redis.close() }
            let originals = Self.variants.indices.map(Self.original)
            let copies = Self.variants.indices.map { Self.variants[$0].change(originals[$0]) }

            var originalIDs: [String]
            var copyIDs: [String]
            var before: [String] = []
            switch arrival {
            case .oneBatch:
                // Each original followed by its copy, all read in one batch.
                let ids = try await Producer.appendRaw(zip(originals, copies).flatMap { [$0, $1] }, redis: redis)
                originalIDs = stride(from: 0, to: ids.count, by: 2).map { ids[$0] }
                copyIDs = stride(from: 1, to: ids.count, by: 2).map { ids[$0] }
                let log = try await Self.runOnce(environment, options: ["--log-level", "debug"])
                let batches = log.split(separator: "\n").filter { $0.contains("batch done") }
                #expect(batches.count == 1 && batches[0].contains("entries=\(ids.count)"), "not one batch: \(batches)")
            case .acrossBatches:
                originalIDs = try await Producer.appendRaw(originals, redis: redis)
                try await Self.runOnce(environment)
                #expect(try await environment.scalar("SELECT count(*) FROM messages") == originals.count)
                before = try await Self.snapshot(environment)
                copyIDs = try await Producer.appendRaw(copies, redis: redis)
                try await Self.runOnce(environment)
            }

            // Every entry acknowledged: nothing left pending, everything read.
            #expect(try await environment.pendingCount() == 0)

            // PostgreSQL holds the first versions, every column, and nothing else.
            #expect(try await environment.scalar("SELECT count(*) FROM messages") == originals.count)
            for (index, fields) in originals.enumerated() {
                let differing = try await Self.columnsDiffering(from: fields, entry: originalIDs[index], in: environment)
                #expect(differing.isEmpty, "\(Self.variants[index].name): the stored row differs from the first copy in \(differing)")
            }
            let conversations = try await environment.rows(
                "SELECT id::text, user_id, dept_id, title, created_at = '2024-05-06T07:08:00.123456Z' FROM conversations"
            )
            // A dead-lettered copy creates no conversation, and repeats change none.
            #expect(conversations == [[Self.conversation, Self.user, "d-7", "First title", "t"]])
            if arrival == .acrossBatches {
                let changed = Self.changes(from: before, to: try await Self.snapshot(environment))
                #expect(changed.isEmpty, "rows changed by the second copies: \(changed)")
            }

            // Conflicts are dead letters, verbatim with their reason; repeats are not.
            let letters = try await Self.deadLetters(redis)
            let conflicts = Self.variants.indices.filter { Self.variants[$0].expected == .conflict }
            #expect(letters.count == conflicts.count, "dead letters: \(letters.map(\.reason))")
            for index in Self.variants.indices {
                let matching = letters.filter { $0.sourceID == copyIDs[index] }
                switch Self.variants[index].expected {
                case .repeated:
                    #expect(matching.isEmpty, "\(Self.variants[index].name): a repeat was dead-lettered (\(matching.map(\.reason)))")
                case .conflict:
                    #expect(matching.count == 1, "\(Self.variants[index].name): \(matching.count) dead letters")
                    guard let letter = matching.first else { continue }
                    #expect(letter.reason == "conflict", "\(Self.variants[index].name)")
                    #expect(letter.sourceStream == "chat:messages")
                    #expect(letter.detail?.isEmpty == false)
                    #expect(letter.at.flatMap(TestTime.parseRFC3339) != nil, "dlq_at \(letter.at ?? "-")")
                    #expect(
                        letter.original == copies[index].map { ($0.0, Array($0.1.utf8)) }.map(Self.Pair.init),
                        "\(Self.variants[index].name): the dead letter's fields are not the entry's, verbatim"
                    )
                    #expect(letter.dlqFieldNames == ["dlq_reason", "dlq_detail", "dlq_source_stream", "dlq_source_id", "dlq_at"])
                }
            }
        }
    }

    /// Runs `historian run --once`; returns its log.
    @discardableResult
    static func runOnce(_ environment: TestEnvironment, options: [String] = []) async throws -> String {
        let run = try await HistorianProcess.run(["run", "--once"] + options, environment: environment.historianEnvironment)
        #expect(run.status == 0, "\(run.errors)")
        return run.errors
    }

    /// Every row of the three tables, every column, as PostgreSQL prints it.
    static func snapshot(_ environment: TestEnvironment) async throws -> [String] {
        var lines: [String] = []
        for table in ["conversations", "messages", "message_contexts"] {
            lines += try await environment.rows("SELECT '\(table) ' || to_jsonb(t)::text FROM \(table) AS t ORDER BY t.id").map { $0[0] ?? "NULL" }
        }
        return lines
    }

    /// The lines only one of two snapshots has, marked `-` (gone) and `+` (new).
    static func changes(from before: [String], to after: [String]) -> [String] {
        before.filter { !after.contains($0) }.map { "- " + $0 } + after.filter { !before.contains($0) }.map { "+ " + $0 }
    }

    /// The names of the `messages` columns (and `contexts`) in which the stored row of this
    /// message differs from `fields` as the entry `entry` gave them. Text is compared as bytes.
    static func columnsDiffering(from fields: Fields, entry: String, in environment: TestEnvironment) async throws -> [String] {
        func field(_ name: String) -> String? { fields.first { $0.0 == name }?.1 }
        let postgres = try await environment.postgres()
        defer { postgres.close() }
        let columns = [
            "conversation_id", "role", "content", "tokens_used", "latency_ms", "created_at", "metadata", "session_id",
            "stream_entry", "contexts",
        ]
        let rows = try await postgres.query(
            """
            SELECT m.conversation_id = $2::uuid,
                m.role = $3,
                convert_to(m.content, 'UTF8') = convert_to($4, 'UTF8'),
                m.tokens_used IS NOT DISTINCT FROM $5::integer,
                m.latency_ms IS NOT DISTINCT FROM $6::integer,
                m.created_at = $7::timestamptz,
                m.metadata IS NOT DISTINCT FROM $8::jsonb,
                m.session_id IS NOT DISTINCT FROM $9,
                m.stream_entry = $10,
                (SELECT coalesce(jsonb_agg(jsonb_build_object('doc_id', c.doc_id, 'content', c.content, 'score', c.score,
                        'metadata', c.metadata) ORDER BY c.position), '[]')
                    FROM message_contexts AS c WHERE c.message_id = m.id) = $11::jsonb
            FROM messages AS m WHERE m.id = $1::uuid
            """,
            [
                field("message_id"), field("conversation_id"), field("role"), field("content"), field("tokens_used"),
                field("latency_ms"), field("created_at"), field("metadata"), field("session_id"), entry,
                field("contexts") ?? "[]",
            ]
        )
        guard let row = rows.rows.first else { return ["(no row)"] }
        return zip(columns, row).filter { $0.1 != "t" }.map(\.0)
    }

    struct Pair: Equatable, CustomStringConvertible {
        var name: String
        var value: [UInt8]
        init(_ pair: (String, [UInt8])) { (name, value) = pair }
        var description: String { "\(name)=\(String(decoding: value, as: UTF8.self))" }
    }

    struct Letter {
        var original: [Pair]
        var dlqFieldNames: [String]
        var fields: [String: String]
        var reason: String? { fields["dlq_reason"] }
        var detail: String? { fields["dlq_detail"] }
        var sourceStream: String? { fields["dlq_source_stream"] }
        var sourceID: String? { fields["dlq_source_id"] }
        var at: String? { fields["dlq_at"] }
    }

    /// The dead-letter stream's entries: their non-`dlq_` fields in order, as bytes, and the rest.
    static func deadLetters(_ redis: RedisConnection, stream: String = "chat:messages:dlq") async throws -> [Letter] {
        try await streamRecords(redis, stream).map { record in
            var letter = Letter(original: [], dlqFieldNames: [], fields: [:])
            for (name, value) in record.fields {
                if name.hasPrefix("dlq_") {
                    letter.dlqFieldNames.append(name)
                    letter.fields[name] = String(decoding: value, as: UTF8.self)
                } else {
                    letter.original.append(Pair((name, value)))
                }
            }
            return letter
        }
    }
}
