import Foundation
import LocalServers
import PostgresClient
import Testing

/// The daemon against a PostgreSQL that takes TLS connections only, its certificate from the test
/// CA (docs/tls.md): settings from the URL or from PG* variables, and the failures an operator must
/// fix, which end the start at once with a message that names them.
@Suite(.serialized)
struct PostgresTLSTests {
    @Test("sslmode=verify-full with a client certificate: PG* variables reach libpq, and a run stores everything")
    func verifyFullStoresEverything() async throws {
        let certificates = try await TestCertificates.shared()
        try await TestEnvironment.with(postgresTLS: .init(certificates, clientCertificates: true)) { environment in
            // A URL without TLS settings: with the PG* variables, libpq in the daemon verifies the
            // server and presents the client certificate; without them, the server refuses it.
            var fromVariables = environment.historianEnvironment
            fromVariables["HISTORIAN_POSTGRES_URL"] = environment.postgresServer.url(
                database: environment.database,
                tlsSettings: false
            )
            let refused = try await HistorianProcess.run(["migrate"], environment: fromVariables)
            #expect(refused.status != 0)
            #expect(refused.errors.contains("requires a valid client certificate"), "\(refused.errors)")
            fromVariables["PGSSLMODE"] = "verify-full"
            fromVariables["PGSSLROOTCERT"] = certificates.authority
            fromVariables["PGSSLCERT"] = certificates.clientCertificate
            fromVariables["PGSSLKEY"] = certificates.clientKey
            let migrated = try await HistorianProcess.run(["migrate"], environment: fromVariables)
            #expect(migrated.status == 0, "\(migrated.errors)")

            // The settings in the URL (sslmode, sslrootcert, sslcert, sslkey): every message stored.
            let messages = Producer.workload(count: 300, conversations: 12, seed: 36)
            let redis = try await environment.redis()
            defer { redis.close() }
            try await Producer.append(messages, redis: redis)
            #expect(environment.postgresURL.contains("sslmode=verify-full"))
            let run = try await HistorianProcess.run(["run", "--once"], environment: environment.historianEnvironment)
            #expect(run.status == 0, "\(run.errors)")
            try await expectStored(messages, in: environment)
            #expect(try await environment.pendingCount() == 0)

            // pg_hba.conf refuses TCP without TLS, so each of those connections was encrypted.
            await #expect(throws: PostgresError.self) {
                let plain = environment.postgresServer.url(database: environment.database, tlsSettings: false)
                _ = try await PostgresConnection.connect(
                    conninfo: plain + "?sslmode=disable",
                    logger: environment.logger
                )
            }
        }
    }

    /// A PostgreSQL setting that TLS refuses, and what the daemon's message must name.
    struct Misconfiguration: Sendable {
        var name: String
        var url: @Sendable (_ port: Int, _ certificates: TestCertificates) -> String
        var named: @Sendable (TestCertificates) -> [String]
    }

    static let misconfigurations = [
        Misconfiguration(
            name: "a CA that did not issue the server's certificate",
            url: { port, certificates in
                "postgresql://historian:pa55-s3cret@127.0.0.1:\(port)/historian?sslmode=verify-full&sslrootcert=\(certificates.otherAuthority)"
            },
            named: {
                [
                    "SSL error: certificate verify failed", "sslrootcert=\($0.otherAuthority)",
                    "not issued by a CA in sslrootcert",
                ]
            }
        ),
        Misconfiguration(
            name: "a host name the server's certificate does not name",
            url: { port, certificates in
                "postgresql://historian:pa55-s3cret@db.historian.invalid:\(port)/historian?hostaddr=127.0.0.1"
                    + "&sslmode=verify-full&sslrootcert=\(certificates.authority)"
            },
            named: { _ in
                [
                    "server certificate for \"localhost\" (and 1 other name) does not match host name \"db.historian.invalid\""
                ]
            }
        ),
    ]

    @Test("a wrong CA and a wrong host name each fail at start, at once, naming the problem; check names it too")
    func wrongCAOrHostFailsAtStart() async throws {
        let certificates = try await TestCertificates.shared()
        try await TestEnvironment.with(postgresTLS: .init(certificates)) { environment in
            for misconfiguration in Self.misconfigurations {
                var variables = environment.historianEnvironment
                variables["HISTORIAN_POSTGRES_URL"] = misconfiguration.url(
                    environment.postgresServer.port,
                    certificates
                )
                let named = misconfiguration.named(certificates)

                let started = ContinuousClock.now
                let run = try await HistorianProcess.run(["run"], environment: variables, timeout: .seconds(60))
                // EX_CONFIG, on which the systemd units do not restart: no retry storm there either.
                #expect(run.status == 78, "\(misconfiguration.name): \(run.errors)")
                #expect(ContinuousClock.now - started < .seconds(30), "\(misconfiguration.name)")
                #expect(
                    run.errors.contains("cannot start: PostgreSQL TLS: "),
                    "\(misconfiguration.name): \(run.errors)"
                )
                for text in named {
                    #expect(run.errors.contains(text), "\(misconfiguration.name): \(text) in \(run.errors)")
                }
                // One attempt: the start ends instead of retrying.
                #expect(!run.errors.contains("preparing PostgreSQL failed; retrying"), "\(misconfiguration.name)")
                #expect(!run.errors.contains("s3cret"), "\(misconfiguration.name)")

                let check = try await HistorianProcess.run(["check"], environment: variables)
                #expect(check.status == 1, "\(misconfiguration.name)")
                #expect(check.output.contains("problem: PostgreSQL TLS: "), "\(misconfiguration.name): \(check.output)")
                for text in named {
                    #expect(check.output.contains(text), "\(misconfiguration.name): \(text) in \(check.output)")
                }
                #expect(!(check.output + check.errors).contains("s3cret"), "\(misconfiguration.name)")
            }
            // Nothing was written: no schema, through any connection.
            #expect(try await environment.scalar("SELECT count(*) FROM pg_tables WHERE tablename = 'messages'") == 0)
        }
    }
}
