import Foundation
import LocalServers

/// The Redis users of deploy/redis-acl.conf and the PostgreSQL roles of
/// deploy/postgres-roles.sql, as shipped, with test passwords where the file has placeholders.
enum LeastPrivilege {
    static let historianPassword = "historian-test-password"
    static let frontendPassword = "frontend-test-password"
    static let ownerRole = "historian_owner"
    static let runtimeRole = "historian_runtime"
    static let readonlyRole = "historian_readonly"

    static let deployDirectory = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("deploy")

    /// deploy/redis-acl.conf with each user's placeholder hash replaced by its test password.
    static func redisUsers() throws -> String {
        let text = try String(contentsOf: deployDirectory.appendingPathComponent("redis-acl.conf"), encoding: .utf8)
        let placeholder = "#" + String(repeating: "0", count: 64)
        return text.split(separator: "\n", omittingEmptySubsequences: false).map { line -> String in
            let line = String(line)
            if line.hasPrefix("user historian ") {
                return line.replacing(placeholder, with: ">" + historianPassword)
            }
            if line.hasPrefix("user frontend ") {
                return line.replacing(placeholder, with: ">" + frontendPassword)
            }
            return line
        }.joined(separator: "\n")
    }

    /// Runs deploy/postgres-roles.sql in `database`, as the cluster's superuser.
    static func createRoles(_ server: PostgresServer, database: String) async throws {
        try await server.psql(file: deployDirectory.appendingPathComponent("postgres-roles.sql").path, database: database)
    }

    /// `redis://user:password@127.0.0.1:PORT`.
    static func redisURL(_ server: RedisServer, user: String, password: String) -> String {
        "redis://\(user):\(password)@127.0.0.1:\(server.port)"
    }

    /// The database as `role` (trust on loopback: no password).
    static func postgresURL(_ server: PostgresServer, role: String, database: String) -> String {
        "postgresql://\(role)@127.0.0.1:\(server.port)/\(database)"
    }
}
