import Foundation
import Hummingbird
import Testing

@testable import Historian
@testable import HistoryAPI

/// The parts that need no server: cursors, token counts, the window, the token check and the
/// configuration keys.
struct HistoryUnitTests {
    @Test("cursors go out and come back; anything else, or another list's, is refused")
    func cursors() throws {
        let id = testUUID(0xabc, 0xdef)
        let conversation = ConversationCursor(
            updatedAt: Timestamp(rfc3339: "2025-02-01T00:00:00.123456Z")!,
            id: CanonicalUUID(id)!
        )
        let text = HistoryCursorText.encode(conversation)
        #expect(text == "c1.1738368000123456.\(id)")
        #expect(HistoryCursorText.conversationCursor(text) == conversation)
        #expect(HistoryCursorText.messageCursor(text) == nil)
        let message = MessageCursor(createdAt: Timestamp(microseconds: -1), arrival: 1 << 40)
        #expect(HistoryCursorText.encode(message) == "m1.-1.1099511627776")
        #expect(HistoryCursorText.messageCursor(HistoryCursorText.encode(message)) == message)
        #expect(HistoryCursorText.conversationCursor(HistoryCursorText.encode(message)) == nil)
        // Every string of openapi.yaml's pattern is a cursor: times beyond year 9999 are held there.
        #expect(HistoryCursorText.messageCursor("m1.999999999999999999.0")?.createdAt == Timestamp.latest)
        #expect(HistoryCursorText.conversationCursor("c1.-999999999999999999.\(id)")?.updatedAt == Timestamp.earliest)
        for garbage in [
            "", "!!", "c1", "c1.1", "c1.1.2", "c1..\(id)", "c1.x.\(id)", "c1.1.\(id.uppercased())", "c1.1.\(id).",
            "c1.1234567890123456789.\(id)", "c2.1.\(id)", " c1.1.\(id)", "c1.+1.\(id)", "m1.1.-1",
            "m1.1.1234567890123456789", "m1.1.1 ",
        ] {
            #expect(HistoryCursorText.conversationCursor(garbage) == nil, "\(garbage)")
            #expect(HistoryCursorText.messageCursor(garbage) == nil, "\(garbage)")
        }
    }

    @Test(
        "a message counts tokens_used, else ceil(UTF-8 bytes / 4)",
        arguments: [
            (Int?.some(17), 100, 17, false), (nil, 0, 0, true), (nil, 1, 1, true), (nil, 4, 1, true), (nil, 5, 2, true),
            (Int?.some(0), 9, 0, false),
        ]
    )
    func tokenCount(tokensUsed: Int?, bytes: Int, tokens: Int, estimated: Bool) {
        let count = TokenCount.of(tokensUsed: tokensUsed, contentBytes: bytes)
        #expect(count.tokens == tokens && count.estimated == estimated)
    }

    @Test("the sliding window keeps the longest suffix that fits, and lets go of what it dropped")
    func slidingWindow() {
        let tokens = (0..<5000).map { ($0 * 7919) % 13 }
        for budget in [0, 1, 12, 13, 100, 1000, 100_000] {
            var window = SlidingWindow(budget: budget)
            for (index, count) in tokens.enumerated() {
                window.append(ContextWindow.Message(json: String(index), tokens: count, estimated: false))
            }
            var total = 0
            var first = tokens.count
            while first > 0, total + tokens[first - 1] <= budget {
                first -= 1
                total += tokens[first]
            }
            #expect(window.messages.map(\.json) == (first..<tokens.count).map(String.init), "budget \(budget)")
            #expect(window.tokens == total)
        }
        var ring = RingBuffer<Int>(capacity: 3)
        for value in 1...7 { ring.append(value) }
        #expect(ring.elements == [5, 6, 7])
        var empty = RingBuffer<Int>(capacity: 0)
        empty.append(1)
        #expect(empty.elements.isEmpty)
    }

    @Test("the bearer check takes the token after the scheme, in any case, and nothing else")
    func bearer() {
        let check = BearerAuthenticationMiddleware<BasicRequestContext>(token: "s3cret")
        #expect(check.accepts("Bearer s3cret") && check.accepts("bearer s3cret") && check.accepts("BEARER s3cret"))
        for header in [
            "Bearer s3cre", "Bearer s3cret ", "Bearer  s3cret", "Bearers3cret", "Basic s3cret", "s3cret", "Bearer ", "",
        ] {
            #expect(!check.accepts(header), "\(header)")
        }
    }

    @Test("api_address and api_token: off by default, the token from the key or the credential, never shown")
    func configuration() async throws {
        let credentials = FileManager.default.temporaryDirectory.appendingPathComponent("api-cred-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: credentials, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: credentials) }
        try "from-credential\n".write(
            to: credentials.appendingPathComponent("api-token"),
            atomically: true,
            encoding: .utf8
        )
        let config = credentials.appendingPathComponent("config.yaml").path
        try "archive_dir: /tmp\n".write(toFile: config, atomically: true, encoding: .utf8)

        let defaults = try await HistorianConfiguration.load(flags: [:], configFile: config, environment: [:])
        #expect(defaults.apiAddress == nil && defaults.apiToken == nil)
        #expect(defaults.redactedLines.contains("api_address = (off)"))

        let fromCredential = try await HistorianConfiguration.load(
            flags: ["api_address": "[::1]:8080"],
            configFile: config,
            environment: ["CREDENTIALS_DIRECTORY": credentials.path]
        )
        #expect(fromCredential.apiAddress == MetricsAddress(host: "::1", port: 8080))
        #expect(fromCredential.apiToken == "from-credential")
        #expect(fromCredential.redactedLines.contains("api_token = (set)"))
        #expect(!fromCredential.redactedLines.joined().contains("from-credential"))

        let fromEnvironment = try await HistorianConfiguration.load(
            flags: [:],
            configFile: config,
            environment: [
                "HISTORIAN_API_TOKEN": "from-env", "HISTORIAN_API_ADDRESS": "0.0.0.0:9000",
                "CREDENTIALS_DIRECTORY": credentials.path,
            ]
        )
        #expect(fromEnvironment.apiToken == "from-env" && fromEnvironment.apiAddress?.port == 9000)

        let error = await #expect(throws: HistorianError.self) {
            try await HistorianConfiguration.load(
                flags: ["api_address": "http://0.0.0.0:80/"],
                configFile: config,
                environment: [:]
            )
        }
        #expect(error?.message.hasPrefix("api_address: ") == true, "\(error?.message ?? "")")
        #expect(HistorianConfiguration.keys.first { $0.name == "api_token" }?.isSecret == true)
    }
}
