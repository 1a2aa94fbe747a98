@testable import Historian

/// A stream entry for the state machine's tests: entry `number` of one conversation, its
/// message ID from `message` (or `number`), valid unless `valid` is false (then its ID is no UUID).
func testEntry(_ number: Int, message: Int? = nil, content: String = "hello", valid: Bool = true) -> StreamEntry {
    StreamEntry(
        id: StreamID(milliseconds: 1000, sequence: UInt64(number)),
        [
            "message_id": valid ? "00000000-0000-7000-8000-\(String(format: "%012d", message ?? number))" : "bad",
            "conversation_id": "00000000-0000-7000-9000-000000000001",
            "user_id": "u", "role": "user", "content": content,
        ]
    )
}
