import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import Testing

@testable import Historian
@testable import HistoryAPI

/// `GET /v1/conversations/{id}`: from PostgreSQL, then from its archive in the same shape, paged
/// by keyset across the move, and never touching the message tables once archived.
@Suite(.serialized)
struct ConversationReadTests {
    /// Every page of the conversation, following `next_after`; the conversation object of the
    /// first page and all the messages.
    static func readAll(
        _ client: any TestClientProtocol,
        _ id: String,
        limit: Int
    ) async throws
        -> (conversation: [String: Any], messages: [[String: Any]], pages: Int)
    {
        var messages: [[String: Any]] = []
        var conversation: [String: Any] = [:]
        var after: String?
        var pages = 0
        repeat {
            let query = "limit=\(limit)" + (after.map { "&after=\($0)" } ?? "")
            let response = try await client.request("/v1/conversations/\(id)?\(query)")
            try #require(response.status == .ok, "\(String(buffer: response.body))")
            let body = try response.object
            if pages == 0 { conversation = try #require(body["conversation"] as? [String: Any]) }
            messages += try #require(body["messages"] as? [[String: Any]])
            after = body["next_after"] as? String
            pages += 1
        } while after != nil && pages < 100
        return (conversation, messages, pages)
    }

    /// JSON as comparable text (keys sorted).
    static func canonical(_ value: Any) throws -> String {
        String(
            decoding: try JSONSerialization.data(withJSONObject: value, options: [.sortedKeys, .fragmentsAllowed]),
            as: UTF8.self
        )
    }

    @Test("a live conversation, then the same one archived: the same JSON, page by page, cursors carried over")
    func liveThenArchived() async throws {
        try await APIServers.with { servers in
            let seed = Seeds.detailed(1)
            try await seed.insert(servers)
            try await servers.serve { client in
                let live = try await Self.readAll(client, seed.id, limit: 3)
                #expect(live.pages == 3)
                #expect(live.messages.map { $0["id"] as? String } == seed.messages.map(\.id))
                #expect(live.conversation["archived"] as? Bool == false)
                #expect(live.conversation["title"] as? String == seed.title)
                #expect(live.conversation["user_id"] as? String == "user-a")
                #expect(live.conversation["created_at"] as? String == "2025-03-01T10:00:00.000001Z")
                #expect(live.conversation["updated_at"] as? String == "2025-03-01T10:00:05.000000Z")
                #expect(try Self.canonical(live.conversation["metadata"]!) == #"{"channel":"web"}"#)

                // Every field, as stored: times in UTC with microseconds, nulls left out.
                let first = live.messages[0]
                #expect(first["content"] as? String == "Hello — naïve café 🚀")
                #expect(first["created_at"] as? String == "2025-03-01T10:00:00.000001Z")
                #expect(first["tokens_used"] == nil && first["latency_ms"] == nil)
                #expect(try Self.canonical(first["metadata"]!) == #"{"nested":{"k":[1,2.5,null,true]},"source":"web"}"#)
                #expect(first["session_id"] as? String == "s-1")
                #expect(first["arrival"] == nil && first["stream_entry"] == nil && first["type"] == nil)
                let second = live.messages[1]
                #expect(second["tokens_used"] as? Int == 12 && second["latency_ms"] as? Int == 340)
                let contexts = try #require(second["contexts"] as? [[String: Any]])
                #expect(contexts.map { $0["doc_id"] as? String } == ["doc-1", "doc-2"])
                #expect(contexts.map { $0["score"] as? Double } == [0.75, 1])
                #expect(try Self.canonical(contexts[1]["metadata"]!) == #"{"page":2}"#)
                #expect(contexts[0]["message_id"] == nil && contexts[0]["position"] == nil)
                #expect(live.messages[4]["content"] as? String == "quotes \"and\" \n newlines\t tabs \\ backslash")
                #expect(live.messages[5]["created_at"] as? String == "2025-03-01T10:00:04.000000Z")
                #expect(live.messages[5]["role"] as? String == "tool")

                // The first page's cursor, taken while live, then the conversation archived.
                let firstPage = try await client.request("/v1/conversations/\(seed.id)?limit=3").object
                let cursor = try #require(firstPage["next_after"] as? String)
                try await servers.archive(seed.id)
                #expect(try await servers.rows("SELECT count(*) FROM messages")[0][0] == "0")

                let archived = try await Self.readAll(client, seed.id, limit: 3)
                #expect(archived.pages == 3)
                #expect(archived.conversation["archived"] as? Bool == true)
                var conversation = archived.conversation
                conversation["archived"] = false
                #expect(try Self.canonical(conversation) == Self.canonical(live.conversation))
                #expect(try Self.canonical(archived.messages) == Self.canonical(live.messages))

                let resumed = try await client.request("/v1/conversations/\(seed.id)?limit=3&after=\(cursor)").object
                let ids = try #require(resumed["messages"] as? [[String: Any]]).map { $0["id"] as? String }
                #expect(ids == seed.messages[3..<6].map(\.id))
                let all = try await client.request("/v1/conversations/\(seed.id)?limit=1000").object
                #expect((all["messages"] as? [Any])?.count == 7 && all["next_after"] == nil)
            }
        }
    }

    @Test("an archived conversation is served by a role that may not read messages or message_contexts")
    func archivedWithoutMessageTables() async throws {
        try await APIServers.with { servers in
            let archived = Seeds.detailed(1)
            let live = Seeds.detailed(2)
            try await archived.insert(servers)
            try await live.insert(servers)
            try await servers.archive(archived.id)
            // Archived before schema 6: the listing columns empty, for the read to fill.
            try await servers.execute(
                "UPDATE archived_conversations SET title = NULL, created_at = NULL, updated_at = NULL"
            )
            try await servers.postgresServer.psql(
                """
                CREATE ROLE api_reader LOGIN;
                GRANT SELECT ON conversations, archived_conversations TO api_reader;
                GRANT UPDATE (title, created_at, updated_at) ON archived_conversations TO api_reader;
                """,
                database: servers.database
            )
            let url = servers.postgresURL.replacingOccurrences(of: "historian@", with: "api_reader@")
            let reader = try servers.reader(postgresURL: url)
            try await servers.serve(reader: reader) { client in
                let page = try await client.request("/v1/conversations/\(archived.id)")
                #expect(page.status == .ok, "\(String(buffer: page.body))")
                let messages = try #require(try page.object["messages"] as? [[String: Any]])
                #expect(messages.count == 7)
                #expect((messages[1]["contexts"] as? [Any])?.count == 2)
                let recent = try await client.request("/v1/conversations/\(archived.id)/recent")
                #expect(recent.status == .ok)
                #expect(try recent.object["source"] as? String == "archive")
                let context = try await client.request("/v1/conversations/\(archived.id)/context?max_tokens=1000")
                #expect(context.status == .ok)
                #expect(try context.object["archived"] as? Bool == true)
                // The same role cannot read a live conversation: the test would see a query of
                // the message tables.
                let denied = try await client.request("/v1/conversations/\(live.id)")
                #expect(denied.status == .internalServerError)
                #expect(denied.errorCode == "internal_error")
            }
            // The read recorded the columns the listing needs.
            let row = try await servers.rows(
                "SELECT title, created_at IS NOT NULL, to_char(updated_at AT TIME ZONE 'UTC', 'HH24:MI:SS') FROM archived_conversations"
            )
            #expect(row.first == [archived.title, "t", "10:00:05"])
        }
    }

    @Test("an archive file that does not match its recorded SHA-256 is 500 `archive_unreadable`, its content kept out")
    func damagedArchive() async throws {
        try await APIServers.with { servers in
            let seed = Seeds.detailed(1)
            try await seed.insert(servers)
            let path = try await servers.archive(seed.id)
            let logs = LogRecorder()
            try await servers.serve(logger: logs.logger) { client in
                #expect(try await client.request("/v1/conversations/\(seed.id)").status == .ok)
                // Another valid gzip file in its place: complete, but not the one recorded.
                let other = Seeds.detailed(2)
                try await other.insert(servers)
                let otherPath = try await servers.archive(other.id)
                try FileManager.default.removeItem(atPath: path)
                try FileManager.default.copyItem(atPath: otherPath, toPath: path)
                for route in ["", "/recent", "/context?max_tokens=50"] {
                    let response = try await client.request("/v1/conversations/\(seed.id)\(route)")
                    #expect(response.status == .internalServerError, "\(route)")
                    #expect(response.errorCode == "archive_unreadable")
                    let body = String(buffer: response.body)
                    #expect(!body.contains(path) && !body.contains("Hello") && !body.contains("tie"), "\(body)")
                }
                // Cut short: not complete gzip.
                let bytes = try Data(contentsOf: URL(fileURLWithPath: otherPath))
                try bytes.prefix(bytes.count / 2).write(to: URL(fileURLWithPath: path))
                #expect(try await client.request("/v1/conversations/\(seed.id)").errorCode == "archive_unreadable")
            }
            let failures = logs.recorded.filter { $0.message == "api request failed" }
            #expect(failures.count == 4)
            #expect(failures.allSatisfy { $0.metadata["error.detail"]?.contains(path) == true })
            #expect(logs.recorded.allSatisfy { !$0.text.contains("Hello") && !$0.text.contains("tie A") })
        }
    }

    @Test("a conversation restored between two pages goes on from the cursor")
    func restoredBetweenPages() async throws {
        try await APIServers.with { servers in
            let seed = Seeds.plain(1, count: 25)
            try await seed.insert(servers)
            try await servers.archive(seed.id)
            try await servers.serve { client in
                let first = try await client.request("/v1/conversations/\(seed.id)?limit=10").object
                #expect((first["conversation"] as? [String: Any])?["archived"] as? Bool == true)
                let cursor = try #require(first["next_after"] as? String)
                let postgres = try await servers.postgres()
                defer { postgres.close() }
                let restored = try await postgres.withSession { try Archiver.restore(CanonicalUUID(seed.id)!, in: $0) }
                #expect(restored == .restored(messages: 25, path: restored.path))
                let second = try await client.request("/v1/conversations/\(seed.id)?limit=10&after=\(cursor)").object
                #expect((second["conversation"] as? [String: Any])?["archived"] as? Bool == false)
                let ids = try #require(second["messages"] as? [[String: Any]]).map { $0["id"] as? String }
                #expect(ids == seed.messages[10..<20].map(\.id))
            }
        }
    }
}

extension Archiver.Restored {
    var path: String {
        if case .restored(_, let path) = self { return path }
        return ""
    }
}
