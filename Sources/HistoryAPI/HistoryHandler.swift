import Historian
import OpenAPIRuntime

/// The operations of openapi.yaml, as the generated `APIProtocol` declares them.
///
/// Answers it can decide itself (a malformed ID or cursor: 400; unknown: 404) it returns as the
/// document's typed responses; failures of the servers or of an archive file it throws, and
/// `FailureMiddleware` turns them into the document's 500 and 503 bodies.
struct HistoryHandler: APIProtocol {
    let reader: HistoryReader
    let eraser: (any HistoryEraser)?

    func listUserConversations(
        _ input: Operations.ListUserConversations.Input
    ) async throws -> Operations.ListUserConversations.Output {
        let user = input.path.userId
        guard (1...255).contains(user.count) else { return .badRequest(Self.invalidUser) }
        var before: ConversationCursor?
        if let text = input.query.before {
            guard let cursor = HistoryCursorText.conversationCursor(text) else {
                return .badRequest(Self.invalidCursor)
            }
            before = cursor
        }
        let limit = input.query.limit ?? 50
        guard (1...HistoryReader.maximumConversationPage).contains(limit) else {
            return .badRequest(Self.outOfRange("limit", 1...HistoryReader.maximumConversationPage))
        }
        // Producers' user IDs are 1 to 255 bytes: a longer one has nothing stored.
        guard user.utf8.count <= 255 else { return .ok(.init(body: .json(.init(conversations: [])))) }
        let page = try await reader.conversations(of: user, limit: limit, before: before)
        let list = Components.Schemas.ConversationList(
            conversations: page.conversations.map {
                Components.Schemas.ConversationSummary(
                    id: $0.id.text,
                    title: $0.title,
                    createdAt: $0.createdAt.rfc3339,
                    updatedAt: $0.updatedAt.rfc3339,
                    messageCount: $0.messageCount,
                    archived: $0.archived
                )
            },
            nextBefore: page.next.map(HistoryCursorText.encode)
        )
        return .ok(.init(body: .json(list)))
    }

    func getConversation(_ input: Operations.GetConversation.Input) async throws -> Operations.GetConversation.Output {
        guard let id = CanonicalUUID(input.path.id) else { return .badRequest(Self.invalidConversation) }
        var after: MessageCursor?
        if let text = input.query.after {
            guard let cursor = HistoryCursorText.messageCursor(text) else { return .badRequest(Self.invalidCursor) }
            after = cursor
        }
        let limit = input.query.limit ?? 100
        guard (1...HistoryReader.maximumMessagePage).contains(limit) else {
            return .badRequest(Self.outOfRange("limit", 1...HistoryReader.maximumMessagePage))
        }
        guard let page = try await reader.conversation(id, limit: limit, after: after) else {
            return .notFound(Self.unknownConversation)
        }
        let answer = Components.Schemas.ConversationPage(
            conversation: try HistoryJSON.conversation(page.conversation, archived: page.archived),
            messages: try page.messages.map { try HistoryJSON.storedMessage($0.json) },
            nextAfter: page.next.map(HistoryCursorText.encode)
        )
        return .ok(.init(body: .json(answer)))
    }

    func getRecentMessages(
        _ input: Operations.GetRecentMessages.Input
    ) async throws -> Operations.GetRecentMessages.Output {
        guard let id = CanonicalUUID(input.path.id) else { return .badRequest(Self.invalidConversation) }
        guard let recent = try await reader.recent(id) else { return .notFound(Self.unknownConversation) }
        let source: Components.Schemas.RecentList.SourcePayload =
            switch recent.source {
            case .cache: .cache
            case .rebuilt: .rebuilt
            case .archive: .archive
            }
        let list = Components.Schemas.RecentList(
            conversationId: id.text,
            source: source,
            messages: try recent.elements.map(HistoryJSON.recentMessage)
        )
        return .ok(.init(body: .json(list)))
    }

    func getContextWindow(_ input: Operations.GetContextWindow.Input) async throws -> Operations.GetContextWindow.Output
    {
        guard let id = CanonicalUUID(input.path.id) else { return .badRequest(Self.invalidConversation) }
        let budget = input.query.maxTokens
        guard (0...Self.maximumTokens).contains(budget) else {
            return .badRequest(Self.outOfRange("max_tokens", 0...Self.maximumTokens))
        }
        guard let window = try await reader.context(id, maxTokens: budget) else {
            return .notFound(Self.unknownConversation)
        }
        let answer = Components.Schemas.ContextWindow(
            conversationId: id.text,
            maxTokens: budget,
            tokens: window.tokens,
            archived: window.archived,
            messages: try window.messages.map(HistoryJSON.contextMessage)
        )
        return .ok(.init(body: .json(answer)))
    }

    func eraseConversation(
        _ input: Operations.EraseConversation.Input
    ) async throws -> Operations.EraseConversation.Output {
        guard let id = CanonicalUUID(input.path.id) else { return .badRequest(Self.invalidConversation) }
        guard let eraser else { throw Self.noErasure }
        let report = try await eraser.erase(ErasureSubject(conversation: id))
        guard report.removed != ErasureCounts() else { return .notFound(Self.unknownConversation) }
        return .ok(.init(body: .json(Self.erasure(report))))
    }

    func eraseUser(_ input: Operations.EraseUser.Input) async throws -> Operations.EraseUser.Output {
        let user = input.path.userId
        guard (1...255).contains(user.count) else { return .badRequest(Self.invalidUser) }
        guard let eraser else { throw Self.noErasure }
        let unknownUser = Components.Responses.NotFound(
            body: .json(.init(error: .notFound, message: "no history of this user was found"))
        )
        // Producers' user IDs are 1 to 255 bytes: a longer one has nothing stored.
        guard let subject = ErasureSubject(user: user) else { return .notFound(unknownUser) }
        let report = try await eraser.erase(subject)
        guard report.removed != ErasureCounts() else { return .notFound(unknownUser) }
        return .ok(.init(body: .json(Self.erasure(report))))
    }

    func getOpenAPIDocument(
        _ input: Operations.GetOpenAPIDocument.Input
    ) async throws -> Operations.GetOpenAPIDocument.Output {
        .ok(.init(body: .yaml(HTTPBody(OpenAPIDocument.bytes))))
    }

    /// The largest `max_tokens` accepted: beyond any model's context window.
    static let maximumTokens = 10_000_000

    private static func erasure(_ report: ErasureReport) -> Components.Schemas.Erasure {
        let removed = report.removed
        return Components.Schemas.Erasure(
            erasureId: report.erasureID ?? 0,
            scope: report.scope == .user ? .user : .conversation,
            subjectSha256: report.subjectSHA256,
            resumed: report.resumed,
            startedAt: report.startedAt,
            finishedAt: report.finishedAt,
            removed: Components.Schemas.ErasureCounts(
                conversations: removed.conversations,
                messages: removed.messages,
                contexts: removed.contexts,
                archivedConversations: removed.archivedConversations,
                archiveFiles: removed.archiveFiles,
                redisKeys: removed.redisKeys,
                deadLetters: removed.deadLetters
            )
        )
    }

    private static let noErasure = APIFailure(
        code: .notImplemented,
        status: .notImplemented,
        message: "erasure is not available in this daemon"
    )

    private static func badRequest(_ code: APIFailure.Code, _ message: String) -> Components.Responses.BadRequest {
        .init(body: .json(.init(error: code, message: message)))
    }

    private static let invalidConversation = badRequest(.invalidId, "a conversation ID is a UUID")
    private static let invalidUser = badRequest(.invalidId, "a user ID is 1 to 255 characters")
    private static let invalidCursor = badRequest(.invalidCursor, "not a cursor that this list gave out")

    private static func outOfRange(_ name: String, _ range: ClosedRange<Int>) -> Components.Responses.BadRequest {
        badRequest(.invalidParameter, "\(name) must be from \(range.lowerBound) to \(range.upperBound)")
    }

    private static let unknownConversation = Components.Responses.NotFound(
        body: .json(.init(error: .notFound, message: "no such conversation, live or archived"))
    )
}
