/// A failure talking to Redis: a stable ``Code`` plus a message that never holds a password or a payload.
public struct RedisError: Error, Sendable, CustomStringConvertible, Hashable {
    /// What kind of failure this is; compare against the static members, which are stable.
    public struct Code: Sendable, Hashable, CustomStringConvertible {
        private enum Base: String, Sendable, Hashable {
            case invalidURL
            case connectionFailed
            case connectionClosed
            case timeout
            case io
            case protocolError
            case server
            case authenticationFailed
            case invalidConfiguration
        }

        private let base: Base

        private init(_ base: Base) {
            self.base = base
        }

        /// A configuration URL could not be parsed.
        public static let invalidURL = Code(.invalidURL)
        /// The TCP or Unix socket connection (or its handshake) could not be established.
        public static let connectionFailed = Code(.connectionFailed)
        /// The connection was closed, by us or by the server, or is broken by an earlier error.
        public static let connectionClosed = Code(.connectionClosed)
        /// No reply arrived within the command timeout.
        public static let timeout = Code(.timeout)
        /// A read or write on the socket failed.
        public static let io = Code(.io)
        /// The server sent something that is not valid RESP, or a command could not be sent as given.
        public static let protocolError = Code(.protocolError)
        /// The server answered with an error reply; ``RedisError/message`` holds its text.
        public static let server = Code(.server)
        /// The server rejected the configured credentials.
        public static let authenticationFailed = Code(.authenticationFailed)
        /// A configuration asks for something the client cannot do, e.g. a database other than 0 in cluster mode.
        public static let invalidConfiguration = Code(.invalidConfiguration)

        /// The code's name, e.g. `timeout`.
        public var description: String {
            base.rawValue
        }
    }

    /// Server error prefixes that mean "try again later" rather than "this request is wrong".
    private static let transientServerPrefixes: Set<String> = [
        "LOADING", "BUSY", "TRYAGAIN", "MASTERDOWN", "CLUSTERDOWN", "READONLY", "NOREPLICAS", "OOM",
    ]

    /// What kind of failure this is.
    public var code: Code
    /// Human-readable detail; for ``Code/server`` the server's error text, e.g. `LOADING Redis is loading...`.
    public var message: String

    /// An error with the given code and message; the message must not contain secrets or payloads.
    public init(code: Code, message: String) {
        self.code = code
        self.message = message
    }

    /// Whether retrying later (usually on a new connection) may succeed; the one place this is decided.
    public var isTransient: Bool {
        switch code {
        case .connectionFailed, .connectionClosed, .timeout, .io:
            return true
        case .server:
            return serverErrorPrefix.map { Self.transientServerPrefixes.contains($0) } ?? false
        default:
            return false
        }
    }

    /// The first word of a server error reply, e.g. `NOGROUP` or `BUSYGROUP`; `nil` for other codes.
    public var serverErrorPrefix: String? {
        guard code == .server else { return nil }
        let word = message.prefix { $0 != " " && $0 != "\r" && $0 != "\n" }
        return word.isEmpty ? nil : String(word)
    }

    /// `code: message`.
    public var description: String {
        "RedisError.\(code): \(message)"
    }
}

extension RedisError {
    /// An error of code ``Code/server`` for an error reply's text, e.g. a pipeline's ``RESPValue/error(_:)`` value.
    ///
    /// Redis echoes the first arguments of an unknown command ("…, with args beginning with: 'a' 'b'"); those may be
    /// payloads or passwords, so that tail is cut off here, before the text can reach any log.
    public init(serverReply text: String) {
        self.init(code: .server, message: Self.redactingEchoedArguments(text))
    }

    private static func redactingEchoedArguments(_ text: String) -> String {
        guard let range = text.firstRange(of: ", with args beginning with:") else { return text }
        return String(text[..<range.lowerBound]) + " (arguments redacted)"
    }
}
