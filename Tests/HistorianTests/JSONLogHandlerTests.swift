import Foundation
import Logging
import Synchronization
import Testing

@testable import Historian

/// `log_format: json`: one object per line, whatever the message and metadata hold.
struct JSONLogHandlerTests {
    final class Lines: Sendable {
        let lines = Mutex<[String]>([])
        func append(_ line: String) { lines.withLock { $0.append(line) } }
        var all: [String] { lines.withLock { $0 } }
    }

    func logger(_ lines: Lines, level: Logger.Level = .info) -> Logger {
        var handler = JSONLogHandler(label: "historian") { lines.append($0) }
        handler.logLevel = level
        return Logger(label: "historian", factory: { _ in handler })
    }

    @Test func eachEventIsOneJSONObjectOnOneLine() throws {
        let lines = Lines()
        var logger = logger(lines)
        logger[metadataKey: "consumer"] = "host-0"
        logger.warning(
            "a \"quoted\"\nmulti-line message\twith ünïcode",
            metadata: [
                "stream.entry": "1-0", "attempt": "\(3)", "message": "a key that collides",
                "list": ["a", "b"], "nested": ["k": "v"],
            ]
        )
        logger.debug("below the level")
        #expect(lines.all.count == 1)
        let line = try #require(lines.all.first)
        #expect(line.hasSuffix("\n") && line.dropLast().allSatisfy { $0 != "\n" })
        let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        #expect(object["level"] as? String == "warning")
        #expect(object["logger"] as? String == "historian")
        #expect(object["message"] as? String == "a \"quoted\"\nmulti-line message\twith ünïcode")
        #expect(object["consumer"] as? String == "host-0")
        #expect(object["stream.entry"] as? String == "1-0")
        #expect(object["attempt"] as? String == "3")
        #expect(object["metadata.message"] as? String == "a key that collides")
        #expect(object["list"] as? [String] == ["a", "b"])
        #expect(object["nested"] as? [String: String] == ["k": "v"])
        let time = try #require(object["time"] as? String)
        #expect(Timestamp(rfc3339: time) != nil && time.hasSuffix("Z"))
        #expect(object["source"] as? String == "HistorianTests")
    }
}
