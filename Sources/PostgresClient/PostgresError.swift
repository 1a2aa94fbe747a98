/// A failure reported by PostgreSQL or by the client; `description` never contains a password or conninfo.
public struct PostgresError: Error, Sendable, CustomStringConvertible {
    /// A stable error code; compare with the static members, e.g. `error.code == .server`.
    public struct Code: Sendable, Hashable, CustomStringConvertible {
        private enum Base: String, Sendable, Hashable {
            case connectionFailed
            case connectionLost
            case timeout
            case server
            case protocolError
            case closed
            case tlsFailed
        }

        private let base: Base

        private init(_ base: Base) {
            self.base = base
        }

        /// The connection could not be established (refused, unreachable, authentication, bad conninfo).
        public static let connectionFailed = Code(.connectionFailed)
        /// An established connection broke (server gone, socket error).
        public static let connectionLost = Code(.connectionLost)
        /// The call, or the connection attempt, did not finish before its deadline; the connection is now broken.
        public static let timeout = Code(.timeout)
        /// PostgreSQL answered with an error; `sqlState` says which.
        public static let server = Code(.server)
        /// The server or libpq did something this client does not handle; the connection is now broken.
        public static let protocolError = Code(.protocolError)
        /// The connection was closed by `close()`, or a session was used outside `withSession`.
        public static let closed = Code(.closed)
        /// The connection could not be established because TLS could not be set up as asked: the server's
        /// certificate did not verify or does not name the host, a certificate or key file is missing or
        /// unusable, or the server refused the connection for want of TLS or of a valid client certificate.
        /// Permanent: only an operator can fix it (see ``PostgresError/tlsProblem(inConnectMessage:)``).
        public static let tlsFailed = Code(.tlsFailed)

        /// The code's name, e.g. `server`.
        public var description: String { base.rawValue }
    }

    /// What kind of failure this is.
    public var code: Code
    /// The five-character SQLSTATE, e.g. `23505`, when PostgreSQL reported one.
    public var sqlState: String?
    /// The primary message; never contains the conninfo or a password.
    public var message: String
    /// PostgreSQL's detail message, which may quote row values; not part of `description`.
    public var detail: String?
    /// The name of the violated constraint, when there is one.
    public var constraint: String?

    /// Creates an error value; the client builds these itself, tests and fakes may too.
    public init(
        code: Code,
        sqlState: String? = nil,
        message: String,
        detail: String? = nil,
        constraint: String? = nil
    ) {
        self.code = code
        self.sqlState = sqlState
        self.message = message
        self.detail = detail
        self.constraint = constraint
    }

    /// Whether retrying later (on a new connection if need be) may succeed; the one place that decides.
    public var isTransient: Bool {
        switch code {
        case .connectionFailed, .connectionLost, .timeout:
            return true
        case .server:
            guard let sqlState else { return false }
            return Self.isTransient(sqlState: sqlState)
        default:
            // protocolError, closed and tlsFailed: retrying the same call will not help.
            return false
        }
    }

    /// Whether PostgreSQL refused the data itself (SQLSTATE classes 22 data exception, 23
    /// integrity constraint violation, 54 program limit exceeded): the same rows are refused
    /// again however often they are sent.
    public var isRejectedData: Bool {
        guard code == .server, let sqlState, !isTransient else { return false }
        return ["22", "23", "54"].contains(String(sqlState.prefix(2)))
    }

    /// A unique key already held the value (23505).
    public var isUniqueViolation: Bool { code == .server && sqlState == "23505" }

    /// A foreign key found no row to point at (23503).
    public var isForeignKeyViolation: Bool { code == .server && sqlState == "23503" }

    /// `<code> [SQLSTATE] message`; leaves out `detail`, which may quote row values.
    public var description: String {
        if let sqlState {
            return "\(code) [\(sqlState)] \(message)"
        }
        return "\(code) \(message)"
    }

    /// Classifies a server SQLSTATE; anything not listed (22 data, 23 constraints, 42 syntax, ...) is permanent.
    static func isTransient(sqlState: String) -> Bool {
        let state = sqlState.uppercased()
        switch state {
        case "40001",  // serialization_failure
            "40P01",  // deadlock_detected
            "40000",  // transaction_rollback
            "40003",  // statement_completion_unknown
            "55P03",  // lock_not_available
            "57014",  // query_canceled (our own or the server's statement timeout)
            "57P01",  // admin_shutdown
            "57P02",  // crash_shutdown
            "57P03",  // cannot_connect_now (starting up, shutting down, recovery)
            "57P05":  // idle_session_timeout: the session was closed, a new one works
            return true
        default:
            break
        }
        switch state.prefix(2) {
        case "08",  // connection_exception
            "53",  // insufficient_resources
            "58":  // system_error (I/O error and the like)
            return true
        default:
            // Includes 40002 (transaction_integrity_constraint_violation): a deferred constraint fails again.
            return false
        }
    }

    /// Replaces every occurrence of each non-empty secret (password, whole conninfo) with `********`.
    static func redact(_ text: String, secrets: [String]) -> String {
        var result = text
        // Longest first, so a password inside a redacted conninfo cannot leave fragments behind.
        for secret in secrets.filter({ !$0.isEmpty }).sorted(by: { $0.count > $1.count }) {
            result = result.replacing(secret, with: "********")
        }
        return result
    }
}
