/// A failure of Historian itself, with a stable code.
///
/// Descriptions name what went wrong and where, never a password or a message body.
public struct HistorianError: Error, Sendable, Hashable, CustomStringConvertible {
    public struct Code: Sendable, Hashable, CustomStringConvertible {
        private enum Base: String, Sendable, Hashable {
            case invalidConfiguration = "invalid_configuration"
            case schemaTooNew = "schema_too_new"
            case cannotMigrate = "cannot_migrate"
            case unexpectedReply = "unexpected_reply"
            case archiveUnreadable = "archive_unreadable"
            case cannotListen = "cannot_listen"
        }
        private let base: Base
        private init(_ base: Base) { self.base = base }

        public static let invalidConfiguration = Code(.invalidConfiguration)
        public static let schemaTooNew = Code(.schemaTooNew)
        /// The schema is behind and the role connected may not change it.
        public static let cannotMigrate = Code(.cannotMigrate)
        public static let unexpectedReply = Code(.unexpectedReply)
        public static let archiveUnreadable = Code(.archiveUnreadable)
        /// A server socket could not be opened, such as the metrics endpoint's on a taken port.
        public static let cannotListen = Code(.cannotListen)

        public var description: String { base.rawValue }
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}
