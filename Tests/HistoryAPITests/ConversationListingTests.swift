import Foundation
import Hummingbird
import HummingbirdTesting
import Testing

@testable import Historian
@testable import HistoryAPI

/// `GET /v1/users/{user_id}/conversations`: live and archived merged, newest first, paged by
/// keyset with each page a range of an index.
@Suite(.serialized)
struct ConversationListingTests {
    /// 1,000 conversations of `pager` (updated_at tied three by three, so `id` decides), one to
    /// three messages each; 10 of another user.
    static func seedThousand(_ servers: APIServers) async throws {
        try await servers.execute(
            """
            WITH c AS (
                INSERT INTO conversations (id, user_id, title, created_at, updated_at, cache_version)
                SELECT ('00000000-0000-4000-8000-' || lpad(to_hex(n), 12, '0'))::uuid,
                    CASE WHEN n <= 1000 THEN 'pager' ELSE 'someone-else' END, 'Conversation ' || n,
                    timestamptz '2025-01-01 00:00:00Z' + n * interval '1 minute',
                    timestamptz '2025-02-01 00:00:00.000001Z' + (n / 3) * interval '1.5 second', 1
                FROM generate_series(1, 1010) AS n
                RETURNING id, updated_at
            )
            INSERT INTO messages (id, conversation_id, role, content, created_at, stream_entry)
            SELECT gen_random_uuid(), c.id, 'user', 'message ' || k, c.updated_at - k * interval '1 second', '1-' || k
            FROM c CROSS JOIN LATERAL generate_series(0, (hashtext(c.id::text) & 3) % 3) AS k
            """
        )
    }

    @Test("1,000 conversations of one user, paged 37 at a time: each once, newest first, archived ones marked")
    func thousandConversations() async throws {
        try await APIServers.with { servers in
            try await Self.seedThousand(servers)
            // 40 archived, a few of them as a release before schema 6 left them (times unknown).
            let archived = try await servers.rows(
                "SELECT id::text FROM conversations WHERE user_id = 'pager' ORDER BY md5(id::text) LIMIT 40"
            )
            .map { $0[0]! }
            for id in archived { try await servers.archive(id) }
            let old = Array(archived.prefix(4))
            try await servers.execute(
                "UPDATE archived_conversations SET title = NULL, created_at = NULL, updated_at = NULL WHERE id = ANY($1::uuid[])",
                ["{" + old.joined(separator: ",") + "}"]
            )
            try await servers.execute("ANALYZE")
            let expected = try await servers.rows(
                """
                SELECT id::text, count::text, archived FROM (
                    SELECT c.id, c.updated_at, (SELECT count(*) FROM messages WHERE conversation_id = c.id) AS count, false AS archived
                    FROM conversations AS c WHERE user_id = 'pager'
                    UNION ALL
                    SELECT a.id, coalesce(a.updated_at, a.archived_at), a.message_count, true
                    FROM archived_conversations AS a WHERE user_id = 'pager'
                ) AS all_of_them ORDER BY updated_at DESC, id DESC
                """
            )
            #expect(expected.count == 1000)

            try await servers.serve { client in
                var seen: [[String: Any]] = []
                var before: String?
                var pages = 0
                repeat {
                    let query = "limit=37" + (before.map { "&before=\($0)" } ?? "")
                    let response = try await client.request("/v1/users/pager/conversations?\(query)")
                    try #require(response.status == .ok, "\(String(buffer: response.body))")
                    let body = try response.object
                    let page = try #require(body["conversations"] as? [[String: Any]])
                    #expect(page.count == 37 || body["next_before"] == nil)
                    seen += page
                    before = body["next_before"] as? String
                    pages += 1
                } while before != nil && pages < 100
                #expect(pages == 28)
                let ids = seen.map { $0["id"] as? String ?? "" }
                #expect(Set(ids).count == ids.count, "a conversation came twice")
                #expect(ids == expected.map { $0[0]! })
                #expect(seen.map { String($0["message_count"] as? Int ?? -1) } == expected.map { $0[1]! })
                #expect(seen.map { $0["archived"] as? Bool == true } == expected.map { $0[2] == "t" })
                // Those archived before schema 6 list at their archive time, first, without title.
                #expect(Set(ids.prefix(4)) == Set(old))
                #expect(seen.prefix(4).allSatisfy { $0["title"] == nil })
                let titled = try #require(seen.first { $0["id"] as? String == archived[10] })
                #expect((titled["title"] as? String)?.hasPrefix("Conversation ") == true)
                #expect(
                    seen.allSatisfy {
                        ($0["updated_at"] as? String)?.count == 27 && ($0["created_at"] as? String)?.count == 27
                    }
                )

                // The next page of an empty user, or past the end, is empty.
                let nobody = try await client.request("/v1/users/nobody%20at%20all/conversations").object
                #expect((nobody["conversations"] as? [Any])?.isEmpty == true && nobody["next_before"] == nil)
                let other = try await client.request("/v1/users/someone-else/conversations?limit=200").object
                #expect((other["conversations"] as? [Any])?.count == 10)
            }
        }
    }

    @Test("a deep page is a range of each table's index, whatever its depth")
    func deepPageUsesTheIndexes() async throws {
        try await APIServers.with { servers in
            try await Self.seedThousand(servers)
            let archived = try await servers.rows("SELECT id::text FROM conversations WHERE user_id = 'pager' LIMIT 5")
            for row in archived { try await servers.archive(row[0]!) }
            try await servers.execute("ANALYZE")
            let postgres = try await servers.postgres()
            defer { postgres.close() }
            let plan = try await postgres.withSession { session -> String in
                // The tables are small enough here for a scan of all of them to look as cheap;
                // what counts is that the condition is an index range, not a filter.
                try session.execute("SET enable_seqscan = off")
                let rows = try session.query(
                    "EXPLAIN " + HistoryReader.listingSQL(after: true),
                    ["pager", "38", "2025-02-01T00:04:00Z", "00000000-0000-4000-8000-000000000099"]
                )
                return rows.rows.compactMap { $0[0] }.joined(separator: "\n")
            }
            #expect(plan.contains("Index Scan using conversations_user_order_idx"), "\(plan)")
            #expect(plan.contains("Index Scan using archived_conversations_user_order_idx"), "\(plan)")
            let conditions = plan.split(separator: "\n").filter { $0.contains("Index Cond") && $0.contains("user_id") }
            // Archived rows: the whole cursor is the range. Live ones: `updated_at` is the range (the
            // index holds no `id`), and the cursor's ties are filtered out of it.
            #expect(conditions.count >= 2, "\(plan)")
            #expect(conditions.allSatisfy { $0.contains("ROW(") || $0.contains("updated_at <=") }, "\(plan)")
            let filters = plan.split(separator: "\n").filter { $0.contains("Filter:") }
            #expect(filters.allSatisfy { $0.contains("ROW(") && !$0.contains("user_id") }, "\(plan)")
            #expect(!plan.contains("Seq Scan"), "\(plan)")
        }
    }
}
