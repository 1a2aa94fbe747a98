import LocalServers
import PostgresClient
import Testing

/// The client against a PostgreSQL that takes TLS connections only, with client certificates, from the
/// test CA: what works is encrypted, and what fails at TLS says why, once, as a permanent failure.
@Suite("PostgreSQL over TLS")
struct PostgresTLSTests {
    @Test("verify-full with a client certificate connects, encrypted, as the certificate's user")
    func verifyFull() async throws {
        let certificates = try await TestCertificates.shared()
        let server = try await PostgresServer.start(tls: .init(certificates, clientCertificates: true))
        do {
            let connection = try await PostgresConnection.connect(conninfo: server.url(), logger: testLogger)
            defer { connection.close() }
            let rows = try await connection.query(
                "SELECT ssl::text, client_dn, current_user FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
            )
            #expect(rows.rows.first == ["true", "/CN=\(TestCertificates.clientName)", PostgresServer.superuser])

            // The same server refuses a connection without TLS: the one above could only be encrypted.
            let plain = await expectPostgresError {
                _ = try await PostgresConnection.connect(
                    conninfo: server.url(tlsSettings: false) + "?sslmode=disable",
                    logger: testLogger
                )
            }
            #expect(plain?.message.contains("no encryption") == true, "\(String(describing: plain))")
            try await server.destroy()
        } catch {
            try? await server.destroy()
            throw error
        }
    }

    /// A connection attempt that must fail at TLS, and what its message must name.
    struct Failure: Sendable {
        var name: String
        /// The URI's query: the TLS settings, with the certificates' paths.
        var parameters: @Sendable (TestCertificates) -> String
        /// The host in the URI; the server's port is added.
        var host = "127.0.0.1"
        /// What the error's message must contain.
        var named: [String]
    }

    static let failures: [Failure] = [
        Failure(
            name: "a CA that did not issue the server's certificate",
            parameters: {
                "sslmode=verify-full&sslrootcert=\($0.otherAuthority)&sslcert=\($0.clientCertificate)&sslkey=\($0.clientKey)"
            },
            named: ["certificate verify failed", "sslrootcert="]
        ),
        Failure(
            name: "a host name the server's certificate does not name",
            parameters: {
                "hostaddr=127.0.0.1&sslmode=verify-full&sslrootcert=\($0.authority)&sslcert=\($0.clientCertificate)&sslkey=\($0.clientKey)"
            },
            host: "db.historian.invalid",
            named: ["does not match host name \"db.historian.invalid\""]
        ),
        Failure(
            name: "a root certificate file that does not exist",
            parameters: { "sslmode=verify-full&sslrootcert=\($0.directory)/missing.crt" },
            named: ["root certificate file", "missing.crt", "does not exist"]
        ),
        Failure(
            name: "no client certificate",
            parameters: { "sslmode=verify-full&sslrootcert=\($0.authority)&sslcert=\($0.directory)/none.crt" },
            named: ["requires a valid client certificate", "set sslcert and sslkey"]
        ),
    ]

    @Test("TLS failures at connect are permanent tlsFailed errors that name the problem and no password")
    func failures() async throws {
        let certificates = try await TestCertificates.shared()
        // One server for every case: each fails before a session exists.
        let server = try await PostgresServer.start(tls: .init(certificates, clientCertificates: true))
        do {
            for failure in Self.failures {
                let conninfo =
                    "postgresql://historian:pa55-s3cret@\(failure.host):\(server.port)/postgres?"
                    + failure.parameters(certificates)
                let error = await expectPostgresError {
                    _ = try await PostgresConnection.connect(
                        conninfo: conninfo,
                        connectTimeout: .seconds(10),
                        logger: testLogger
                    )
                }
                #expect(error?.code == .tlsFailed, "\(failure.name): \(String(describing: error))")
                #expect(error?.isTransient == false, "\(failure.name)")
                for text in failure.named {
                    #expect(error?.message.contains(text) == true, "\(failure.name): \(error?.message ?? "")")
                }
                #expect(error?.message.contains("\n") == false, "\(failure.name): one line")
                let shown = "\(String(describing: error)) \(error?.message ?? "")"
                #expect(!shown.contains("s3cret"), "\(failure.name)")
            }
            try await server.destroy()
        } catch {
            try? await server.destroy()
            throw error
        }
    }
}
