import Foundation
@testable import Historian
import RedisClient
import Testing

/// The LangChain elements Historian makes for the messages it stores (`LangchainElement`) must be
/// the bytes the cache script makes when it converts recent-list elements itself.
@Suite(.serialized)
struct LangchainElementTests {
    @Test("Historian's LangChain elements are the cache script's, byte for byte; tool messages are left to the script")
    func sameBytesAsTheScript() async throws {
        var messages = MessageStoreTests.units().flatMap { $0 }
        let template = messages[0]
        for (role, content) in [
            (Role.user, #"looks like a field: ", "metadata" : {} and "content" : "x""#),
            (.assistant, ""), (.system, "\u{0}\u{1F}\\\"\u{7F}"), (.user, String(repeating: "long ✓ ", count: 3000)),
        ] {
            messages.append(
                IncomingMessage(
                    entryID: template.entryID, id: CanonicalUUID(UUID().uuidString.lowercased())!,
                    conversationID: template.conversationID, userID: template.userID, role: role, content: content,
                    createdAt: template.createdAt, sessionID: nil, deptID: nil, title: nil, tokensUsed: 7, latencyMs: nil,
                    metadata: #"{"k":"v"}"#, contexts: nil
                )
            )
        }
        let elements = messages.map { RecentCache.element(of: $0, metadata: $0.metadata) }
        try await TestEnvironment.with { environment in
            let redis = try await environment.redis()
            defer { redis.close() }
            let script = RecentCache.langchainScript + "\nreturn langchainElement(ARGV[1])"
            var compared = 0
            for (message, element) in zip(messages, elements) {
                let made = LangchainElement.make(fromRecent: element)
                let scripted = try await redis.send("EVAL", RedisArgument(script), "0", RedisArgument(element)).string
                #expect(scripted != nil)
                if message.role == .tool {
                    #expect(made == nil, "a tool message is the script's to convert")
                } else {
                    #expect(made == scripted, "\(message.role) \(message.content.prefix(40))")
                    compared += 1
                }
            }
            #expect(compared == messages.filter { $0.role != .tool }.count && compared > 15)
        }
    }
}
