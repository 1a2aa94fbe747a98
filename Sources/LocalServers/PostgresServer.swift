import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A throwaway PostgreSQL cluster on a free loopback port, in a temporary directory.
///
/// PostgreSQL refuses to run as root, so when the caller is root the cluster runs as the
/// unprivileged system user `historian-test`, created on first use.
public final class PostgresServer: Sendable {
    /// The user the server runs as when the caller is root.
    public static let serviceUser = "historian-test"
    /// The superuser of the cluster (trust authentication on loopback).
    public static let superuser = "historian"

    /// The TCP port it listens on, on 127.0.0.1.
    public let port: Int
    /// The directory holding the cluster, its socket and its log.
    public let directory: String
    /// How the cluster takes TLS connections, if at all.
    public let tls: TLS?

    private let binDirectory: String
    private let runAs: String?
    private let running: Mutex<Bool>

    private var dataDirectory: String { directory + "/data" }

    private init(port: Int, directory: String, tls: TLS?, binDirectory: String, runAs: String?) {
        self.port = port
        self.directory = directory
        self.tls = tls
        self.binDirectory = binDirectory
        self.runAs = runAs
        self.running = Mutex(false)
    }

    /// The postmaster's process ID, from `postmaster.pid`, while the server runs.
    public var postmasterPID: pid_t? {
        guard let text = try? String(contentsOfFile: dataDirectory + "/postmaster.pid", encoding: .utf8),
            let line = text.split(separator: "\n").first
        else { return nil }
        return pid_t(line)
    }

    /// A libpq URI for `database` as the cluster's superuser. With ``tls`` and `tlsSettings`, it
    /// connects with `sslmode=verify-full` and the test CA, and the client certificate when the
    /// cluster asks for one.
    public func url(database: String = "postgres", tlsSettings: Bool = true) -> String {
        let base = "postgresql://\(Self.superuser)@127.0.0.1:\(port)/\(database)"
        guard tlsSettings, let tls else { return base }
        var parameters = ["sslmode=verify-full", "sslrootcert=\(tls.certificates.authority)"]
        if tls.clientCertificates {
            parameters += ["sslcert=\(tls.certificates.clientCertificate)", "sslkey=\(tls.certificates.clientKey)"]
        }
        return base + "?" + parameters.joined(separator: "&")
    }

    /// How a cluster takes TLS connections: with the server certificate of `certificates`, and only
    /// those (pg_hba.conf rejects every connection over TCP without TLS).
    public struct TLS: Sendable {
        /// Where the server's certificate and key, and the CA it trusts for client certificates, come from.
        public var certificates: TestCertificates
        /// Whether connections over TCP must present a client certificate issued by the test CA, for
        /// the user its common name names (`cert` authentication); otherwise they are trusted.
        public var clientCertificates: Bool

        public init(_ certificates: TestCertificates, clientCertificates: Bool = false) {
            self.certificates = certificates
            self.clientCertificates = clientCertificates
        }
    }

    /// Creates a cluster (a copy of one `initdb` made, see `template`) and starts it; `settings`
    /// are extra `-c name=value` options. With `tls`, the cluster takes TCP connections over TLS
    /// only, with copies of the certificates in its directory.
    public static func start(settings: [String: String] = [:], tls: TLS? = nil) async throws -> PostgresServer {
        guard let initdb = LocalProcess.find("initdb", extraDirectories: LocalProcess.postgresBinDirectories)
        else {
            throw LocalServerError(
                "PostgreSQL's initdb is not installed: run `apt-get install -y postgresql` (or scripts/test)"
            )
        }
        let binDirectory = URL(fileURLWithPath: initdb).resolvingSymlinksInPath().deletingLastPathComponent().path
        let runAs = getuid() == 0 ? try ensureServiceUser() : nil
        let directory = try LocalProcess.makeTemporaryDirectory(prefix: "historian-pg")
        if let runAs {
            try await LocalProcess.run(LocalProcess.find("chown") ?? "/bin/chown", [runAs, directory])
        }
        let template = try await templateDataDirectory(binDirectory: binDirectory, runAs: runAs)
        // -a keeps the owner (the service user) and the 0700 mode PostgreSQL insists on.
        try await LocalProcess.run(LocalProcess.find("cp") ?? "/bin/cp", ["-a", template, directory + "/data"])
        var options = [
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": directory,
            "fsync": "off",
            "full_page_writes": "off",
            "max_connections": "200",
        ]
        if let tls {
            options.merge(try await installTLS(tls, directory: directory, runAs: runAs)) { _, new in new }
        }
        options.merge(settings) { _, new in new }
        let config = options.sorted { $0.key < $1.key }.map { "\($0.key) = '\($0.value)'" }.joined(separator: "\n")
        let configPath = directory + "/data/postgresql.auto.conf"
        let existing = (try? String(contentsOfFile: configPath, encoding: .utf8)) ?? ""
        try (existing + "\n" + config + "\n").write(toFile: configPath, atomically: false, encoding: .utf8)

        var lastError: Error?
        for _ in 0..<5 {
            let server = PostgresServer(
                port: try Loopback.freePort(),
                directory: directory,
                tls: tls,
                binDirectory: binDirectory,
                runAs: runAs
            )
            do {
                try await server.start()
                return server
            } catch {
                lastError = error
            }
        }
        throw lastError ?? LocalServerError("PostgreSQL did not start")
    }

    /// Starts the cluster (again), on the same port and with the same data.
    public func start() async throws {
        try await LocalProcess.run(
            binDirectory + "/pg_ctl",
            ["-D", dataDirectory, "-l", directory + "/postgres.log", "-o", "-p \(port)", "-w", "-t", "60", "start"],
            asUser: runAs
        )
        running.withLock { $0 = true }
    }

    /// Stops the cluster; `immediate` is `pg_ctl stop -m immediate`, a crash without shutdown.
    public func stop(immediate: Bool = false) async throws {
        guard running.withLock({ $0 }) else { return }
        try await LocalProcess.run(
            binDirectory + "/pg_ctl",
            ["-D", dataDirectory, "-m", immediate ? "immediate" : "fast", "-w", "-t", "60", "stop"],
            asUser: runAs
        )
        running.withLock { $0 = false }
    }

    /// Creates a database owned by the superuser.
    public func createDatabase(_ name: String) async throws {
        // The maintenance database as a URI: host, port, user and any TLS settings in one.
        try await LocalProcess.run(binDirectory + "/createdb", ["--maintenance-db", url(database: "postgres"), name])
    }

    /// Runs SQL through `psql` and returns its unaligned, tuples-only output.
    @discardableResult
    public func psql(_ sql: String, database: String = "postgres") async throws -> String {
        let psql = LocalProcess.find("psql", extraDirectories: [binDirectory]) ?? binDirectory + "/psql"
        return try await LocalProcess.run(
            psql,
            ["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", url(database: database), "-c", sql]
        )
    }

    /// Runs a file of SQL through `psql` (with `ON_ERROR_STOP`, psql's variables such as
    /// `:DBNAME` set) and returns its output.
    @discardableResult
    public func psql(file: String, database: String = "postgres") async throws -> String {
        let psql = LocalProcess.find("psql", extraDirectories: [binDirectory]) ?? binDirectory + "/psql"
        return try await LocalProcess.run(
            psql,
            ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url(database: database), "-f", file]
        )
    }

    /// Stops the cluster and removes its directory.
    public func destroy() async throws {
        try? await stop(immediate: true)
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// Copies the server's certificate, key and CA into `directory/tls` for the server's user (PostgreSQL
    /// refuses a key others can read), lets TCP connections in over TLS only, and returns the settings
    /// that turn TLS on.
    private static func installTLS(_ tls: TLS, directory: String, runAs: String?) async throws -> [String: String] {
        let tlsDirectory = directory + "/tls"
        try FileManager.default.createDirectory(atPath: tlsDirectory, withIntermediateDirectories: false)
        let certificates = tls.certificates
        let files = [
            (certificates.serverCertificate, "server.crt", 0o644),
            (certificates.serverKey, "server.key", 0o600),
            (certificates.authority, "ca.crt", 0o644),
        ]
        for (source, name, mode) in files {
            try FileManager.default.copyItem(atPath: source, toPath: "\(tlsDirectory)/\(name)")
            chmod("\(tlsDirectory)/\(name)", mode_t(mode))
        }
        if let runAs {
            try await LocalProcess.run(LocalProcess.find("chown") ?? "/bin/chown", ["-R", runAs, tlsDirectory])
        }
        // Over the Unix socket, trust: the test support's own psql and createdb may use it. Over TCP,
        // TLS or nothing, so a connection that works was encrypted.
        let method = tls.clientCertificates ? "cert" : "trust"
        let hba = "local all all trust\nhostnossl all all all reject\nhostssl all all all \(method)\n"
        // Written in place: the file keeps the owner that the copy of the template gave it.
        try hba.write(toFile: directory + "/data/pg_hba.conf", atomically: false, encoding: .utf8)
        return [
            "ssl": "on",
            "ssl_cert_file": tlsDirectory + "/server.crt",
            "ssl_key_file": tlsDirectory + "/server.key",
            "ssl_ca_file": tlsDirectory + "/ca.crt",
        ]
    }

    /// The data directory `initdb` made for this process's first cluster, left unstarted; later
    /// clusters are copies of it, which costs a file copy instead of initdb's bootstrap runs of
    /// the server (tests start a cluster each). Removed when the process exits.
    private static let template = Mutex<(task: Task<String, Error>, directory: String)?>(nil)

    private static func templateDataDirectory(binDirectory: String, runAs: String?) async throws -> String {
        let task = try template.withLock { current in
            if let current { return current.task }
            let directory = try LocalProcess.makeTemporaryDirectory(prefix: "historian-pg-template")
            let made = Task {
                if let runAs {
                    try await LocalProcess.run(LocalProcess.find("chown") ?? "/bin/chown", [runAs, directory])
                }
                try await LocalProcess.run(
                    binDirectory + "/initdb",
                    ["-D", directory + "/data", "-A", "trust", "-U", superuser, "-E", "UTF8", "--locale=C", "-N"],
                    asUser: runAs
                )
                return directory + "/data"
            }
            current = (made, directory)
            atexit { PostgresServer.removeTemplate() }
            return made
        }
        return try await task.value
    }

    private static func removeTemplate() {
        if let directory = template.withLock({ $0?.directory }) {
            try? FileManager.default.removeItem(atPath: directory)
        }
    }

    private static let userLock = Mutex(false)

    private static func ensureServiceUser() throws -> String {
        try userLock.withLock { created in
            if !created, getpwnam(serviceUser) == nil {
                let useradd = LocalProcess.find("useradd", extraDirectories: ["/usr/sbin", "/sbin"]) ?? "/usr/sbin/useradd"
                try LocalProcess.runBlocking(
                    useradd,
                    ["--system", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", serviceUser]
                )
            }
            created = true
            return serviceUser
        }
    }
}
