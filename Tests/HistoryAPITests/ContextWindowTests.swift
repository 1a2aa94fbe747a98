import Foundation
import Hummingbird
import HummingbirdTesting
import Testing

@testable import Historian
@testable import HistoryAPI

/// `GET /v1/conversations/{id}/context?max_tokens=N`: the latest messages within a budget,
/// counted by `tokens_used` or the documented estimate.
@Suite(.serialized)
struct ContextWindowTests {
    /// Eight messages: token counts 40, (estimate of 13 bytes: 4), 25, (estimate of "ü" × 10,
    /// 20 bytes: 5), 0, 30, (estimate of 1 byte: 1), 10.
    static let seed = SeedConversation(
        id: testUUID(0x30, 1),
        user: "user-c",
        title: "Budget",
        messages: [
            SeedMessage(
                id: testUUID(0x300, 0),
                role: "system",
                content: "be brief",
                createdAt: "2025-05-01T00:00:00Z",
                tokensUsed: 40
            ),
            SeedMessage(id: testUUID(0x300, 1), content: "thirteen byte", createdAt: "2025-05-01T00:00:01Z"),
            SeedMessage(
                id: testUUID(0x300, 2),
                role: "assistant",
                content: "answer",
                createdAt: "2025-05-01T00:00:02Z",
                tokensUsed: 25
            ),
            SeedMessage(
                id: testUUID(0x300, 3),
                content: String(repeating: "ü", count: 10),
                createdAt: "2025-05-01T00:00:03Z"
            ),
            SeedMessage(
                id: testUUID(0x300, 4),
                role: "assistant",
                content: "",
                createdAt: "2025-05-01T00:00:04Z",
                tokensUsed: 0
            ),
            SeedMessage(
                id: testUUID(0x300, 5),
                role: "assistant",
                content: "long",
                createdAt: "2025-05-01T00:00:05Z",
                tokensUsed: 30
            ),
            SeedMessage(id: testUUID(0x300, 6), content: "?", createdAt: "2025-05-01T00:00:06Z"),
            SeedMessage(
                id: testUUID(0x300, 7),
                role: "assistant",
                content: "last",
                createdAt: "2025-05-01T00:00:07Z",
                tokensUsed: 10
            ),
        ]
    )
    static let tokens = [40, 4, 25, 5, 0, 30, 1, 10]
    static let estimated = [false, true, false, true, false, false, true, false]

    /// What the window must hold for `budget`: the longest run of latest messages that fits.
    static func expected(_ budget: Int) -> [Int] {
        var total = 0
        var first = tokens.count
        while first > 0, total + tokens[first - 1] <= budget {
            first -= 1
            total += tokens[first]
        }
        return Array(first..<tokens.count)
    }

    @Test("the latest messages within the budget, oldest first, the same whether live or archived")
    func windowWithinBudget() async throws {
        try await APIServers.with { servers in
            try await Self.seed.insert(servers)
            let budgets = [0, 9, 10, 11, 40, 41, 45, 46, 71, 75, 115, 1000]
            try await servers.serve { client in
                var live: [Int: String] = [:]
                for budget in budgets {
                    let body = try await client.request(
                        "/v1/conversations/\(Self.seed.id)/context?max_tokens=\(budget)"
                    ).object
                    let messages = try #require(body["messages"] as? [[String: Any]])
                    let indices = Self.expected(budget)
                    #expect(
                        messages.map { $0["id"] as? String } == indices.map { Self.seed.messages[$0].id },
                        "budget \(budget)"
                    )
                    #expect(messages.map { $0["tokens"] as? Int } == indices.map { Self.tokens[$0] })
                    #expect(messages.map { $0["tokens_estimated"] as? Bool } == indices.map { Self.estimated[$0] })
                    let total = try #require(body["tokens"] as? Int)
                    #expect(total == indices.map { Self.tokens[$0] }.reduce(0, +) && total <= budget)
                    #expect(body["max_tokens"] as? Int == budget && body["archived"] as? Bool == false)
                    live[budget] = try ConversationReadTests.canonical(messages)
                }
                // A budget no single message fits yet: empty, not an error.
                #expect(Self.expected(9) == [])

                try await servers.archive(Self.seed.id)
                for budget in budgets {
                    let body = try await client.request(
                        "/v1/conversations/\(Self.seed.id)/context?max_tokens=\(budget)"
                    ).object
                    #expect(body["archived"] as? Bool == true)
                    let messages = try #require(body["messages"] as? [[String: Any]])
                    #expect(try ConversationReadTests.canonical(messages) == live[budget], "budget \(budget)")
                }
            }
        }
    }

    @Test("a long conversation is read newest first in chunks until the budget is spent")
    func longConversation() async throws {
        try await APIServers.with { servers in
            // 700 messages: odd ones count their index, even ones "message i" (10 or 11 bytes: 3 tokens).
            let seed = Seeds.plain(2, count: 700)
            try await seed.insert(servers)
            try await servers.serve { client in
                let body = try await client.request("/v1/conversations/\(seed.id)/context?max_tokens=100000").object
                let messages = try #require(body["messages"] as? [[String: Any]])
                let counts = (0..<700).map { $0 % 2 == 1 ? $0 : 3 }
                var total = 0
                var first = 700
                while first > 0, total + counts[first - 1] <= 100_000 {
                    first -= 1
                    total += counts[first]
                }
                #expect(first > 0 && 700 - first > HistoryReader.contextChunk)
                #expect(messages.map { $0["id"] as? String } == seed.messages[first...].map(\.id))
                #expect(body["tokens"] as? Int == total)
            }
        }
    }
}
