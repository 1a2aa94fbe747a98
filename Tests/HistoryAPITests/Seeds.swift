/// Conversations the tests write into PostgreSQL.
enum Seeds {
    /// Seven messages with every kind of field: two tied on `created_at` (arrival decides),
    /// contexts, metadata, missing token counts, text JSON must escape, and every role.
    static func detailed(_ number: Int, user: String = "user-a") -> SeedConversation {
        let kind = 0x100 + number
        func id(_ index: Int) -> String { testUUID(kind, index) }
        return SeedConversation(
            id: testUUID(0x10, number),
            user: user,
            title: "Detailed \(number) — ünïcödé",
            messages: [
                SeedMessage(
                    id: id(1),
                    content: "Hello — naïve café 🚀",
                    createdAt: "2025-03-01T10:00:00.000001Z",
                    metadata: #"{"source":"web","nested":{"k":[1,2.5,null,true]}}"#
                ),
                SeedMessage(
                    id: id(2),
                    role: "assistant",
                    content: "Hi! How can I help?",
                    createdAt: "2025-03-01T10:00:01.5Z",
                    tokensUsed: 12,
                    latencyMs: 340,
                    contexts: [("doc-1", "retrieved one", 0.75), ("doc-2", "retrieved, two", 1)]
                ),
                SeedMessage(id: id(3), content: "tie A", createdAt: "2025-03-01T10:00:02Z"),
                SeedMessage(
                    id: id(4),
                    role: "assistant",
                    content: "tie B",
                    createdAt: "2025-03-01T10:00:02Z",
                    tokensUsed: 7
                ),
                SeedMessage(
                    id: id(5),
                    content: "quotes \"and\" \n newlines\t tabs \\ backslash",
                    createdAt: "2025-03-01T10:00:03.123456Z"
                ),
                SeedMessage(
                    id: id(6),
                    role: "tool",
                    content: #"{"result": 42}"#,
                    createdAt: "2025-03-01T12:00:04+02:00",
                    metadata: #"{"tool_call_id":"call-1"}"#
                ),
                SeedMessage(
                    id: id(7),
                    role: "assistant",
                    content: "done",
                    createdAt: "2025-03-01T10:00:05Z",
                    tokensUsed: 3
                ),
            ]
        )
    }

    /// `count` messages alternating user and assistant, a second apart; message `i`'s content
    /// is `message i`, and assistants carry `tokens_used` of `i`.
    static func plain(_ number: Int, count: Int, user: String = "user-p") -> SeedConversation {
        SeedConversation(
            id: testUUID(0x20, number),
            user: user,
            title: "Plain \(number)",
            messages: (0..<count).map { index in
                SeedMessage(
                    id: testUUID(0x200 + number, index),
                    role: index % 2 == 0 ? "user" : "assistant",
                    content: "message \(index)",
                    createdAt: String(format: "2025-04-01T00:%02d:%02dZ", index / 60, index % 60),
                    tokensUsed: index % 2 == 0 ? nil : index
                )
            }
        )
    }
}
