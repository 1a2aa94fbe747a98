import Foundation

/// What the readiness checks last found: whether each server answers and whether the schema is
/// the one this build needs. Ready means all three hold.
///
/// The details are fixed words and numbers, never an error's text: they are served to anyone who
/// can reach `/readyz` and sent to systemd as `STATUS=`.
public struct Readiness: Sendable, Equatable {
    /// Whether a server answered the last check.
    public enum Server: Sendable, Equatable {
        /// Not checked yet.
        case unknown
        case reachable
        /// It refused, failed or did not answer within the check's timeout.
        case unreachable
    }

    /// The recorded schema version against this build's.
    public enum Schema: Sendable, Equatable {
        /// Not known: PostgreSQL has not answered.
        case unknown
        case current
        /// No migration has run: `historian migrate` (or `run`) creates the schema.
        case missing
        case behind(recorded: Int, needed: Int)
        /// The database was migrated by a newer Historian.
        case ahead(recorded: Int, needed: Int)

        /// The state of a database whose recorded version is `recorded` (`nil`: none).
        public init(recorded: Int?, needed: Int = Historian.Schema.currentVersion) {
            switch recorded {
            case nil: self = .missing
            case let version? where version < needed: self = .behind(recorded: version, needed: needed)
            case let version? where version > needed: self = .ahead(recorded: version, needed: needed)
            default: self = .current
            }
        }
    }

    public var postgres: Server = .unknown
    public var redis: Server = .unknown
    public var schema: Schema = .unknown

    public init(postgres: Server = .unknown, redis: Server = .unknown, schema: Schema = .unknown) {
        self.postgres = postgres
        self.redis = redis
        self.schema = schema
    }

    public var isReady: Bool {
        postgres == .reachable && redis == .reachable && schema == .current
    }

    /// What is missing, as the names of the checks: `postgres`, `redis`, `schema`.
    public var missing: [String] {
        checks.filter { !$0.ok }.map(\.name)
    }

    /// Each check: its name, whether it passed, and a detail in a few fixed words.
    public var checks: [(name: String, ok: Bool, detail: String)] {
        [
            ("postgres", postgres == .reachable, Self.describe(postgres)),
            ("redis", redis == .reachable, Self.describe(redis)),
            ("schema", schema == .current, Self.describe(schema)),
        ]
    }

    public static func describe(_ server: Server) -> String {
        switch server {
        case .unknown: "not checked yet"
        case .reachable: "reachable"
        case .unreachable: "unreachable"
        }
    }

    public static func describe(_ schema: Schema) -> String {
        switch schema {
        case .unknown: "unknown until PostgreSQL answers"
        case .current: "current"
        case .missing: "not created"
        case .behind(let recorded, let needed): "version \(recorded), this build needs \(needed)"
        case .ahead(let recorded, let needed): "version \(recorded) is newer than this build's \(needed)"
        }
    }

    /// The body of `/readyz`: `{"checks":{"postgres":"unreachable",…},"missing":["postgres"],"ready":false}`.
    public var json: [UInt8] {
        let body: [String: Any] = [
            "ready": isReady,
            "missing": missing,
            "checks": Dictionary(uniqueKeysWithValues: checks.map { ($0.name, $0.detail) }),
        ]
        // Plain strings, booleans and arrays of them: serialization cannot fail.
        let data = (try? JSONSerialization.data(withJSONObject: body, options: [.sortedKeys])) ?? Data()
        return Array(data)
    }
}
