/// What a unit did to one conversation, for the conversation update of `historian_store_new`:
/// the same aggregates that `historian_store_checked` computes from the messages it inserted.
struct ConversationTouch {
    var conversationID: CanonicalUUID
    /// The user and department of its first message in arrival order: a new conversation's.
    var owner: String
    var deptID: String?
    /// Whether every message of the conversation in the unit has that user.
    var oneUser = true
    /// The earliest `created_at` of its messages in the unit.
    var firstAt: Timestamp
    /// The title of its last message (in arrival order) that has one.
    var explicitTitle: String?
    /// The derived title of its earliest user message, ties by arrival order.
    var derivedTitle: String?
    var derivedAt: Timestamp?

    /// One touch per conversation, in the unit's order of first appearance.
    static func of(_ unit: [IncomingMessage]) -> [ConversationTouch] {
        var touches: [ConversationTouch] = []
        var index: [CanonicalUUID: Int] = [:]
        for message in unit {
            let position: Int
            if let known = index[message.conversationID] {
                position = known
                touches[position].firstAt = min(touches[position].firstAt, message.createdAt)
                if message.userID != touches[position].owner { touches[position].oneUser = false }
            } else {
                position = touches.count
                index[message.conversationID] = position
                touches.append(
                    ConversationTouch(
                        conversationID: message.conversationID,
                        owner: message.userID,
                        deptID: message.deptID,
                        firstAt: message.createdAt
                    )
                )
            }
            if let title = message.title {
                touches[position].explicitTitle = title
            }
            if message.role == .user, touches[position].derivedAt.map({ message.createdAt < $0 }) ?? true,
                let derived = message.derivedTitle
            {
                touches[position].derivedTitle = derived
                touches[position].derivedAt = message.createdAt
            }
        }
        return touches
    }
}

