import Crypto
import Foundation
import Testing

@testable import HistoryAPI

/// The server code in Sources/HistoryAPI/Generated is written by scripts/generate-api and
/// committed; this catches a document or generator configuration changed without running it.
struct GeneratedCodeTests {
    @Test("the generated server code was generated from the openapi.yaml and configuration in the tree")
    func generatedCodeIsCurrent() throws {
        let sources = URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Sources/HistoryAPI")
        let document = try Data(contentsOf: sources.appendingPathComponent("openapi.yaml"))
        let configuration = try Data(contentsOf: sources.appendingPathComponent("openapi-generator-config.yaml"))
        // The document the binary serves is the one in the tree.
        #expect(Array(document) == OpenAPIDocument.bytes)
        let digest = SHA256.hash(data: document + configuration).map { String(format: "%02x", $0) }.joined()
        #expect(
            digest == GeneratedFrom.documentAndConfigSHA256,
            "openapi.yaml or openapi-generator-config.yaml changed since the code was generated: run scripts/generate-api"
        )
    }
}
