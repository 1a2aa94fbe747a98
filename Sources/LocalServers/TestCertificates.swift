import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A test certificate authority and the certificates it issued, made with the `openssl` command in a
/// temporary directory: one set per process (``shared()``), removed when the process exits.
///
/// Certificates and the directory are readable by everyone, so that servers running as another user
/// (PostgreSQL as ``PostgresServer/serviceUser``) can read what they are given; keys are 0600 and
/// owned by the caller, and servers get copies of their own (see ``PostgresServer/TLS``).
public struct TestCertificates: Sendable {
    /// The names the server certificate is for (its subject alternative names).
    public static let serverNames = ["localhost", "127.0.0.1"]
    /// The common name of the client certificate: PostgreSQL's superuser, as `cert` authentication wants.
    public static let clientName = PostgresServer.superuser

    /// The directory holding every file.
    public let directory: String

    /// The CA certificate that issued the others: what clients are told to trust (`sslrootcert`).
    public var authority: String { directory + "/ca.crt" }
    /// A server certificate for ``serverNames``, issued by ``authority``.
    public var serverCertificate: String { directory + "/server.crt" }
    public var serverKey: String { directory + "/server.key" }
    /// A client certificate for ``clientName``, issued by ``authority``.
    public var clientCertificate: String { directory + "/client.crt" }
    public var clientKey: String { directory + "/client.key" }
    /// Another CA, which issued none of these: a client that trusts only it rejects the server.
    public var otherAuthority: String { directory + "/other-ca.crt" }

    /// This process's certificates, made on first use.
    public static func shared() async throws -> TestCertificates {
        let task = made.withLock { made in
            if let made { return made }
            let task = Task { try await make() }
            made = task
            return task
        }
        return try await task.value
    }

    private static let made = Mutex<Task<TestCertificates, Error>?>(nil)

    private static func make() async throws -> TestCertificates {
        guard let openssl = LocalProcess.find("openssl") else {
            throw LocalServerError("openssl is not installed: run `apt-get install -y openssl` (or scripts/test)")
        }
        let directory = try LocalProcess.makeTemporaryDirectory(prefix: "historian-tls")
        removedAtExit.withLock { $0 = directory }
        atexit { TestCertificates.remove() }
        let certificates = TestCertificates(directory: directory)
        // EC keys: quick to make, and every TLS stack in the tests speaks P-256.
        let newKey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        for (name, subject) in [("ca", "Historian test CA"), ("other-ca", "Historian test CA (not trusted)")] {
            try await LocalProcess.run(
                openssl,
                ["req", "-x509"] + newKey + [
                    "-keyout", "\(directory)/\(name).key", "-out", "\(directory)/\(name).crt", "-days", "30",
                    "-subj", "/CN=\(subject)",
                    "-addext", "basicConstraints=critical,CA:true",
                    "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                ]
            )
        }
        let alternativeNames = serverNames.map { $0.first!.isNumber ? "IP:\($0)" : "DNS:\($0)" }.joined(separator: ",")
        try await issue(
            openssl,
            newKey,
            directory: directory,
            name: "server",
            subject: serverNames[0],
            extensions: "subjectAltName=\(alternativeNames)\nbasicConstraints=CA:false\nextendedKeyUsage=serverAuth\n"
        )
        try await issue(
            openssl,
            newKey,
            directory: directory,
            name: "client",
            subject: clientName,
            extensions: "basicConstraints=CA:false\nextendedKeyUsage=clientAuth\n"
        )
        for name in ["ca", "other-ca", "server", "client"] {
            chmod("\(directory)/\(name).key", 0o600)
            chmod("\(directory)/\(name).crt", 0o644)
        }
        return certificates
    }

    /// A key and a certificate for `subject`, issued by the CA in `directory`.
    private static func issue(
        _ openssl: String,
        _ newKey: [String],
        directory: String,
        name: String,
        subject: String,
        extensions: String
    ) async throws {
        let request = "\(directory)/\(name).csr"
        let extensionsFile = "\(directory)/\(name).ext"
        try extensions.write(toFile: extensionsFile, atomically: false, encoding: .utf8)
        try await LocalProcess.run(
            openssl,
            ["req", "-new"] + newKey + [
                "-keyout", "\(directory)/\(name).key", "-out", request, "-subj", "/CN=\(subject)",
            ]
        )
        try await LocalProcess.run(
            openssl,
            [
                "x509", "-req", "-in", request, "-CA", "\(directory)/ca.crt", "-CAkey", "\(directory)/ca.key",
                "-CAcreateserial", "-out", "\(directory)/\(name).crt", "-days", "30", "-extfile", extensionsFile,
            ]
        )
        try? FileManager.default.removeItem(atPath: request)
        try? FileManager.default.removeItem(atPath: extensionsFile)
    }

    private static let removedAtExit = Mutex<String?>(nil)

    private static func remove() {
        if let directory = removedAtExit.withLock({ $0 }) {
            try? FileManager.default.removeItem(atPath: directory)
        }
    }
}
