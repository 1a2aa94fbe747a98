import Testing

@testable import Historian

/// What `historian check` warns about the PostgreSQL role, from its privileges.
struct RolePrivilegesTests {
    @Test("the runtime role: no warning; a superuser or a table owner: one each, naming the role and the tables")
    func warnings() {
        #expect(RolePrivileges(role: "historian_runtime", superuser: false, ownedTables: []).warnings.isEmpty)

        let superuser = RolePrivileges(role: "postgres", superuser: true, ownedTables: []).warnings
        #expect(superuser.count == 1)
        #expect(superuser.first?.hasPrefix("PostgreSQL role postgres is a superuser") == true)

        let owner = RolePrivileges(role: "app", superuser: false, ownedTables: ["conversations", "messages"]).warnings
        #expect(owner.count == 1)
        #expect(owner.first?.hasPrefix("PostgreSQL role app owns conversations, messages and may drop or truncate them") == true)

        #expect(RolePrivileges(role: "postgres", superuser: true, ownedTables: ["messages"]).warnings.count == 2)
    }

    @Test("the tables checked are the ones the migrations create")
    func tables() {
        let created = Schema.migrations.map(\.sql).joined(separator: "\n")
        for table in RolePrivileges.tables where table != "historian_schema_migrations" {
            #expect(created.contains("CREATE TABLE \(table)"), "\(table)")
        }
    }
}
