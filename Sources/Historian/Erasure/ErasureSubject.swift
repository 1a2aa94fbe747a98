import Crypto

/// What an erasure erases: everything of one user, or one conversation (contract §7).
///
/// It never shows its id: `description` and the audit row name it by the SHA-256 of the id only.
public struct ErasureSubject: Sendable, Hashable, CustomStringConvertible {
    public enum Scope: String, Sendable, Hashable, Codable {
        case user
        case conversation
    }

    public let scope: Scope
    /// The user id as given, or the conversation id in canonical form.
    let id: String

    private init(scope: Scope, id: String) {
        self.scope = scope
        self.id = id
    }

    /// A user, by the `user_id` the frontends write (1–255 bytes, as the contract allows);
    /// `nil` for anything else.
    public init?(user: String) {
        guard (1...255).contains(user.utf8.count) else { return nil }
        self.init(scope: .user, id: user)
    }

    /// One conversation.
    public init(conversation: CanonicalUUID) {
        self.init(scope: .conversation, id: conversation.text)
    }

    /// The user id, for a user's erasure.
    var userID: String? { scope == .user ? id : nil }

    /// The conversation, for a conversation's erasure.
    var conversation: CanonicalUUID? { scope == .conversation ? CanonicalUUID(id) : nil }

    /// The SHA-256 of the id's UTF-8 bytes (a conversation's in canonical lowercase form), in
    /// lowercase hex: how the audit row names the subject.
    public var sha256: String {
        SHA256.hash(data: Array(id.utf8)).map { byte in
            let digits = Array("0123456789abcdef".utf8)
            return String(decoding: [digits[Int(byte >> 4)], digits[Int(byte & 0x0F)]], as: UTF8.self)
        }.joined()
    }

    public var description: String { "\(scope.rawValue) sha256:\(sha256)" }
}
