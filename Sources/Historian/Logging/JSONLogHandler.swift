#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Logging
import Synchronization

/// Writes each log event as one JSON object on one line (`log_format: json`), for log shippers:
///
///     {"level":"warning","logger":"historian","message":"not ready","missing":"postgres","source":"Historian","time":"2026-12-06T21:00:00.123456Z"}
///
/// Metadata keys become top-level keys beside `time`, `level`, `logger`, `message` and `source`;
/// a metadata key that would take one of those names is written as `metadata.<key>`. Values are
/// strings, arrays or objects as the metadata holds them. What the text format would carry, this
/// carries, and no more: Historian logs no secret and no message body in either.
public struct JSONLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    public var logLevel: Logger.Level = .info
    let label: String
    let output: @Sendable (String) -> Void

    /// A handler writing to standard error.
    public static func standardError(label: String) -> JSONLogHandler {
        JSONLogHandler(label: label, metadataProvider: LoggingSystem.metadataProvider, output: StandardError.write)
    }

    /// - Parameter output: receives each line, newline included.
    public init(label: String, metadataProvider: Logger.MetadataProvider? = nil, output: @escaping @Sendable (String) -> Void) {
        self.label = label
        self.metadataProvider = metadataProvider
        self.output = output
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    static let reservedKeys: Set<String> = ["time", "level", "logger", "message", "source"]

    public func log(event: LogEvent) {
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { _, new in new } }
        if let explicit = event.metadata { merged.merge(explicit) { _, new in new } }
        if let error = event.error { merged["error"] = "\(error)" }

        var object: [String: Any] = [
            "time": Timestamp.now.rfc3339,
            "level": event.level.rawValue,
            "logger": label,
            "message": event.message.description,
            "source": event.source,
        ]
        for (key, value) in merged {
            object[Self.reservedKeys.contains(key) ? "metadata." + key : key] = Self.jsonValue(value)
        }
        // Strings, arrays and objects of strings: serialization cannot fail.
        guard
            let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])
        else { return }
        output(String(decoding: data, as: UTF8.self) + "\n")
    }

    static func jsonValue(_ value: Logger.Metadata.Value) -> Any {
        switch value {
        case .string(let text): text
        case .stringConvertible(let convertible): convertible.description
        case .array(let values): values.map(jsonValue)
        case .dictionary(let dictionary): dictionary.mapValues(jsonValue)
        }
    }
}

/// Standard error, written a whole line at a time by one thread at a time.
enum StandardError {
    private static let lock = Mutex(())

    @Sendable static func write(_ line: String) {
        lock.withLock { _ in
            var bytes = Array(line.utf8)
            var offset = 0
            while offset < bytes.count {
                let written = bytes.withUnsafeMutableBytes { Glibc.write(2, $0.baseAddress! + offset, $0.count - offset) }
                if written < 0 {
                    if errno == EINTR { continue }
                    return
                }
                offset += written
            }
        }
    }
}
