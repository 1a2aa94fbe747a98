import Foundation
import Testing

@testable import Historian

struct ValidationTests {
    static let good: [(String, String)] = [
        ("message_id", "0193A1B2-0000-7000-8000-000000000001"),
        ("conversation_id", "0193a1b2-0000-7000-8000-0000000000c1"),
        ("user_id", "u-42"),
        ("role", "user"),
        ("content", "How do I request vacation?"),
    ]

    static func entry(_ fields: [(String, String)], replacing: [String: String?] = [:]) -> StreamEntry {
        var list = fields.filter { replacing[$0.0] == nil }.map { StreamEntry.Field(name: Array($0.0.utf8), value: Array($0.1.utf8)) }
        for (name, value) in replacing {
            if let value = value { list.append(StreamEntry.Field(name: Array(name.utf8), value: Array(value.utf8))) }
        }
        return StreamEntry(id: StreamID(milliseconds: 1_700_000_000_123, sequence: 0), fields: list)
    }

    @Test(arguments: ["0-0", "1-1", "1700000000123-7", "18446744073709551615-18446744073709551615", "", "-", "1-", "-1", "1", "1-1-1", "a-1", "1-b", "+1-1", "18446744073709551616-0", " 1-1"])
    func streamIDsParseFromBytesAsFromText(text: String) {
        let fromBytes = Array(text.utf8).withUnsafeBytes { StreamID(ascii: $0) }
        #expect(fromBytes == StreamID(text))
        let valid = ["0-0", "1-1", "1700000000123-7", "18446744073709551615-18446744073709551615"]
        #expect(fromBytes?.description == (valid.contains(text) ? text : nil))
    }

    @Test func theContractsFieldNamesAreSharedAndOthersCopied() {
        func storage(_ bytes: [UInt8]) -> UnsafePointer<UInt8>? { bytes.withUnsafeBufferPointer(\.baseAddress) }
        for name in ["content", "message_id", "contexts", "x-trace", "Content", "conten"] {
            let read = Array(name.utf8).withUnsafeBytes { StreamEntry.Field.name(copying: $0) }
            let again = Array(name.utf8).withUnsafeBytes { StreamEntry.Field.name(copying: $0) }
            #expect(read == Array(name.utf8))
            #expect((storage(read) == storage(again)) == ["content", "message_id", "contexts"].contains(name))
        }
    }


    @Test func copiesOfAMessageAreValues() throws {
        let message = try EntryValidator().validate(Self.entry(Self.good)).get()
        var changed = message
        changed.content = "other"
        #expect(message.content == "How do I request vacation?" && changed.content == "other")
        #expect(message != changed && changed.id == message.id)
        changed.content = message.content
        #expect(changed == message && changed.hashValue == message.hashValue)
    }

    @Test func acceptsAGoodEntryAndCanonicalizesIDs() throws {
        let message = try EntryValidator().validate(Self.entry(Self.good)).get()
        #expect(message.id.text == "0193a1b2-0000-7000-8000-000000000001")
        #expect(message.role == .user)
        #expect(message.createdAt == Timestamp(milliseconds: 1_700_000_000_123))
        #expect(message.derivedTitle == "How do I request vacation?")
        #expect(message.sessionID == nil && message.metadata == nil)
    }

    @Test(arguments: [
        (["message_id": nil] as [String: String?], DeadLetterReason.missingField),
        (["conversation_id": nil], .missingField),
        (["user_id": nil], .missingField),
        (["role": nil], .missingField),
        (["content": nil], .missingField),
        (["user_id": ""], .missingField),
        (["message_id": "not-a-uuid"], .invalidUUID),
        (["message_id": "0193a1b2-0000-7000-8000-00000000000g"], .invalidUUID),
        (["conversation_id": "{0193a1b2-0000-7000-8000-0000000000c1}"], .invalidUUID),
        (["role": "admin"], .invalidRole),
        (["role": "User"], .invalidRole),
        (["content": "nul\u{0}byte"], .nulByte),
        (["user_id": String(repeating: "u", count: 256)], .tooLarge),
        (["session_id": String(repeating: "s", count: 256)], .tooLarge),
        (["dept_id": String(repeating: "d", count: 101)], .tooLarge),
        (["title": String(repeating: "t", count: 501)], .tooLarge),
        (["metadata": "[1,2]"], .invalidJSON),
        (["metadata": "{\"a\":"], .invalidJSON),
        (["metadata": #"{"a":"\u0000"}"#], .invalidJSON),
        (["metadata": "{\"a\":\"" + String(repeating: "x", count: 65_536) + "\"}"], .tooLarge),
        (["contexts": "{}"], .invalidJSON),
        (["contexts": #"[{"doc_id":5}]"#], .invalidJSON),
        (["contexts": #"[{"score":"high"}]"#], .invalidJSON),
        (["contexts": "[1]"], .invalidJSON),
        (["contexts": #"[{"score":true}]"#], .invalidJSON),
        (["contexts": #"[{"content":"a\u0000b"}]"#], .invalidJSON),
        (["contexts": #"[{"metadata":[1]}]"#], .invalidJSON),
        (["created_at": "yesterday"], .invalidTimestamp),
        (["created_at": "2026-11-21T08:37:07"], .invalidTimestamp),
        (["created_at": "2026-02-30T08:37:07Z"], .invalidTimestamp),
        (["tokens_used": "-1"], .invalidNumber),
        (["tokens_used": "1.5"], .invalidNumber),
        (["latency_ms": "99999999999"], .invalidNumber),
        (["latency_ms": ""], .invalidNumber),
    ])
    func rejectsWithTheContractsReason(_ replacing: [String: String?], _ reason: DeadLetterReason) {
        let result = EntryValidator().validate(Self.entry(Self.good, replacing: replacing))
        guard case .failure(let rejection) = result else {
            Issue.record("accepted \(replacing)")
            return
        }
        #expect(rejection.reason == reason)
        #expect(!rejection.detail.isEmpty)
    }

    @Test func rejectsInvalidUTF8() {
        var entry = Self.entry(Self.good)
        entry.fields[4].value = [0x48, 0xC3, 0x28]
        guard case .failure(let rejection) = EntryValidator().validate(entry) else {
            Issue.record("accepted invalid UTF-8")
            return
        }
        #expect(rejection.reason == .invalidUTF8)
    }

    @Test func contentLimitIsConfigurable() {
        let validator = EntryValidator(limits: ValidationLimits(maxContentBytes: 10))
        let long = Self.entry(Self.good, replacing: ["content": "01234567890"])
        let exact = Self.entry(Self.good, replacing: ["content": "0123456789"])
        #expect((try? validator.validate(long).get()) == nil)
        #expect((try? validator.validate(exact).get()) != nil)
    }

    @Test func detailsNeverQuoteTheValue() {
        let secret = "secret-content-\u{0}"
        guard case .failure(let rejection) = EntryValidator().validate(Self.entry(Self.good, replacing: ["content": secret])) else {
            Issue.record("accepted a NUL byte")
            return
        }
        #expect(!rejection.detail.contains("secret-content"))
    }

    @Test func optionalFieldsAreParsed() throws {
        let message = try EntryValidator().validate(
            Self.entry(
                Self.good,
                replacing: [
                    "created_at": "2026-11-21T10:37:07.5+02:00", "tokens_used": "12", "latency_ms": "0",
                    "metadata": #"{"k":[1,{"x":null}]}"#, "session_id": "s-9", "dept_id": "d-1",
                    "contexts": #"[{"doc_id":"d","content":"c","score":0.5,"metadata":{"p":1}},{"doc_id":null}]"#,
                    "title": "Vacation", "unknown_field": "ignored",
                ]
            )
        ).get()
        #expect(message.createdAt.rfc3339 == "2026-11-21T08:37:07.500000Z")
        #expect(message.tokensUsed == 12 && message.latencyMs == 0)
        #expect(message.sessionID == "s-9" && message.deptID == "d-1" && message.title == "Vacation")
        #expect(message.contexts != nil && message.metadata != nil)
    }

    @Test(arguments: ["0", "1", "1.0", "0.25", "-3", "null", "1e-5"])
    func contextScoresMayBeAnyNumber(_ score: String) throws {
        let contexts = #"[{"doc_id":"d","content":"c","score":"# + score + #","metadata":{"p":1}},{}]"#
        let message = try EntryValidator().validate(Self.entry(Self.good, replacing: ["contexts": contexts])).get()
        #expect(message.contexts == contexts)
    }

    @Test func anEscapedBackslashBeforeU0000IsNotANULEscape() throws {
        let metadata = #"{"path":"C:\\u0000"}"#
        let message = try EntryValidator().validate(Self.entry(Self.good, replacing: ["metadata": metadata])).get()
        #expect(message.metadata == metadata)
    }

    @Test func createdAtAcceptsUnixMilliseconds() throws {
        let message = try EntryValidator().validate(Self.entry(Self.good, replacing: ["created_at": "1700000000000"])).get()
        #expect(message.createdAt.rfc3339 == "2023-11-14T22:13:20.000000Z")
    }

    /// fuzz/regressions/entry/entry-id-after-year-9999: a producer may XADD any ID; without a
    /// `created_at`, the ID's time became the message's, and one past the year 9999 overflowed
    /// the microseconds (a trap: the daemon stopped at the entry, every time it was delivered).
    @Test(arguments: [
        StreamID(milliseconds: 1_700_000_000_120_000_123, sequence: 7),
        StreamID(milliseconds: .max, sequence: .max),
        StreamID(milliseconds: 253_402_300_800_000, sequence: 0),
    ])
    func anEntryIDAfterTheYear9999IsAnInvalidTimestampWithoutCreatedAt(_ id: StreamID) throws {
        let fields = Self.entry(Self.good).fields
        guard case .failure(let rejection) = EntryValidator().validate(StreamEntry(id: id, fields: fields)) else {
            Issue.record("accepted")
            return
        }
        #expect(rejection.reason == .invalidTimestamp)
        // With a created_at the ID's time is not used.
        let dated = fields + [StreamEntry.Field(name: Array("created_at".utf8), value: Array("1700000000000".utf8))]
        let message = try EntryValidator().validate(StreamEntry(id: id, fields: dated)).get()
        #expect(message.createdAt == Timestamp(milliseconds: 1_700_000_000_000))
    }

    /// fuzz/regressions/entry/created-at-sixteen-digit-milliseconds: a created_at of up to 16
    /// digits was read as milliseconds and multiplied before its range was checked, which
    /// overflowed past about 9.2 × 10^15.
    @Test(arguments: ["9999999999999999", "9223372036854776", "253402300800000"])
    func createdAtMillisecondsAfterTheYear9999AreRefused(_ value: String) {
        guard case .failure(let rejection) = EntryValidator().validate(Self.entry(Self.good, replacing: ["created_at": value])) else {
            Issue.record("accepted")
            return
        }
        #expect(rejection.reason == .invalidTimestamp)
    }

    @Test func createdAtMillisecondsUpToTheLastOfTheYear9999AreAccepted() throws {
        let message = try EntryValidator().validate(Self.entry(Self.good, replacing: ["created_at": "253402300799999"])).get()
        #expect(message.createdAt.rfc3339 == "9999-12-31T23:59:59.999000Z")
    }
}

struct TimestampTests {
    @Test(arguments: [
        ("1970-01-01T00:00:00Z", Int64(0)),
        ("2026-11-21T08:37:07.123456Z", Int64(1_795_250_227_123_456)),
        ("2026-11-21T09:37:07.123456+01:00", Int64(1_795_250_227_123_456)),
        ("2000-02-29T23:59:59.9999999-00:30", Int64(951_870_599_999_999)),
        ("0001-01-01T00:00:00Z", Int64(-62_135_596_800_000_000)),
        ("9999-12-31T23:59:59.999999Z", Int64(253_402_300_799_999_999)),
    ])
    func parses(_ text: String, _ microseconds: Int64) {
        #expect(Timestamp(rfc3339: text)?.microseconds == microseconds)
    }

    @Test(arguments: ["", "2026-11-21", "2026-11-21T08:37:07", "2026-13-01T00:00:00Z", "2026-11-21T24:00:00Z", "2026-11-21T08:37:07.Z", "2026-11-21T08:37:07+0100", "2026-11-21T08:37:07Zjunk"])
    func refuses(_ text: String) {
        #expect(Timestamp(rfc3339: text) == nil)
    }

    @Test func formatRoundTrips() {
        for microseconds: Int64 in [0, 1, -1, 951_870_599_999_999, 1_795_250_227_123_456, -62_135_596_800_000_000] {
            let timestamp = Timestamp(microseconds: microseconds)
            #expect(Timestamp(rfc3339: timestamp.rfc3339) == timestamp)
        }
        #expect(Timestamp(microseconds: -1).rfc3339 == "1969-12-31T23:59:59.999999Z")
    }
}

struct TitleTests {
    @Test(arguments: [
        ("How do I request vacation?", "How do I request vacation?"),
        ("  first   line\twith  spaces \nsecond line", "first line with spaces"),
        ("\n\n  \nafter blank lines", "after blank lines"),
        ("", nil),
        ("   \n\t ", nil),
        (String(repeating: "word ", count: 30), String(repeating: "word ", count: 16).trimmingCharacters(in: .whitespaces)),
        (String(repeating: "x", count: 100), String(repeating: "x", count: 80)),
        ("Grüße " + String(repeating: "ü", count: 78), "Grüße"),
    ] as [(String, String?)])
    func derives(_ content: String, _ title: String?) {
        let derived = Title.derive(from: content)
        #expect(derived == title)
        #expect((derived?.count ?? 0) <= 80)
    }

    /// The title reader stops early; it must agree with the plain definition (split the first
    /// non-blank line into words, take whole words up to 80 characters) on any input.
    @Test func derivationAgreesWithTheDefinition() {
        func definition(_ content: String) -> String? {
            let firstLine = content.split(omittingEmptySubsequences: true, whereSeparator: \.isNewline)
                .first { !$0.allSatisfy(\.isWhitespace) } ?? ""
            var title = ""
            for word in firstLine.split(whereSeparator: \.isWhitespace) {
                let separator = title.isEmpty ? 0 : 1
                if title.count + separator + word.count > Title.maximumLength {
                    if title.isEmpty { title = String(word.prefix(Title.maximumLength)) }
                    break
                }
                if separator == 1 { title += " " }
                title += word
            }
            return title.isEmpty ? nil : title
        }
        let pieces = ["a", "word", "Grüße", "日本語", "👩‍💻", " ", "  ", "\t", "\n", "\r\n", "\u{2028}", "\r", "\u{0B}", "\u{0C}", "\u{1F}", "\u{85}", String(repeating: "x", count: 79), String(repeating: "y", count: 85)]
        var state: UInt64 = 42
        for _ in 0..<3000 {
            var content = ""
            state = state &* 6364136223846793005 &+ 1442695040888963407
            for step in 0..<Int(state >> 59) + 1 {
                content += pieces[Int((state >> UInt64(step % 50)) % UInt64(pieces.count))]
            }
            #expect(Title.derive(from: content) == definition(content), "\(content.debugDescription)")
        }
    }
}

struct CanonicalUUIDTests {
    @Test func canonicalizes() {
        #expect(CanonicalUUID("0193A1B2-ABCD-7EF0-8000-00000000000F")?.text == "0193a1b2-abcd-7ef0-8000-00000000000f")
        #expect(CanonicalUUID("0193a1b2abcd7ef0800000000000000f") == nil)
        #expect(CanonicalUUID("0193a1b2-abcd-7ef0-8000-00000000000") == nil)
        #expect(CanonicalUUID("0193a1b2-abcd-7ef0-8000_00000000000f") == nil)
        #expect(CanonicalUUID("0193a1b2-abcd-7ef0-8000-00000000000g") == nil)
        #expect(CanonicalUUID("-193a1b2-abcd-7ef0-8000-00000000000f") == nil)
    }

    @Test func itsValueIsTheSixteenBytesFirstByteMostSignificant() {
        let uuid = CanonicalUUID("0193A1B2-0000-7000-8000-0000000000fF")!
        #expect(uuid.value == 0x0193A1B2_0000_7000_8000_0000000000FF)
        #expect(CanonicalUUID("00000000-0000-0000-0000-000000000000")!.value == 0)
        #expect(CanonicalUUID("FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF")!.value == .max)
        #expect(CanonicalUUID(value: .max).text == "ffffffff-ffff-ffff-ffff-ffffffffffff")
        #expect(CanonicalUUID(value: 0).text == "00000000-0000-0000-0000-000000000000")
    }

    @Test func textRoundTripsAndOrderFollowsTheText() {
        var generator = SystemRandomNumberGenerator()
        let uuids = (0..<200).map { _ in CanonicalUUID(value: UInt128(generator.next() as UInt64) << 64 | UInt128(generator.next() as UInt64)) }
        for uuid in uuids {
            #expect(CanonicalUUID(uuid.text) == uuid)
            var appended: [UInt8] = [0x7C]
            uuid.appendText(to: &appended)
            #expect(appended == [0x7C] + Array(uuid.text.utf8))
        }
        #expect(uuids.sorted().map(\.text) == uuids.map(\.text).sorted())
    }
}
