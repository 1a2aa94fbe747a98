import Foundation
import LocalServers

#if canImport(Glibc)
import Glibc
#endif

/// stunnel in client mode, run with `deploy/stunnel-redis.conf`, the example operators copy, with only
/// the values of its settings changed: a plain port on loopback for Historian, TLS to a Redis started
/// with ``RedisServer/start(appendOnly:tls:)``, its certificate checked against `authority`.
final class RedisTunnel: Sendable {
    /// The loopback port Historian connects to, in plain text.
    let port: Int
    private let child: ChildProcess
    private let directory: TemporaryDirectory

    /// `redis://127.0.0.1:PORT`: what `redis_url` says with the tunnel.
    var url: String { "redis://127.0.0.1:\(port)" }
    /// What stunnel logged (it runs in the foreground, logging to standard error).
    var log: String { (try? String(contentsOfFile: directory.path + "/stunnel.log", encoding: .utf8)) ?? "" }

    private init(port: Int, child: ChildProcess, directory: TemporaryDirectory) {
        self.port = port
        self.child = child
        self.directory = directory
    }

    static let examplePath = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("deploy/stunnel-redis.conf").path

    /// Runs `body` with a tunnel to `redis` that trusts `authority`, and stops the tunnel afterwards.
    static func with<T>(
        to redis: RedisServer,
        authority: String,
        _ body: (RedisTunnel) async throws -> T
    ) async throws -> T {
        let tunnel = try await start(to: redis, authority: authority)
        defer {
            tunnel.stop()
            tunnel.directory.remove()
        }
        return try await body(tunnel)
    }

    private static func start(to redis: RedisServer, authority: String) async throws -> RedisTunnel {
        guard let stunnel = findProgram("stunnel4") ?? findProgram("stunnel") else {
            throw TunnelError("stunnel is not installed: run `apt-get install -y stunnel4` (or scripts/test)")
        }
        guard let certificates = redis.tls else { throw TunnelError("the Redis server does not speak TLS") }
        let example = try String(contentsOfFile: examplePath, encoding: .utf8)
        let directory = try TemporaryDirectory("historian-stunnel")
        var lastLog = ""
        // A port found free can be taken before stunnel binds it: then try another.
        for _ in 0..<5 {
            let port = try Loopback.freePort()
            let values = [
                "accept": "127.0.0.1:\(port)",
                "connect": "127.0.0.1:\(redis.port)",
                "CAfile": authority,
                "checkHost": TestCertificates.serverNames[0],
                "cert": certificates.clientCertificate,
                "key": certificates.clientKey,
            ]
            // Dropping root needs root; the example's user stays for the tests that run as root.
            let removing: Set<String> = getuid() == 0 ? [] : ["setuid", "setgid"]
            let configuration = try render(example, setting: values, removing: removing)
            let configurationPath = directory.path + "/stunnel.conf"
            let logPath = directory.path + "/stunnel.log"
            try configuration.write(toFile: configurationPath, atomically: true, encoding: .utf8)
            try? FileManager.default.removeItem(atPath: logPath)
            let child = try ChildProcess(
                executable: stunnel,
                arguments: [configurationPath],
                environment: ChildEnvironment.clean([:]),
                standardOutput: logPath,
                standardError: logPath
            )
            let tunnel = RedisTunnel(port: port, child: child, directory: directory)
            let deadline = ContinuousClock.now + .seconds(20)
            while child.isRunning, ContinuousClock.now < deadline {
                if let socket = try? Loopback.connectedSocket(port: port) {
                    close(socket)
                    return tunnel
                }
                try await Task.sleep(for: .milliseconds(50))
            }
            lastLog = tunnel.log
            tunnel.stop()
        }
        directory.remove()
        throw TunnelError("stunnel did not start: \(lastLog.suffix(2000))")
    }

    /// `example` with the value of each setting in `values` replaced and the settings in `removing`
    /// left out; throws if the example lacks one of `values`, so it cannot drift from what is tested.
    static func render(_ example: String, setting values: [String: String], removing: Set<String>) throws -> String {
        var found: Set<String> = []
        var lines: [String] = []
        for line in example.split(separator: "\n", omittingEmptySubsequences: false) {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            guard !trimmed.hasPrefix(";"), !trimmed.hasPrefix("#"), let equals = trimmed.firstIndex(of: "=") else {
                lines.append(String(line))
                continue
            }
            let key = trimmed[..<equals].trimmingCharacters(in: .whitespaces)
            if removing.contains(key) { continue }
            if let value = values[key] {
                found.insert(key)
                lines.append("\(key) = \(value)")
            } else {
                lines.append(String(line))
            }
        }
        let missing = Set(values.keys).subtracting(found)
        guard missing.isEmpty else {
            throw TunnelError("deploy/stunnel-redis.conf has no \(missing.sorted().joined(separator: ", ")) setting")
        }
        return lines.joined(separator: "\n")
    }

    /// Stops stunnel (SIGTERM, then SIGKILL after 5 s) and waits for it to exit.
    func stop() {
        child.signal(SIGTERM)
        var tries = 0
        while child.isRunning, tries < 500 {
            usleep(10_000)
            tries += 1
        }
        child.signal(SIGKILL)
        while child.isRunning { usleep(10_000) }
    }

    /// An executable on `PATH`, or in the directories Debian keeps system programs in.
    private static func findProgram(_ name: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
        let directories = path.split(separator: ":").map(String.init) + ["/usr/bin", "/usr/sbin", "/bin", "/sbin"]
        return directories.map { $0 + "/" + name }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }
}

struct TunnelError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
