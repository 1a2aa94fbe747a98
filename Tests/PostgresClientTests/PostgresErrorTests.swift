import Testing

@testable import PostgresClient

@Suite("PostgresError classification and redaction")
struct PostgresErrorTests {
    @Test(
        "server errors are transient only for SQLSTATEs where a retry can succeed",
        arguments: [
            ("08000", true),  // connection_exception
            ("08006", true),  // connection_failure
            ("08P01", true),  // protocol_violation
            ("40001", true),  // serialization_failure
            ("40P01", true),  // deadlock_detected
            ("53100", true),  // disk_full
            ("53300", true),  // too_many_connections
            ("55P03", true),  // lock_not_available
            ("57014", true),  // query_canceled
            ("57P01", true),  // admin_shutdown
            ("57P02", true),  // crash_shutdown
            ("57P03", true),  // cannot_connect_now
            ("58030", true),  // io_error
            ("40002", false),  // transaction_integrity_constraint_violation
            ("22001", false),  // string_data_right_truncation
            ("22P02", false),  // invalid_text_representation
            ("23505", false),  // unique_violation
            ("23503", false),  // foreign_key_violation
            ("42601", false),  // syntax_error
            ("42P01", false),  // undefined_table
            ("25P02", false),  // in_failed_sql_transaction
            ("57P04", false),  // database_dropped
            ("XX000", false),  // internal_error
        ]
    )
    func serverErrorClassification(sqlState: String, transient: Bool) {
        let error = PostgresError(code: .server, sqlState: sqlState, message: "x")
        #expect(error.isTransient == transient)
    }

    @Test(
        "client-side codes: connection problems are transient, the rest permanent",
        arguments: [
            (PostgresError.Code.connectionFailed, true),
            (.connectionLost, true),
            (.timeout, true),
            (.protocolError, false),
            (.closed, false),
            (.tlsFailed, false),  // a certificate or a setting is wrong: only an operator can fix it
            (.server, false),  // without a SQLSTATE nothing says a retry would help
        ]
    )
    func codeClassification(code: PostgresError.Code, transient: Bool) {
        #expect(PostgresError(code: code, message: "x").isTransient == transient)
    }

    @Test("description is code, SQLSTATE and message, without the detail that may quote data")
    func description() {
        let error = PostgresError(
            code: .server,
            sqlState: "23505",
            message: "duplicate key value violates unique constraint \"t_pkey\"",
            detail: "Key (id)=(secret-row-value) already exists.",
            constraint: "t_pkey"
        )
        #expect(error.description == "server [23505] duplicate key value violates unique constraint \"t_pkey\"")
        #expect(!"\(error)".contains("secret-row-value"))
        #expect(PostgresError(code: .timeout, message: "too slow").description == "timeout too slow")
    }

    @Test("redaction removes every secret, longest first, and ignores empty ones")
    func redaction() {
        let conninfo = "postgresql://u:hunter2@db/x"
        let text = "failed for postgresql://u:hunter2@db/x; password hunter2 and again hunter2"
        let redacted = PostgresError.redact(text, secrets: ["", "hunter2", conninfo])
        #expect(!redacted.contains("hunter2"))
        #expect(!redacted.contains("postgresql://"))
        #expect(redacted == "failed for ********; password ******** and again ********")
    }

    @Test(
        "libpq's messages for a TLS failure at connect are told apart from outages",
        arguments: [
            // PostgreSQL 15's libpq, as it reports each (tested for real in PostgresTLSTests), after
            // "connection to server at "db" (10.0.0.1), port 5432 failed: ".
            ("SSL error: certificate verify failed", true),
            ("server certificate for \"localhost\" (and 1 other name) does not match host name \"db.example\"", true),
            ("root certificate file \"/etc/ca.crt\" does not exist", true),
            ("could not read root certificate file \"/etc/ca.crt\": no such file", true),
            ("server does not support SSL, but SSL was required", true),
            ("certificate present, but not private key file \"/k\"", true),
            ("private key file \"/k\" has group or world access; file must have permissions u=rw (0600) or less", true),
            ("SSL error: tlsv1 alert unknown ca", true),
            ("SSL error: tlsv13 alert certificate required", true),
            ("FATAL:  connection requires a valid client certificate", true),
            ("FATAL:  certificate authentication failed for user \"x\"", true),
            ("invalid sslmode value: \"verify\"", true),
            // Outages, and failures that are not TLS's.
            ("Connection refused", false),
            ("SSL SYSCALL error: EOF detected", false),
            ("FATAL:  the database system is starting up", false),
            ("FATAL:  password authentication failed for user \"x\"", false),
            ("could not translate host name \"db\" to address: Name or service not known", false),
        ]
    )
    func tlsProblems(message: String, isTLS: Bool) {
        let full = "connection to server at \"db\" (10.0.0.1), port 5432 failed: " + message
        #expect((PostgresError.tlsProblem(inConnectMessage: full) != nil) == isTLS)
    }

    @Test("quoted fragments of an unparsable conninfo are dropped")
    func quotedTextRemoval() {
        let message = "missing \"=\" after \"s3cret\" in connection info string"
        #expect(LibpqConnection.withoutQuotedText(message) == "missing \"…\" after \"…\" in connection info string")
    }
}
