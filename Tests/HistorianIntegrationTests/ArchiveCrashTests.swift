import Foundation
import LocalServers
import RedisClient
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Crashes of `historian archive` at each step of archiving a conversation, by SIGKILL at exact
/// points (`HISTORIAN_TEST_CRASH_AT`), and messages for conversations whose archive cannot be
/// read: each conversation stays in PostgreSQL or in a verified file, never in neither.
@Suite(.serialized)
struct ArchiveCrashTests {
    enum Point: String, CaseIterable, Sendable {
        /// The file's bytes written under its temporary name, not synced.
        case written = "archive-written"
        /// Renamed into place, its `.sha256` not written.
        case renamed = "archive-renamed"
        /// Verified, no row deleted.
        case verified = "archive-verified"
        /// Rows deleted and the archive recorded, Redis keys not removed.
        case deleted = "archive-deleted"
    }

    @Test("killed at a step of archiving: nothing lost, and the next pass finishes with no temporary file left", arguments: Point.allCases)
    func killedAt(_ point: Point) async throws {
        try await TestEnvironment.with { environment in
            try await environment.migrate()
            let redis = try await environment.redis()
            defer { redis.close() }
            let messages = Producer.workload(count: 90, conversations: 3, seed: 95)
            try await Producer.append(messages, redis: redis)
            let stored = try await HistorianProcess.run(["run", "--once"], environment: environment.historianEnvironment)
            #expect(stored.status == 0, "\(stored.errors)")
            let conversations = Set(messages.map(\.conversationID)).sorted()
            _ = try await environment.rows("UPDATE conversations SET updated_at = now() - interval '40 days'")
            let before = try await Self.rows(environment)

            var crashing = environment.historianEnvironment
            crashing["HISTORIAN_TEST_CRASH_AT"] = point.rawValue
            let crashed = try await HistorianProcess.run(["archive"], environment: crashing)
            #expect(crashed.status == 128 + SIGKILL, "the pass did not die at \(point.rawValue): \(crashed.output)")

            let files = Self.files(below: environment.archiveDir)
            let temporary = files.filter { ($0 as NSString).lastPathComponent.hasPrefix(".") }
            let archives = files.filter { $0.hasSuffix(".jsonl.gz") && !temporary.contains($0) }
            let inPostgres = try await environment.scalar("SELECT count(*) FROM conversations")
            switch point {
            case .written:
                #expect(temporary.count == 1 && archives.isEmpty && inPostgres == 3, "\(files)")
            case .renamed:
                #expect(archives.count == 1 && !files.contains(archives[0] + ".sha256") && inPostgres == 3, "\(files)")
            case .verified:
                #expect(archives.count == 1 && files.contains(archives[0] + ".sha256") && inPostgres == 3, "\(files)")
                #expect(try await environment.scalar("SELECT count(*) FROM archived_conversations") == 0)
            case .deleted:
                #expect(archives.count == 1 && inPostgres == 2, "\(files)")
                #expect(try await environment.scalar("SELECT count(*) FROM archived_conversations") == 1)
            }
            try await Self.expectEachInPostgresOrVerified(conversations, environment)
            // Whatever is still in PostgreSQL is as it was.
            let after = try await Self.rows(environment)
            #expect(after.allSatisfy { before.contains($0) }, "rows changed by the crashed pass")

            if point == .written {
                // As if the crash had come on another day: the next pass writes elsewhere, and
                // must still clear the stray file.
                let elsewhere = environment.archiveDir + "/2001/01/01"
                try FileManager.default.createDirectory(atPath: elsewhere, withIntermediateDirectories: true)
                try FileManager.default.moveItem(
                    atPath: temporary[0],
                    toPath: elsewhere + "/" + (temporary[0] as NSString).lastPathComponent
                )
            }
            let rerun = try await HistorianProcess.run(["archive"], environment: environment.historianEnvironment)
            #expect(rerun.status == 0, "\(rerun.output)\(rerun.errors)")
            #expect(try await environment.scalar("SELECT count(*) FROM conversations") == 0)
            #expect(try await environment.scalar("SELECT count(*) FROM messages") == 0)
            #expect(try await environment.scalar("SELECT count(*) FROM archived_conversations") == 3)
            try await Self.expectEachInPostgresOrVerified(conversations, environment)
            let finalFiles = Self.files(below: environment.archiveDir)
            #expect(finalFiles.filter { ($0 as NSString).lastPathComponent.hasPrefix(".") }.isEmpty, "\(finalFiles)")
            #expect(finalFiles.filter { $0.hasSuffix(".jsonl.gz") }.count == 3)
            // Every message is in the files: restoring them gives back every row.
            let restore = try await HistorianProcess.run(["restore"] + conversations, environment: environment.historianEnvironment)
            #expect(restore.status == 0, "\(restore.output)")
            #expect(try await environment.scalar("SELECT count(*) FROM messages") == messages.count)
        }
    }

    enum Damage: String, CaseIterable, Sendable {
        case missing
        case damaged
    }

    @Test("a message for a conversation whose archive is missing or damaged stays pending with a clear error", arguments: Damage.allCases)
    func unreadableArchive(_ damage: Damage) async throws {
        try await TestEnvironment.with { environment in
            try await environment.migrate()
            let redis = try await environment.redis()
            defer { redis.close() }
            let messages = Producer.workload(count: 30, conversations: 1, seed: 96)
            try await Producer.append(messages, redis: redis)
            #expect(try await HistorianProcess.run(["run", "--once"], environment: environment.historianEnvironment).status == 0)
            _ = try await environment.rows("UPDATE conversations SET updated_at = now() - interval '40 days'")
            #expect(try await HistorianProcess.run(["archive"], environment: environment.historianEnvironment).status == 0)
            let path = try #require(try await environment.rows("SELECT path FROM archived_conversations").first?.first ?? nil)
            let original = try Data(contentsOf: URL(fileURLWithPath: path))
            switch damage {
            case .missing:
                try FileManager.default.removeItem(atPath: path)
            case .damaged:
                var bytes = original
                bytes[bytes.count / 2] ^= 0xFF
                try bytes.write(to: URL(fileURLWithPath: path))
            }

            var later = messages[1]
            later.id = Producer.uuid(0x09, 1)
            later.content = "a message for the archived conversation"
            try await Producer.append([later], redis: redis)
            let daemon = try HistorianProcess(["run", "--consumer", "unreadable"], environment: environment.historianEnvironment)
            defer { daemon.signal(SIGKILL) }
            try await eventually("an error naming the archive", timeout: .seconds(60)) {
                daemon.errorOutput.contains("archive \(path):")
            }
            try await Task.sleep(for: .seconds(2))
            #expect(try await environment.pendingCount() == 1, "the entry is no longer pending")
            #expect(try await deadLetterCount(redis) == 0, "dead-lettered")
            #expect(try await environment.scalar("SELECT count(*) FROM conversations") == 0, "a new conversation started")
            #expect(try await environment.scalar("SELECT count(*) FROM messages") == 0)
            #expect(daemon.isRunning)

            // The file back: the retry restores the conversation and stores the message.
            try original.write(to: URL(fileURLWithPath: path))
            try await eventually("the conversation restored and the message stored", timeout: .seconds(60)) {
                let stored = try await environment.scalar("SELECT count(*) FROM messages")
                let pending = try await environment.pendingCount()
                return stored == messages.count + 1 && pending == 0
            }
            #expect(try await environment.scalar("SELECT count(*) FROM archived_conversations") == 0)
            #expect(try await deadLetterCount(redis) == 0)
            daemon.signal(SIGTERM)
            #expect(try await daemon.wait(timeout: .seconds(30)) == 0)
        }
    }

    /// Each conversation is in PostgreSQL, or recorded as archived with a file that `sha256sum
    /// -c` and `gzip -t` accept and whose SHA-256 is the one recorded.
    static func expectEachInPostgresOrVerified(
        _ conversations: [String],
        _ environment: TestEnvironment,
        sourceLocation: SourceLocation = #_sourceLocation
    ) async throws {
        for conversation in conversations {
            if try await environment.scalar("SELECT count(*) FROM conversations WHERE id = '\(conversation)'") == 1 {
                continue
            }
            let recorded = try await environment.rows("SELECT path, sha256 FROM archived_conversations WHERE id = '\(conversation)'")
            guard let row = recorded.first, let path = row[0], let sha256 = row[1] else {
                Issue.record("\(conversation) is neither in PostgreSQL nor archived", sourceLocation: sourceLocation)
                continue
            }
            let directory = (path as NSString).deletingLastPathComponent
            let name = (path as NSString).lastPathComponent
            #expect(try runProgram(["sha256sum", "-c", "--quiet", name + ".sha256"], in: directory).status == 0, sourceLocation: sourceLocation)
            #expect(try runProgram(["gzip", "-t", path]).status == 0, sourceLocation: sourceLocation)
            let digest = String(decoding: try runProgram(["sha256sum", path]).output, as: UTF8.self).prefix(64)
            #expect(String(digest) == sha256, "\(path)", sourceLocation: sourceLocation)
        }
    }

    /// Every file below `root`, hidden ones included.
    static func files(below root: String) -> [String] {
        guard let walk = FileManager.default.enumerator(atPath: root) else { return [] }
        var files: [String] = []
        while let relative = walk.nextObject() as? String {
            var isDirectory: ObjCBool = false
            let path = root + "/" + relative
            if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue {
                files.append(path)
            }
        }
        return files.sorted()
    }

    /// The conversations and messages, every column, as text.
    static func rows(_ environment: TestEnvironment) async throws -> Set<[String?]> {
        let conversations = try await environment.rows("SELECT c::text FROM conversations AS c")
        let messages = try await environment.rows("SELECT m::text FROM messages AS m")
        let contexts = try await environment.rows("SELECT x::text FROM message_contexts AS x")
        return Set(conversations + messages + contexts)
    }
}
