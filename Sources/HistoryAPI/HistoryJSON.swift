import Foundation
import Historian
import OpenAPIRuntime

/// The history's JSON objects read into the API's types.
///
/// A message comes as an archive line (from the file, or as PostgreSQL prints the same line)
/// or as a recent-list element (contract §3), whose keys are a subset of a line's; a
/// conversation as its archive line. One reading for every source is what makes a live and an
/// archived conversation answer in the same shape. Keys the API does not serve (`arrival`,
/// `stream_entry`, `cache_version`, a context's `message_id` and `position`) are left out.
/// Timestamps come out as RFC 3339 UTC with microseconds, whatever offset the source printed.
enum HistoryJSON {
    struct Message: Decodable {
        var id: String
        var conversationID: String
        var role: Components.Schemas.Role
        var content: String
        var createdAt: String
        var tokensUsed: Int?
        var latencyMs: Int?
        var metadata: OpenAPIValueContainer?
        var sessionID: String?
        var contexts: [Context]?

        enum CodingKeys: String, CodingKey {
            case id
            case conversationID = "conversation_id"
            case role, content
            case createdAt = "created_at"
            case tokensUsed = "tokens_used"
            case latencyMs = "latency_ms"
            case metadata
            case sessionID = "session_id"
            case contexts
        }
    }

    struct Context: Decodable {
        var id: String
        var docID: String?
        var content: String?
        var score: Double?
        var metadata: OpenAPIValueContainer?

        enum CodingKeys: String, CodingKey {
            case id
            case docID = "doc_id"
            case content, score, metadata
        }
    }

    struct Conversation: Decodable {
        var id: String
        var userID: String
        var deptID: String?
        var title: String?
        var createdAt: String
        var updatedAt: String
        var metadata: OpenAPIValueContainer?

        enum CodingKeys: String, CodingKey {
            case id
            case userID = "user_id"
            case deptID = "dept_id"
            case title
            case createdAt = "created_at"
            case updatedAt = "updated_at"
            case metadata
        }
    }

    static func message(_ json: String) throws -> Message {
        var message = try decode(Message.self, json, what: "a message")
        message.createdAt = try utc(message.createdAt)
        return message
    }

    static func conversation(_ json: String, archived: Bool) throws -> Components.Schemas.Conversation {
        let conversation = try decode(Conversation.self, json, what: "a conversation")
        return Components.Schemas.Conversation(
            id: conversation.id,
            userId: conversation.userID,
            deptId: conversation.deptID,
            title: conversation.title,
            createdAt: try utc(conversation.createdAt),
            updatedAt: try utc(conversation.updatedAt),
            metadata: conversation.metadata,
            archived: archived
        )
    }

    static func storedMessage(_ json: String) throws -> Components.Schemas.Message {
        let message = try message(json)
        return Components.Schemas.Message(
            id: message.id,
            conversationId: message.conversationID,
            role: message.role,
            content: message.content,
            createdAt: message.createdAt,
            tokensUsed: message.tokensUsed,
            latencyMs: message.latencyMs,
            metadata: message.metadata,
            sessionId: message.sessionID,
            contexts: (message.contexts ?? []).map {
                Components.Schemas.MessageContext(
                    id: $0.id,
                    docId: $0.docID,
                    content: $0.content,
                    score: $0.score,
                    metadata: $0.metadata
                )
            }
        )
    }

    static func recentMessage(_ json: String) throws -> Components.Schemas.RecentMessage {
        let message = try message(json)
        return Components.Schemas.RecentMessage(
            id: message.id,
            conversationId: message.conversationID,
            role: message.role,
            content: message.content,
            createdAt: message.createdAt,
            tokensUsed: message.tokensUsed,
            latencyMs: message.latencyMs,
            metadata: message.metadata
        )
    }

    static func contextMessage(_ counted: ContextWindow.Message) throws -> Components.Schemas.ContextMessage {
        let message = try message(counted.json)
        return Components.Schemas.ContextMessage(
            id: message.id,
            conversationId: message.conversationID,
            role: message.role,
            content: message.content,
            createdAt: message.createdAt,
            tokensUsed: message.tokensUsed,
            latencyMs: message.latencyMs,
            metadata: message.metadata,
            tokens: counted.tokens,
            tokensEstimated: counted.estimated
        )
    }

    /// `Timestamp`'s form of an RFC 3339 time.
    static func utc(_ text: String) throws -> String {
        guard let timestamp = Timestamp(rfc3339: text) else {
            throw HistorianError(.unexpectedReply, "a stored time is not RFC 3339")
        }
        return timestamp.rfc3339
    }

    /// Reads `json`; the error names what it was, never its text.
    private static func decode<T: Decodable>(_ type: T.Type, _ json: String, what: String) throws -> T {
        do {
            return try JSONDecoder().decode(type, from: Data(json.utf8))
        } catch {
            throw HistorianError(.unexpectedReply, "\(what) read from the history is not of the expected shape")
        }
    }
}
