import Foundation
import Testing

@testable import Historian

/// What an erasure counts as its subject's: dead letters, file names, the subject's hash, and
/// the report's JSON, without servers.
struct ErasureMatchTests {
    static let conversation = CanonicalUUID("0193AA00-0000-7000-8000-00000000000A")!

    @Test func aUsersDeadLettersAreThoseWithTheirUserIDByteForByte() {
        let match = DeadLetterMatch(subject: ErasureSubject(user: "u-42")!)
        #expect(match.matches(userID: Array("u-42".utf8), conversationID: nil))
        #expect(!match.matches(userID: Array("U-42".utf8), conversationID: nil))
        #expect(!match.matches(userID: Array("u-42 ".utf8), conversationID: nil))
        #expect(!match.matches(userID: nil, conversationID: Array(Self.conversation.text.utf8)))
    }

    @Test func aConversationsDeadLettersAreThoseWithItsIDInAnyCase() {
        let match = DeadLetterMatch(subject: ErasureSubject(conversation: Self.conversation))
        #expect(match.matches(userID: nil, conversationID: Array("0193aa00-0000-7000-8000-00000000000a".utf8)))
        #expect(
            match.matches(
                userID: Array("anyone".utf8),
                conversationID: Array("0193AA00-0000-7000-8000-00000000000A".utf8)
            )
        )
        #expect(!match.matches(userID: nil, conversationID: Array("0193aa00-0000-7000-8000-00000000000b".utf8)))
        #expect(!match.matches(userID: nil, conversationID: Array("not-a-uuid".utf8)))
        #expect(!match.matches(userID: nil, conversationID: nil))
    }

    @Test func aUserIDHasOneTo255Bytes() {
        #expect(ErasureSubject(user: "") == nil)
        #expect(ErasureSubject(user: String(repeating: "é", count: 128)) == nil)  // 256 bytes
        #expect(ErasureSubject(user: String(repeating: "x", count: 255)) != nil)
    }

    @Test func theSubjectIsNamedOnlyByTheSHA256OfItsID() {
        // The SHA-256 of "abc" (FIPS 180-2, appendix B.1).
        let user = ErasureSubject(user: "abc")!
        #expect(user.sha256 == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(user.description == "user sha256:\(user.sha256)")
        #expect(!user.description.contains("abc"))
        // A conversation's is that of its canonical, lowercase text, whatever case it was given in.
        let conversation = ErasureSubject(conversation: Self.conversation)
        #expect(conversation.sha256 == ErasureSubject(conversation: CanonicalUUID(Self.conversation.text)!).sha256)
        #expect(conversation.id == "0193aa00-0000-7000-8000-00000000000a")
    }

    @Test func theFilesOfAConversationAreItsArchiveItsChecksumAndTheirTemporaryNames() {
        #expect(
            ErasureFiles.names(of: "c") == [
                "c.jsonl.gz", "c.jsonl.gz.sha256", ".c.jsonl.gz.tmp", ".c.jsonl.gz.sha256.tmp",
            ]
        )
    }

    @Test func filesAreFoundByRecordedPathAndByNameBelowTheRoot() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("erasure-files-\(UUID().uuidString)")
            .path
        defer { try? FileManager.default.removeItem(atPath: root) }
        let id = Self.conversation.text
        let other = "0193aa00-0000-7000-8000-00000000000b"
        let day = "\(root)/2025/01/02"
        let elsewhere = "\(root)/2024/12/31"
        for directory in [day, elsewhere] {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        }
        let files = [
            "\(day)/\(id).jsonl.gz", "\(day)/\(id).jsonl.gz.sha256", "\(elsewhere)/\(id).jsonl.gz",
            "\(elsewhere)/.\(id).jsonl.gz.tmp", "\(day)/\(other).jsonl.gz", "\(day)/\(other).jsonl.gz.sha256",
        ]
        for file in files { try Data("x".utf8).write(to: URL(fileURLWithPath: file)) }
        // Recorded somewhere else (archive_dir changed since).
        let movedRoot = root + "-old"
        try FileManager.default.createDirectory(atPath: movedRoot, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: movedRoot) }
        let recorded = "\(movedRoot)/\(id).jsonl.gz"
        try Data("x".utf8).write(to: URL(fileURLWithPath: recorded))

        let plan = ErasurePlan(conversations: [id], files: [recorded])
        #expect(ErasureFiles.present(plan, root: root) == ([recorded] + files.prefix(4)).sorted())
        #expect(try ErasureFiles.remove(plan, root: root) == 5)
        #expect(try ErasureFiles.remove(plan, root: root) == 0, "a second removal finds nothing")
        #expect(FileManager.default.fileExists(atPath: "\(day)/\(other).jsonl.gz"))
        #expect(FileManager.default.fileExists(atPath: "\(day)/\(other).jsonl.gz.sha256"))
    }

    @Test func thePlanSurvivesTheJournal() throws {
        let plan = ErasurePlan(conversations: ["a", "b"], files: ["/x/y.jsonl.gz"], sessions: ["s\"1"])
        #expect(try ErasurePlan(json: plan.json) == plan)
        #expect(plan.json.contains("/x/y.jsonl.gz"))
    }

    @Test func theReportUsesTheAuditRowsNames() throws {
        var removed = ErasureCounts()
        removed.values = [1, 2, 3, 4, 5, 6, 7]
        let report = ErasureReport(
            erasureID: 9,
            scope: .user,
            subjectSHA256: "ab",
            dryRun: false,
            resumed: true,
            startedAt: "2025-01-01T00:00:00.000000Z",
            finishedAt: nil,
            removed: removed
        )
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        let json = String(decoding: try encoder.encode(report), as: UTF8.self)
        #expect(
            json
                == #"{"dry_run":false,"erasure_id":9,"removed":{"archive_files":5,"archived_conversations":4,"contexts":3,"conversations":1,"dead_letters":7,"messages":2,"redis_keys":6},"resumed":true,"scope":"user","started_at":"2025-01-01T00:00:00.000000Z","subject_sha256":"ab"}"#
        )
        #expect(try JSONDecoder().decode(ErasureReport.self, from: Data(json.utf8)) == report)
        #expect(
            ErasureCounts.columns == [
                "conversations", "messages", "contexts", "archived_conversations", "archive_files", "redis_keys",
                "dead_letters",
            ]
        )
        #expect(ErasureCounts(texts: ["1", "2", "3", "4", "5", "6", "7"]) == removed)
        #expect(ErasureCounts(texts: ["1", nil, "3", "4", "5", "6", "7"]) == nil)
    }
}
