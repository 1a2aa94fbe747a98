import Foundation

/// One entry that must become a dead letter, as raw fields, and the reason it must get.
struct BadEntry {
    var reason: String
    var fields: [(String, [UInt8])]

    /// A crafted entry for every reason the stream can produce (`poison` needs redeliveries):
    /// a `conflict` with `good[5]` and a `user_mismatch` in `good[6]`'s conversation.
    static func everyReason(_ good: [TestMessage]) -> [BadEntry] {
        var number = 0
        func base(
            _ overrides: [(String, [UInt8]?)] = [],
            extra: [(String, [UInt8])] = []
        ) -> [(String, [UInt8])] {
            number += 1
            var fields: [(String, [UInt8])] = [
                ("message_id", Array(Producer.uuid(0x0B, number).utf8)),
                ("conversation_id", Array(Producer.uuid(0x0C, number).utf8)),
                ("user_id", Array("u-bad".utf8)),
                ("role", Array("user".utf8)),
                ("content", Array("bad entry \(number)".utf8)),
                ("session_id", Array("s-bad".utf8)),
            ]
            for (name, value) in overrides {
                if let index = fields.firstIndex(where: { $0.0 == name }) {
                    if let value { fields[index].1 = value } else { fields.remove(at: index) }
                } else if let value {
                    fields.append((name, value))
                }
            }
            return fields + extra
        }
        func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

        let original = good[5]
        let owned = good[6]
        return [
            BadEntry(reason: "missing_field", fields: base([("content", nil)])),
            BadEntry(reason: "invalid_uuid", fields: base([("message_id", bytes("not-a-uuid"))])),
            // Unknown fields are kept; a stale dlq_ field is not repeated.
            BadEntry(
                reason: "invalid_role",
                fields: base(
                    [("role", bytes("admin"))],
                    extra: [("x_client", bytes("web")), ("dlq_reason", bytes("stale"))]
                )
            ),
            BadEntry(reason: "invalid_utf8", fields: base([("content", [0x61, 0xC3, 0x28, 0x62])])),
            BadEntry(reason: "nul_byte", fields: base([("content", [0x61, 0x00, 0x62])])),
            BadEntry(reason: "too_large", fields: base([("content", [UInt8](repeating: 0x78, count: (1 << 20) + 1))])),
            BadEntry(reason: "invalid_json", fields: base([("metadata", bytes("[1,2,3]"))])),
            BadEntry(reason: "invalid_timestamp", fields: base([("created_at", bytes("2024-13-45 25:00"))])),
            BadEntry(reason: "invalid_number", fields: base([("tokens_used", bytes("-1"))])),
            BadEntry(
                reason: "conflict",
                fields: base([
                    ("message_id", bytes(original.id)), ("conversation_id", bytes(original.conversationID)),
                    ("user_id", bytes(original.userID)), ("role", bytes(original.role)),
                    ("content", bytes("a different content")),
                ])
            ),
            BadEntry(
                reason: "user_mismatch",
                fields: base([("conversation_id", bytes(owned.conversationID)), ("user_id", bytes("intruder"))])
            ),
            // A JSON object to any JSON parser (1e-100000 is just a tiny number), but beyond what
            // PostgreSQL's numeric, and so jsonb, accepts: the row is refused (SQLSTATE class 22).
            BadEntry(
                reason: "rejected_by_database",
                fields: base([("metadata", bytes(#"{"relevance":1e-100000}"#))])
            ),
        ]
    }
}
