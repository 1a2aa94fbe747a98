import SQLiteReader
import Testing

@testable import Historian

/// Rows of the tutorial schema turned into what the store takes, and the reasons of those that
/// cannot be: no server needed.
struct ImportMappingTests {
    static let mapping = ImportMapping(validator: EntryValidator())
    /// 2024-01-15 10:30:00 UTC.
    static let base: Int64 = 1_705_314_600_000_000

    static func conversation(
        id: SQLiteValue = .text("conv-1"),
        userID: SQLiteValue = .text("u-1"),
        title: SQLiteValue = .null,
        createdAt: SQLiteValue = .null,
        metadata: SQLiteValue = .null
    ) -> SourceConversation {
        SourceConversation(id: id, userID: userID, title: title, createdAt: createdAt, metadata: metadata)
    }

    static func message(
        id: SQLiteValue = .integer(42),
        role: SQLiteValue = .text("user"),
        content: SQLiteValue = .text("How do I request vacation?"),
        timestamp: SQLiteValue = .text("2024-01-15 10:30:00"),
        metadata: SQLiteValue = .null
    ) -> SourceMessage {
        SourceMessage(id: id, role: role, content: content, timestamp: timestamp, metadata: metadata)
    }

    /// The message a row becomes, through the stream's validator, or why not.
    static func imported(
        _ row: SourceMessage,
        in source: SourceConversation = conversation()
    ) throws -> Result<IncomingMessage, Rejection> {
        let conversation = try mapping.conversation(source).get()
        return mapping.entry(row, in: conversation).flatMap { mapping.validator.validate($0) }
    }

    @Test(arguments: [
        (SQLiteValue.text("2024-01-15 10:30:00"), base),
        (.text("2024-01-15T10:30:00"), base),
        (.text("2024-01-15 10:30"), base),
        (.text("2024-01-15 10:30:00.123"), base + 123_000),
        (.text("2024-01-15T10:30:00.123456"), base + 123_456),
        (.text("2024-01-15T12:30:00+02:00"), base),
        (.text("2024-01-15 10:30:00Z"), base),
        (.integer(1_705_314_600), base),
        (.integer(1_705_314_600_123), base + 123_000),
        (.real(1_705_314_600.5), base + 500_000),
        (.text("1705314600"), base),
        (.text("1705314600.25"), base + 250_000),
        (.integer(0), 0),
    ])
    func timestampsInTheFormsSQLiteStoresThem(value: SQLiteValue, microseconds: Int64) {
        #expect(SQLiteTimestamp.parse(value) == Timestamp(microseconds: microseconds))
    }

    @Test(arguments: [
        SQLiteValue.text("yesterday"), .text("2024-13-01 00:00:00"), .text("2024-01-15"), .text(""),
        .text("2024-01-15 10:30:00 +02:00"), .text("1e9"), .text("2024-01-15 25:00:00"), .real(.nan),
        .real(.infinity), .integer(Int64.max), .text([0xFF, 0x31]), .null,
    ])
    func timestampsThatAreNot(value: SQLiteValue) {
        #expect(SQLiteTimestamp.parse(value) == nil)
    }

    @Test func aGoodMessageBecomesWhatTheStreamWouldHaveCarried() throws {
        let source = Self.conversation(title: .text("Vacation"))
        let message = try Self.imported(Self.message(metadata: .text(#"{"model": "x"}"#)), in: source).get()
        let conversation = CanonicalUUID("3ecfff80-6cf0-55f1-8159-60afce9738b5")!
        #expect(message.id == ImportIDs.message(42, in: conversation))
        #expect(message.conversationID == conversation)
        #expect(message.entryID == ImportIDs.entry(42))
        #expect(message.userID == "u-1")
        #expect(message.role == .user)
        #expect(message.content == "How do I request vacation?")
        #expect(message.createdAt == Timestamp(microseconds: Self.base))
        #expect(message.title == "Vacation")
        #expect(message.metadata == #"{"model": "x"}"#)
    }

    @Test(arguments: [
        ("human", Role.user), ("ai", .assistant), ("Assistant", .assistant), ("SYSTEM", .system), ("tool", .tool),
    ])
    func rolesAndTheirAliases(name: String, role: Role) throws {
        #expect(try Self.imported(Self.message(role: .text(name))).get().role == role)
    }

    @Test func aBlobOfUTF8IsContentAndEmptyOrNullMetadataIsNone() throws {
        let message = try Self.imported(Self.message(content: .blob(Array("héllo".utf8)), metadata: .text(" null ")))
            .get()
        #expect(message.content == "héllo")
        #expect(message.metadata == nil)
        #expect(try Self.imported(Self.message(metadata: .text(""))).get().metadata == nil)
    }

    @Test(arguments: [
        (message(role: .text("narrator")), DeadLetterReason.invalidRole),
        (message(role: .null), .missingField),
        (message(content: .text([0x61, 0xC3, 0x28])), .invalidUTF8),
        (message(content: .blob([0xFF, 0xFE])), .invalidUTF8),
        (message(content: .text([0x61, 0x00, 0x62])), .nulByte),
        (message(content: .null), .missingField),
        (message(content: .text(String(repeating: "x", count: (1 << 20) + 1))), .tooLarge),
        (message(timestamp: .text("next tuesday")), .invalidTimestamp),
        (message(timestamp: .null), .missingField),
        (message(metadata: .text("{not json")), .invalidJSON),
        (message(metadata: .text("[1, 2]")), .invalidJSON),
        (message(id: .text("seven")), .invalidNumber),
    ])
    func badMessagesAndTheirReasons(row: SourceMessage, reason: DeadLetterReason) throws {
        let result = try Self.imported(row)
        guard case .failure(let rejection) = result else {
            Issue.record("accepted: \(row)")
            return
        }
        #expect(rejection.reason == reason)
    }

    @Test func theDetailNamesTheColumnNotTheValue() throws {
        guard
            case .failure(let rejection) = try Self.imported(
                Self.message(content: .text([0x73, 0x65, 0x63, 0x72, 0x65, 0x74, 0xFF]))
            )
        else {
            Issue.record("accepted")
            return
        }
        #expect(rejection.detail == "content is not valid UTF-8")
        #expect(
            ImportProblem(conversation: "conv-1", message: "42", rejection: rejection).description
                == "conversation conv-1 message 42: invalid_utf8: content is not valid UTF-8"
        )
    }

    @Test func aConversationWhoseIDIsNotAUUIDKeepsItAsSourceID() throws {
        let conversation = try Self.mapping.conversation(
            Self.conversation(
                title: .text(""),
                createdAt: .text("2024-01-15 10:30:00"),
                metadata: .text(#"{"app": "tutorial"}"#)
            )
        ).get()
        #expect(conversation.id.text == "3ecfff80-6cf0-55f1-8159-60afce9738b5")
        #expect(conversation.sourceID == "conv-1")
        #expect(conversation.title == nil)
        #expect(conversation.createdAt == Timestamp(microseconds: Self.base))
        #expect(conversation.metadata == #"{"app": "tutorial"}"#)
        #expect(conversation.owner == "u-1")
        let uuid = try Self.mapping.conversation(Self.conversation(id: .text("0193A1B2-0000-7000-8000-0000000000C1")))
            .get()
        #expect(uuid.sourceID == nil)
        #expect(uuid.id.text == "0193a1b2-0000-7000-8000-0000000000c1")
    }

    @Test(arguments: [
        (conversation(userID: .null), DeadLetterReason.missingField),
        (conversation(userID: .text("")), .missingField),
        (conversation(userID: .text(String(repeating: "u", count: 256))), .tooLarge),
        (conversation(title: .text(String(repeating: "t", count: 501))), .tooLarge),
        (conversation(metadata: .text(#"{"a": }"#)), .invalidJSON),
        (conversation(createdAt: .text("someday")), .invalidTimestamp),
        (conversation(id: .text([0x63, 0xFF])), .invalidUTF8),
        (conversation(id: .text([0x63, 0x00])), .nulByte),
    ])
    func badConversationsAndTheirReasons(row: SourceConversation, reason: DeadLetterReason) {
        guard case .failure(let rejection) = Self.mapping.conversation(row) else {
            Issue.record("accepted: \(row)")
            return
        }
        #expect(rejection.reason == reason)
    }

    @Test func idsThatCannotBePrintedAreEscaped() {
        #expect(ImportMapping.displayed(Array("conv-1".utf8)) == "conv-1")
        #expect(ImportMapping.displayed(Array("café".utf8)) == "café")
        #expect(ImportMapping.displayed([0x63, 0x0A, 0xFF]) == "c\\x0A\\xFF")
    }

    /// What a conversation row counts as, from what PostgreSQL holds after the import wrote it.
    @Test func conversationOutcomes() throws {
        let conversation = try Self.mapping.conversation(Self.conversation()).get()
        typealias Found = ImportedConversations.Found
        func outcome(_ found: Found, messages: Int = 0, dryRun: Bool = false) -> ImportedConversations.Outcome {
            ImportedConversations.outcome(conversation, found, messagesImported: messages, dryRun: dryRun)
        }
        #expect(outcome(Found(inserted: true, owner: "u-1")) == .imported)
        #expect(outcome(Found(owner: "u-1"), messages: 3) == .imported)
        #expect(outcome(Found(updated: true, owner: "u-1")) == .imported)
        #expect(outcome(Found(owner: "u-1")) == .alreadyPresent)
        #expect(outcome(Found(archivedOwner: "u-1")) == .alreadyPresent)
        guard case .reported(let rejection) = outcome(Found(owner: "u-2")) else {
            Issue.record("another owner's conversation was taken")
            return
        }
        #expect(rejection.reason == .userMismatch)
        guard case .reported(let archived) = outcome(Found(archivedOwner: "u-2")) else {
            Issue.record("another owner's archived conversation was taken")
            return
        }
        #expect(archived.reason == .userMismatch)
        #expect(outcome(Found(), dryRun: true) == .imported)
        guard case .reported = outcome(Found()) else {
            Issue.record("a conversation that went away counted as imported")
            return
        }
    }

    @Test func progressBarAndLines() {
        var progress = ImportProgress(
            conversations: 0,
            conversationsTotal: 10,
            messages: 0,
            messagesTotal: 200,
            elapsed: .seconds(1)
        )
        #expect(progress.bar(width: 10) == "[>         ]   0%  0/200 messages, 0/s")
        progress.messages = 100
        progress.conversations = 5
        #expect(progress.bar(width: 10) == "[=====>    ]  50%  100/200 messages, 100/s")
        #expect(progress.line == "progress: 50% (100/200 messages, 5/10 conversations, 100 messages/s)")
        progress.messages = 200
        #expect(progress.bar(width: 10).hasPrefix("[==========] 100%"))
        #expect(progress.bar().count < 80)

        var lines = ProgressLines(every: .seconds(10))
        progress.messages = 5
        #expect(lines.line(for: progress) == nil)
        progress.messages = 25
        #expect(lines.line(for: progress)?.hasPrefix("progress: 12% (25/200 messages") == true)
        progress.messages = 30
        #expect(lines.line(for: progress) == nil)
        progress.elapsed = .seconds(12)
        #expect(lines.line(for: progress) != nil)
    }
}
