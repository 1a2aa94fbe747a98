import PostgresClient

/// What the PostgreSQL role Historian connects as may do beyond reading and writing rows.
///
/// Everything but `historian migrate` needs only the rights of deploy/postgres-roles.sql's
/// runtime role; `historian check` warns when the role has more: a superuser, or a role that
/// owns Historian's tables (or inherits their owner's rights), can drop or truncate them.
public struct RolePrivileges: Sendable, Equatable {
    /// The role connected (`current_user`).
    public var role: String
    public var superuser: Bool
    /// Historian's tables that the role owns or may act as the owner of.
    public var ownedTables: [String]

    public init(role: String, superuser: Bool, ownedTables: [String]) {
        self.role = role
        self.superuser = superuser
        self.ownedTables = ownedTables
    }

    /// The tables Historian's migrations create.
    static let tables = [
        "archived_conversations", "conversations", "erasures", "historian_schema_migrations", "message_contexts",
        "messages",
    ]

    /// Reads the connected role's privileges.
    public static func read(_ session: PostgresSession) throws -> RolePrivileges {
        let rows = try session.query(
            """
            SELECT current_user AS role, r.rolsuper AS superuser,
                coalesce((
                    SELECT string_agg(c.relname, ',' ORDER BY c.relname)
                    FROM unnest(string_to_array($1, ',')) AS t(name)
                    JOIN pg_class AS c ON c.oid = to_regclass(t.name)
                    WHERE pg_has_role(current_user, c.relowner, 'USAGE')
                ), '') AS owned
            FROM pg_roles AS r WHERE r.rolname = current_user
            """,
            [tables.joined(separator: ",")]
        )
        let owned = rows[0, "owned"] ?? ""
        return RolePrivileges(
            role: rows[0, "role"] ?? "?",
            superuser: rows[0, "superuser"] == "t",
            ownedTables: owned.isEmpty ? [] : owned.split(separator: ",").map(String.init)
        )
    }

    /// What `historian check` warns about; empty for a role with only the runtime rights.
    public var warnings: [String] {
        var warnings: [String] = []
        if superuser {
            warnings.append(
                "PostgreSQL role \(role) is a superuser: run Historian as a role with only the rights it needs "
                    + "(deploy/postgres-roles.sql, historian_runtime)"
            )
        }
        if !ownedTables.isEmpty {
            warnings.append(
                "PostgreSQL role \(role) owns \(ownedTables.joined(separator: ", ")) and may drop or truncate them: "
                    + "only `historian migrate` needs the owner; run the rest as the runtime role (deploy/postgres-roles.sql)"
            )
        }
        return warnings
    }
}
