import Foundation
import Hummingbird
import HummingbirdTesting
import RedisClient
import Testing

@testable import Historian
@testable import HistoryAPI

/// The `DELETE`s, against the daemon's own erasure (`historian forget`'s, without its settle
/// wait): what the API makes of its report, and its 400, 401, 404 and 501.
@Suite(.serialized)
struct ErasureRouteTests {
    func eraser(_ servers: APIServers) throws -> Erasure {
        try Erasure(configuration: servers.configuration(), logger: servers.logger, settle: .zero)
    }

    @Test("DELETE a conversation: 200 with what went, then 404; a bad ID 400, no token 401")
    func eraseConversation() async throws {
        try await APIServers.with { servers in
            let live = Seeds.detailed(1)
            let archived = Seeds.plain(2, count: 5)
            try await live.insert(servers)
            try await archived.insert(servers)
            try await servers.archive(archived.id)
            try await servers.serve(eraser: try eraser(servers)) { client in
                // Its recent list is in Redis.
                #expect(try await client.request("/v1/conversations/\(live.id)/recent").status == .ok)
                let response = try await client.request("/v1/conversations/\(live.id)", method: .delete)
                #expect(response.status == .ok, "\(String(buffer: response.body))")
                let body = try response.object
                #expect((body["erasure_id"] as? Int ?? 0) > 0 && body["scope"] as? String == "conversation")
                #expect(
                    body["subject_sha256"] as? String == ErasureSubject(conversation: CanonicalUUID(live.id)!).sha256
                )
                let removed = try #require(body["removed"] as? [String: Int])
                #expect(removed["conversations"] == 1 && removed["messages"] == 7 && removed["contexts"] == 2)
                #expect(
                    removed["redis_keys"] ?? 0 >= 1 && removed["archived_conversations"] == 0 && removed["dead_letters"] == 0
                )
                #expect(try await servers.rows("SELECT count(*) FROM erasures WHERE finished_at IS NOT NULL")[0][0] == "1")
                #expect(try await client.request("/v1/conversations/\(live.id)").status == .notFound)
                let again = try await client.request("/v1/conversations/\(live.id)", method: .delete)
                #expect(again.status == .notFound && again.errorCode == "not_found")

                let gone = try await client.request("/v1/conversations/\(archived.id)", method: .delete).object
                #expect((gone["removed"] as? [String: Int])?["archived_conversations"] == 1)
                #expect((gone["removed"] as? [String: Int])?["archive_files"] == 2)

                let bad = try await client.request("/v1/conversations/123", method: .delete)
                #expect(bad.status == .badRequest && bad.errorCode == "invalid_id")
                #expect(
                    try await client.request("/v1/conversations/\(live.id)", method: .delete, token: nil).status
                        == .unauthorized
                )
            }
            #expect(try await servers.rows("SELECT count(*) FROM conversations")[0][0] == "0")
        }
    }

    @Test("DELETE a user: every conversation of theirs, live and archived; unknown 404; too long 400")
    func eraseUser() async throws {
        try await APIServers.with { servers in
            try await Seeds.detailed(1, user: "leaving").insert(servers)
            try await Seeds.plain(2, count: 3, user: "leaving").insert(servers)
            try await Seeds.plain(3, count: 3, user: "staying").insert(servers)
            try await servers.archive(Seeds.plain(2, count: 3).id)
            try await servers.serve(eraser: try eraser(servers)) { client in
                let body = try await client.request("/v1/users/leaving", method: .delete).object
                let removed = try #require(body["removed"] as? [String: Int])
                #expect(
                    removed["conversations"] == 1 && removed["archived_conversations"] == 1
                        && body["scope"] as? String == "user"
                )
                let list = try await client.request("/v1/users/leaving/conversations").object
                #expect((list["conversations"] as? [Any])?.isEmpty == true)
                #expect(try await client.request("/v1/users/leaving", method: .delete).status == .notFound)
                let long = try await client.request("/v1/users/\(String(repeating: "é", count: 256))", method: .delete)
                #expect(long.status == .badRequest && long.errorCode == "invalid_id")
                // 128 characters, 256 bytes: no producer's user ID, so nothing of it is stored.
                let bytes = try await client.request("/v1/users/\(String(repeating: "é", count: 128))", method: .delete)
                #expect(bytes.status == .notFound)
                let staying = try await client.request("/v1/users/staying/conversations").object
                #expect((staying["conversations"] as? [Any])?.count == 1)
            }
        }
    }

    @Test("without an eraser the DELETEs answer 501 `not_implemented`")
    func noEraser() async throws {
        try await APIServers.with { servers in
            try await servers.serve(eraser: nil) { client in
                let response = try await client.request("/v1/users/anyone", method: .delete)
                #expect(response.status == .notImplemented && response.errorCode == "not_implemented")
                let conversation = try await client.request("/v1/conversations/\(testUUID(1, 1))", method: .delete)
                #expect(conversation.status == .notImplemented)
            }
        }
    }
}
