extension PostgresError {
    /// A TLS problem found in the message of a failed connection attempt.
    struct TLSProblem: Equatable {
        /// What to check, for the problems whose libpq message leaves it unsaid; `nil` when the message says it.
        var hint: String?
    }

    /// libpq's messages for connection attempts that failed at TLS, and what each means for the operator.
    ///
    /// libpq reports its own failures (a certificate that does not verify, a missing file) as text only,
    /// with no SQLSTATE, and the server's refusals during the handshake reach the client as text too; so
    /// this table, the one place that reads them, matches libpq's English messages (PostgreSQL 15). A
    /// process whose locale translates libpq's messages gets `connectionFailed` instead, retried as an outage.
    private static let tlsMessages: [(marker: String, hint: String?)] = [
        // Client side: the server's certificate.
        (
            "certificate verify failed",
            "the server's certificate was not issued by a CA in sslrootcert, or it has expired or is not yet valid"
        ),
        ("does not match host name", "connect with a host name the server's certificate names, or fix the certificate"),
        ("root certificate file", nil),  // "… does not exist" and "could not read root certificate file …"
        ("server does not support SSL, but SSL was required", "enable ssl on the server, or change sslmode"),
        ("invalid sslmode value", nil),
        // Client side: the client's own certificate and key.
        ("certificate present, but not private key file", nil),
        ("could not open certificate file", nil),
        ("could not read certificate file", nil),
        ("could not load private key file", nil),
        ("private key file", nil),  // "… has group or world access", "… is not a regular file"
        // The server refused the handshake or the connection.
        ("alert unknown ca", "the server does not trust the CA that issued the client certificate (sslcert)"),
        ("alert bad certificate", "the server refused the client certificate (sslcert)"),
        ("alert certificate", "the server refused the client certificate (sslcert): missing, expired or revoked"),
        ("connection requires a valid client certificate", "set sslcert and sslkey"),
        ("certificate authentication failed for user", "the client certificate's CN must be the user name"),
    ]

    /// The TLS problem a failed connection attempt's message names, or `nil` when it names none (the
    /// server is down, the password is wrong, …). The one place that decides which connection failures
    /// are TLS failures, which need an operator, rather than outages, which retrying outlasts.
    static func tlsProblem(inConnectMessage message: String) -> TLSProblem? {
        guard let entry = tlsMessages.first(where: { message.contains($0.marker) }) else { return nil }
        return TLSProblem(hint: entry.hint)
    }
}
