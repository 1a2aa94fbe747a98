import Foundation
import Historian
import LocalServers
import Logging
import PostgresClient
import Testing

/// `historian export`: one conversation from PostgreSQL or from its archive file, as jsonl, json
/// and csv, against real servers and real files.
@Suite(.serialized)
struct ExportTests {
    /// Runs `historian export ARGUMENTS…` to completion, keeping standard output as bytes and
    /// the peak of its memory.
    static func export(_ arguments: [String], _ environment: TestEnvironment) async throws -> HistorianProcess.Measured {
        try await HistorianProcess.runMeasured(["export"] + arguments, environment: environment.historianEnvironment)
    }

    /// The archive file's lines, as `gzip -dc` gives them.
    static func decompressed(_ path: String) throws -> [UInt8] {
        let result = try runProgram(["gzip", "-dc", path])
        #expect(result.status == 0, "gzip -dc \(path)")
        return [UInt8](result.output)
    }

    /// The message rows PostgreSQL holds for `conversation`, in its order, as the export's CSV
    /// columns would have them: id, conversation_id, role, created_at (as `row_to_json` writes
    /// it in UTC), content, tokens_used, latency_ms, metadata, session_id, number of contexts.
    static func storedMessages(_ environment: TestEnvironment, _ conversation: String) async throws -> [[String?]] {
        let postgres = try await environment.postgres()
        defer { postgres.close() }
        return try await postgres.withSession { session in
            try session.execute("SET TIME ZONE 'UTC'")
            return try session.query(
                """
                SELECT m.id::text, m.conversation_id::text, m.role, to_json(m.created_at) #>> '{}', m.content,
                    m.tokens_used::text, m.latency_ms::text, m.metadata::text, m.session_id,
                    (SELECT count(*) FROM message_contexts AS x WHERE x.message_id = m.id)::text
                FROM messages AS m WHERE m.conversation_id = $1::uuid ORDER BY m.created_at, m.arrival
                """,
                [conversation]
            ).rows
        }
    }

    /// The ArchiveTests workload, then three more messages for its first conversation whose
    /// `created_at` puts them before all the others and out of arrival order (two of them tied,
    /// so arrival decides), one with numbers, metadata, contexts, and content that CSV must quote.
    static func storeWithOrderedExtras(_ environment: TestEnvironment) async throws -> String {
        let conversation = try await storeConversations(environment, idle: 1)[0]
        func message(_ number: Int, _ createdAt: String, _ content: String, _ more: [(String, String)] = []) -> [(String, String)] {
            [
                ("message_id", Producer.uuid(0x03, number)), ("conversation_id", conversation), ("user_id", "u-0"),
                ("role", "assistant"), ("content", content), ("created_at", createdAt), ("session_id", "s-0"),
            ] + more
        }
        let extras = [
            message(1, "2020-01-02T00:00:00Z", "second by time, first to arrive"),
            message(2, "2020-01-01T00:00:00.250+02:00", "first by time"),
            message(
                3,
                "2020-01-02T00:00:00Z",
                "tied with the second, arrived after it: commas, \"quotes\"\r\nCRLF\nLF\rCR\tand a tab",
                [
                    ("tokens_used", "17"), ("latency_ms", "250"),
                    ("metadata", #"{"tags": ["a,b", "c\"d"], "nested": {"k": 1}}"#),
                    (
                        "contexts",
                        #"[{"doc_id":"d-1","content":"one","score":0.5,"metadata":null},"#
                            + #"{"doc_id":"d-2","content":"two, with a comma","score":1,"metadata":{"page":2}}]"#
                    ),
                ]
            ),
        ]
        let redis = try await environment.redis()
        defer { redis.close() }
        try await Producer.appendRaw(extras, redis: redis)
        let run = try await HistorianProcess.run(["run", "--once"], environment: environment.historianEnvironment)
        #expect(run.status == 0, "\(run.errors)")
        #expect(try await environment.scalar("SELECT count(*) FROM messages WHERE conversation_id = '\(conversation)'") == 13)
        return conversation
    }

    @Test("jsonl from PostgreSQL is the archive file's lines byte for byte; once archived, every format reads the file and prints the same")
    func sameBytesFromBothSources() async throws {
        try await TestEnvironment.with { environment in
            let directory = environment.archiveDir
            let conversation = try await Self.storeWithOrderedExtras(environment)
            _ = try await environment.rows("UPDATE conversations SET updated_at = now() - interval '40 days' WHERE id = '\(conversation)'")
            let active = try #require(try await environment.rows("SELECT id::text FROM conversations WHERE id <> '\(conversation)' LIMIT 1").first?.first ?? nil)

            var fromPostgres: [String: [UInt8]] = [:]
            for format in ["jsonl", "json", "csv"] {
                let printed = try await Self.export([conversation, "--format", format], environment)
                #expect(printed.status == 0, "\(printed.errors)")
                #expect(printed.errors.contains("from PostgreSQL"), "\(printed.errors)")
                #expect(!printed.output.isEmpty)
                fromPostgres[format] = printed.output
            }

            let pass = try await HistorianProcess.run(["archive", "--archive-dir", directory], environment: environment.historianEnvironment)
            #expect(pass.status == 0, "\(pass.errors)")
            #expect(try await environment.scalar("SELECT count(*) FROM conversations WHERE id = '\(conversation)'") == 0)
            let path = try await archivePath(directory, conversation, in: environment)
            let lines = try Self.decompressed(path)
            #expect(lines.count(where: { $0 == 0x0A }) == 14, "the conversation's line and 13 messages'")
            #expect(fromPostgres["jsonl"] == lines, "export --format jsonl from PostgreSQL is the decompressed archive")

            for format in ["jsonl", "json", "csv"] {
                let printed = try await Self.export([conversation, "--format", format], environment)
                #expect(printed.status == 0, "\(printed.errors)")
                #expect(printed.errors.contains("from archive \(path)"), "\(printed.errors)")
                #expect(printed.output == fromPostgres[format], "\(format) from the archive is \(format) from PostgreSQL")
            }
            let byDefault = try await Self.export([conversation], environment)
            #expect(byDefault.output == fromPostgres["json"], "json is the default")
            // The conversation is still archived, the file still there: export changes nothing.
            #expect(try await environment.scalar("SELECT count(*) FROM archived_conversations WHERE id = '\(conversation)'") == 1)
            #expect(FileManager.default.fileExists(atPath: path))
            // A conversation that was not archived still comes from PostgreSQL.
            let other = try await Self.export([active, "--format", "jsonl"], environment)
            #expect(other.status == 0 && other.errors.contains("from PostgreSQL"), "\(other.errors)")
        }
    }

    @Test("json is one document: the conversation, then its messages in PostgreSQL's order with their contexts")
    func jsonDocument() async throws {
        try await TestEnvironment.with { environment in
            let conversation = try await Self.storeWithOrderedExtras(environment)
            let printed = try await Self.export([conversation, "--format", "json"], environment)
            #expect(printed.status == 0, "\(printed.errors)")
            #expect(printed.output.last == 0x0A && printed.output.count(where: { $0 == 0x0A }) == 1, "one line")

            let document = try #require(try JSONSerialization.jsonObject(with: Data(printed.output)) as? [String: Any])
            #expect(Set(document.keys) == ["conversation", "messages"])
            let head = try #require(document["conversation"] as? [String: Any])
            #expect(head["type"] as? String == "conversation")
            #expect(head["id"] as? String == conversation)
            #expect(head["user_id"] as? String == "u-0")
            let messages = try #require(document["messages"] as? [[String: Any]])

            let stored = try await Self.storedMessages(environment, conversation)
            #expect(messages.count == stored.count)
            #expect(messages.map { $0["id"] as? String } == stored.map { $0[0] }, "PostgreSQL's order")
            #expect(
                messages.prefix(3).map { $0["id"] as? String } == [Producer.uuid(0x03, 2), Producer.uuid(0x03, 1), Producer.uuid(0x03, 3)],
                "created_at first, then arrival"
            )
            #expect(messages.map { Array(($0["content"] as? String ?? "").utf8) } == stored.map { Array(($0[4] ?? "").utf8) })
            #expect(messages.allSatisfy { $0["type"] as? String == "message" && $0["conversation_id"] as? String == conversation })
            #expect(messages.map { ($0["contexts"] as? [Any])?.count ?? -1 } == stored.map { Int($0[9] ?? "") ?? -2 })

            let tied = messages[2]
            #expect(tied["tokens_used"] as? Int == 17 && tied["latency_ms"] as? Int == 250)
            let contexts = try #require(tied["contexts"] as? [[String: Any]])
            #expect(contexts.map { $0["doc_id"] as? String } == ["d-1", "d-2"])
            #expect(contexts.map { $0["content"] as? String } == ["one", "two, with a comma"])
            #expect((contexts[1]["metadata"] as? [String: Any])?["page"] as? Int == 2)
            #expect((tied["metadata"] as? [String: Any])?["tags"] as? [String] == ["a,b", "c\"d"])
        }
    }

    @Test("csv has a header and one RFC 4180 row per message; content with commas, quotes and line breaks comes back as stored")
    func csvRows() async throws {
        try await TestEnvironment.with { environment in
            let conversation = try await Self.storeWithOrderedExtras(environment)
            let printed = try await Self.export([conversation, "--format", "csv"], environment)
            #expect(printed.status == 0, "\(printed.errors)")
            #expect(printed.errors.contains("from PostgreSQL"), "\(printed.errors)")

            let records = try CSV.parse(printed.output)
            #expect(
                records.first
                    == ["id", "conversation_id", "role", "created_at", "content", "tokens_used", "latency_ms", "metadata", "session_id", "contexts"]
            )
            let rows = Array(records.dropFirst())
            let stored = try await Self.storedMessages(environment, conversation)
            #expect(rows.count == stored.count && rows.count == 13)
            for (row, message) in zip(rows, stored) {
                #expect(row.count == 10)
                guard row.count == 10 else { continue }
                // Content byte for byte; the other text columns as stored, NULL as empty.
                #expect(Array(row[4].utf8) == Array((message[4] ?? "").utf8), "content of \(message[0] ?? "?")")
                for column in [0, 1, 2, 3, 5, 6, 8, 9] {
                    #expect(row[column] == message[column] ?? "", "column \(column) of \(message[0] ?? "?")")
                }
                // metadata: the same JSON, written compactly.
                if let stored = message[7] {
                    let exported = try JSONSerialization.jsonObject(with: Data(row[7].utf8)) as? NSDictionary
                    let expected = try JSONSerialization.jsonObject(with: Data(stored.utf8)) as? NSDictionary
                    #expect(exported != nil && exported == expected, "metadata of \(message[0] ?? "?")")
                    #expect(!row[7].contains(": ") && !row[7].contains(", "), "compact: \(row[7])")
                } else {
                    #expect(row[7] == "")
                }
            }
            // The workload's own content with tabs, newlines and quotes, and the extra message's.
            #expect(rows.contains { $0[4].hasPrefix("tabs\tand\nnewlines\r\nand \\backslashes\\ and \"quotes\"") })
            #expect(rows.contains { $0[4].hasPrefix("Grüße aus München — naïve café, déjà vu") })
            let tied = try #require(rows.first { $0[0] == Producer.uuid(0x03, 3) })
            #expect(Array(tied[4].utf8) == Array("tied with the second, arrived after it: commas, \"quotes\"\r\nCRLF\nLF\rCR\tand a tab".utf8))
            #expect(tied[5] == "17" && tied[6] == "250" && tied[8] == "s-0" && tied[9] == "2")
            #expect(tied[7] == #"{"nested":{"k":1},"tags":["a,b","c\"d"]}"#)
            #expect(rows.first { $0[0] == Producer.uuid(0x03, 2) }?[3] == "2019-12-31T22:00:00.25+00:00")
        }
    }

    @Test("an unknown conversation exits 1 and prints nothing; a bad ID or format is a usage error")
    func unknownConversation() async throws {
        try await TestEnvironment.with { environment in
            try await environment.migrate()
            let unknown = Producer.uuid(0x09, 1)
            let printed = try await Self.export([unknown], environment)
            #expect(printed.status == 1)
            #expect(printed.output.count == 0)
            #expect(printed.errors.contains("\(unknown): no such conversation"), "\(printed.errors)")

            let notUUID = try await Self.export(["not-a-uuid"], environment)
            #expect(notUUID.status == 64 && notUUID.output.count == 0)
            #expect(notUUID.errors.contains("'not-a-uuid' is not a UUID"), "\(notUUID.errors)")
            let format = try await Self.export([unknown, "--format", "xml"], environment)
            #expect(format.status == 64 && format.output.count == 0, "\(format.errors)")
        }
    }

    @Test("a damaged archive file, or one that is not the file recorded, exits 1 and prints nothing on standard output")
    func damagedArchive() async throws {
        try await TestEnvironment.with { environment in
            let directory = environment.archiveDir
            // Far more lines than one chunk of output, so that an export that printed as it
            // checked would have printed some before it found the damage.
            let conversation = Producer.uuid(0x06, 1)
            let messages = (0..<300).map { index in
                TestMessage(
                    id: Producer.uuid(0x07, index), conversationID: conversation, userID: "u-6", role: "user",
                    content: (0..<40).map { "line \($0) of message \(index), \"quoted\"" }.joined(separator: "\n")
                )
            }
            let redis = try await environment.redis()
            defer { redis.close() }
            try await Producer.append(messages, redis: redis)
            let run = try await HistorianProcess.run(["run", "--once"], environment: environment.historianEnvironment)
            #expect(run.status == 0, "\(run.errors)")
            _ = try await environment.rows("UPDATE conversations SET updated_at = now() - interval '40 days'")
            let pass = try await HistorianProcess.run(["archive", "--archive-dir", directory], environment: environment.historianEnvironment)
            #expect(pass.status == 0, "\(pass.errors)")
            let path = try await archivePath(directory, conversation, in: environment)
            let url = URL(fileURLWithPath: path)
            let original = try [UInt8](Data(contentsOf: url))
            let good = try await Self.export([conversation, "--format", "jsonl"], environment)
            #expect(good.status == 0, "\(good.errors)")
            #expect(good.output.count > 4 * (64 << 10), "\(good.output.count) bytes")

            // A byte flipped in the middle of the compressed data, and one in the gzip trailer's
            // CRC, which a reader finds only after every line has come out.
            for position in [original.count / 2, original.count - 6] {
                var bytes = original
                bytes[position] ^= 0xFF
                try Data(bytes).write(to: url)
                for format in ["jsonl", "json", "csv"] {
                    let printed = try await Self.export([conversation, "--format", format], environment)
                    #expect(printed.status == 1, "byte \(position), \(format)")
                    #expect(printed.output.count == 0, "byte \(position), \(format): \(printed.output.count) bytes printed")
                    #expect(printed.errors.contains("archive \(path):"), "\(printed.errors)")
                }
            }

            // The same lines compressed again: complete gzip, but not the file that was archived.
            try Data(original).write(to: url)
            let recompressed = try runProgram(["sh", "-c", "gzip -dc \"$0\" | gzip -1 -n > \"$0.again\" && mv \"$0.again\" \"$0\"", path])
            #expect(recompressed.status == 0)
            let sameLines = try Self.decompressed(path) == good.output
            #expect(sameLines, "the same lines inside")
            let changed = try [UInt8](Data(contentsOf: url)) != original
            #expect(changed, "the file's bytes differ")
            let other = try await Self.export([conversation, "--format", "jsonl"], environment)
            #expect(other.status == 1)
            #expect(other.output.count == 0)
            #expect(other.errors.contains("archive \(path): its SHA-256 is not the one recorded"), "\(other.errors)")

            // The file as archived exports again.
            try Data(original).write(to: url)
            let again = try await Self.export([conversation, "--format", "jsonl"], environment)
            let sameAgain = again.output == good.output
            #expect(again.status == 0 && sameAgain, "\(again.errors)")
        }
    }

    /// Newlines in `bytes`, at C's speed: a byte loop over 94 MiB in a debug build would hold
    /// one of the test pool's two threads for seconds, and other suites' timings with it.
    static func newlines(in bytes: [UInt8]) -> Int {
        bytes.withUnsafeBytes { buffer in
            guard var cursor = buffer.baseAddress else { return 0 }
            let end = cursor + buffer.count
            var count = 0
            while cursor < end, let found = memchr(cursor, 0x0A, end - cursor) {
                count += 1
                cursor = UnsafeRawPointer(found) + 1
            }
            return count
        }
    }

    /// Byte equality with `memcmp`, for the same reason.
    static func equal(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        guard !a.isEmpty else { return true }
        return a.withUnsafeBytes { x in b.withUnsafeBytes { y in memcmp(x.baseAddress!, y.baseAddress!, a.count) == 0 } }
    }

    /// The daemon's own memory target, well below the 94 MiB that the long conversation's lines
    /// take: an export that held them whole could not stay under it.
    static let memoryBound = 64 << 20

    @Test("a long conversation (94 MiB of lines) streams out in chunks, from PostgreSQL and from its archive, in bounded memory")
    func boundedMemory() async throws {
        try await TestEnvironment.with { environment in
            let directory = environment.archiveDir
            let conversation = Producer.uuid(0x04, 1)
            let count = 20_000
            let messages = (0..<count).map { index in
                TestMessage(
                    id: Producer.uuid(0x05, index),
                    conversationID: conversation,
                    userID: "u-big",
                    role: index % 2 == 0 ? "user" : "assistant",
                    content: String(repeating: "a large message, \"quoted\"\n", count: 160) + "#\(index)"
                )
            }
            let redis = try await environment.redis()
            defer { redis.close() }
            try await Producer.append(messages, redis: redis)
            let run = try await HistorianProcess.run(["run", "--once"], environment: environment.historianEnvironment, timeout: .seconds(300))
            #expect(run.status == 0, "\(run.errors)")
            #expect(try await environment.scalar("SELECT count(*) FROM messages WHERE conversation_id = '\(conversation)'") == count)
            // Quiet for 40 days before the first export, so that the archive's conversation line is the same.
            _ = try await environment.rows("UPDATE conversations SET updated_at = now() - interval '40 days' WHERE id = '\(conversation)'")

            let fromPostgres = try await Self.export([conversation, "--format", "jsonl"], environment)
            #expect(fromPostgres.status == 0, "\(fromPostgres.errors)")
            let newlines = Self.newlines(in: fromPostgres.output)
            #expect(newlines == count + 1)
            let size = fromPostgres.output.count
            #expect(size > 80 << 20, "the conversation is \(size) bytes of JSON lines")
            #expect(fromPostgres.peakResidentBytes > 0 && fromPostgres.peakResidentBytes < Self.memoryBound, "peak RSS \(fromPostgres.peakResidentBytes) bytes")

            // The library hands the bytes out as they come, never all at once.
            let flags = ["redis_url": environment.redisURL, "postgres_url": environment.postgresURL]
            let configuration = try await HistorianConfiguration.load(flags: flags, configFile: nil, environment: [:])
            var chunks = 0
            var largest = 0
            var total = 0
            var sources: [ConversationExport.Source] = []
            let outcome = try await ConversationExport(configuration: configuration, logger: Logger(label: "test")).run(
                CanonicalUUID(conversation)!,
                format: .jsonl,
                source: { sources.append($0) },
                output: { chunk in
                    chunks += 1
                    largest = max(largest, chunk.count)
                    total += chunk.count
                }
            )
            #expect(outcome == .exported(from: .postgres, messages: count))
            #expect(sources == [.postgres])
            #expect(total == size && chunks > size / (128 << 10) && largest < 128 << 10, "\(chunks) chunks, the largest \(largest) bytes")

            let pass = try await HistorianProcess.run(["archive", "--archive-dir", directory], environment: environment.historianEnvironment, timeout: .seconds(300))
            #expect(pass.status == 0, "\(pass.errors)")
            let fromArchive = try await Self.export([conversation, "--format", "jsonl"], environment)
            #expect(fromArchive.status == 0, "\(fromArchive.errors)")
            #expect(fromArchive.errors.contains("from archive"), "\(fromArchive.errors)")
            // Compared apart from the expectation, which would print all of both.
            let same = Self.equal(fromArchive.output, fromPostgres.output)
            #expect(same, "the archive's \(fromArchive.output.count) bytes are PostgreSQL's \(size)")
            #expect(fromArchive.peakResidentBytes > 0 && fromArchive.peakResidentBytes < Self.memoryBound, "peak RSS \(fromArchive.peakResidentBytes) bytes")
            print(
                "export: \(size >> 20) MiB of JSON lines; peak RSS \(fromPostgres.peakResidentBytes >> 20) MiB from PostgreSQL, "
                    + "\(fromArchive.peakResidentBytes >> 20) MiB from the archive"
            )
        }
    }
}

/// A strict RFC 4180 reader for the tests: records end in CRLF (the last one too), a quoted field
/// may hold anything with its quotes doubled, an unquoted one no quote, CR or LF.
enum CSV {
    struct Malformed: Error, CustomStringConvertible {
        var offset: Int
        var problem: String
        var description: String { "CSV at byte \(offset): \(problem)" }
    }

    static func parse(_ bytes: [UInt8]) throws -> [[String]] {
        let quote: UInt8 = 0x22
        let comma: UInt8 = 0x2C
        let cr: UInt8 = 0x0D
        let lf: UInt8 = 0x0A
        var records: [[String]] = []
        var record: [String] = []
        var field: [UInt8] = []
        var inQuotes = false
        var closedQuote = false
        var index = 0
        func endField() {
            record.append(String(decoding: field, as: UTF8.self))
            field.removeAll()
            closedQuote = false
        }
        while index < bytes.count {
            let byte = bytes[index]
            if inQuotes {
                if byte == quote {
                    if index + 1 < bytes.count, bytes[index + 1] == quote {
                        field.append(quote)
                        index += 2
                        continue
                    }
                    inQuotes = false
                    closedQuote = true
                } else {
                    field.append(byte)
                }
                index += 1
                continue
            }
            switch byte {
            case comma:
                endField()
            case cr:
                guard index + 1 < bytes.count, bytes[index + 1] == lf else { throw Malformed(offset: index, problem: "CR without LF") }
                endField()
                records.append(record)
                record.removeAll()
                index += 1
            case quote:
                guard field.isEmpty, !closedQuote else { throw Malformed(offset: index, problem: "a quote inside an unquoted field") }
                inQuotes = true
            case lf:
                throw Malformed(offset: index, problem: "LF outside quotes without CR")
            default:
                guard !closedQuote else { throw Malformed(offset: index, problem: "text after a closing quote") }
                field.append(byte)
            }
            index += 1
        }
        guard !inQuotes else { throw Malformed(offset: index, problem: "unterminated quoted field") }
        guard record.isEmpty, field.isEmpty, !closedQuote else { throw Malformed(offset: index, problem: "the last record has no CRLF") }
        return records
    }
}
