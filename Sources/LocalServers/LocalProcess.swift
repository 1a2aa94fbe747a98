import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Why a local server could not be brought up.
public struct LocalServerError: Error, CustomStringConvertible, Sendable {
    public var description: String

    init(_ description: String) {
        self.description = description
    }
}

/// Small helpers shared by the server launchers: finding binaries, running commands, ports.
enum LocalProcess {
    /// Finds an executable on PATH or in the given extra directories.
    static func find(_ name: String, extraDirectories: [String] = []) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        let directories = path.split(separator: ":").map(String.init) + extraDirectories
        for directory in directories {
            let candidate = directory + "/" + name
            if FileManager.default.isExecutableFile(atPath: candidate) {
                return candidate
            }
        }
        return nil
    }

    /// PostgreSQL's versioned bin directories, newest first (Debian keeps them off PATH).
    static var postgresBinDirectories: [String] {
        let root = "/usr/lib/postgresql"
        let versions = (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []
        return versions.sorted { (Int($0) ?? 0) > (Int($1) ?? 0) }.map { "\(root)/\($0)/bin" }
    }

    /// Runs a command to completion and returns its combined output; throws on a non-zero exit.
    ///
    /// It waits with `Task.sleep`, so the thread is free meanwhile: `initdb` takes seconds, and
    /// a test run starts a cluster per suite at once. Blocked there, the pool's threads (two on
    /// two cores) held up every other test's continuations, a 200 ms timeout among them.
    ///
    /// Output goes through a temporary file, not a pipe: a pipe's write end can leak into a
    /// server started meanwhile on another thread, and the read would then never end.
    @discardableResult
    static func run(_ executable: String, _ arguments: [String], asUser user: String? = nil) async throws -> String {
        let started = try Started(executable, arguments, asUser: user)
        while started.child.isRunning { try await Task.sleep(for: .milliseconds(5)) }
        return try started.finish()
    }

    /// `run` for the few places that cannot wait asynchronously (inside a lock); blocks the thread.
    @discardableResult
    static func runBlocking(_ executable: String, _ arguments: [String], asUser user: String? = nil) throws -> String {
        let started = try Started(executable, arguments, asUser: user)
        while started.child.isRunning { usleep(5_000) }
        return try started.finish()
    }

    /// A command of `run`'s, started, with its output file.
    private struct Started {
        let executable: String
        let arguments: [String]
        let outputPath: String
        let child: ChildProcess

        init(_ executable: String, _ arguments: [String], asUser user: String?) throws {
            self.executable = executable
            self.arguments = arguments
            outputPath = try makeTemporaryDirectory(prefix: "historian-run") + "/output"
            var command = [executable] + arguments
            if let user {
                command = [find("runuser", extraDirectories: ["/usr/sbin", "/sbin"]) ?? "/usr/sbin/runuser", "-u", user, "--"]
                    + command
            }
            do {
                child = try ChildProcess(
                    executable: command[0],
                    arguments: Array(command.dropFirst()),
                    standardOutput: outputPath,
                    standardError: outputPath
                )
            } catch {
                try? FileManager.default.removeItem(atPath: (outputPath as NSString).deletingLastPathComponent)
                throw error
            }
        }

        /// The output, once the child has exited; throws on a non-zero exit.
        func finish() throws -> String {
            defer { removeOutput() }
            let status = child.exitStatus
            let text = (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? ""
            guard status == 0 else {
                let name = (executable as NSString).lastPathComponent
                throw LocalServerError("\(name) \(arguments.joined(separator: " ")) exited with \(status.map(String.init) ?? "?"): \(text)")
            }
            return text
        }

        private func removeOutput() {
            try? FileManager.default.removeItem(atPath: (outputPath as NSString).deletingLastPathComponent)
        }
    }

    /// Sends one inline command to a Redis server and returns the first reply line.
    static func redisInline(port: Int, _ command: String) -> String? {
        guard let fd = try? Loopback.connectedSocket(port: port) else { return nil }
        defer { close(fd) }
        var timeout = timeval(tv_sec: 2, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let line = Array((command + "\r\n").utf8)
        guard write(fd, line, line.count) == line.count else { return nil }
        var buffer = [UInt8](repeating: 0, count: 512)
        let count = read(fd, &buffer, buffer.count)
        guard count > 0 else { return nil }
        return String(decoding: buffer[0..<count], as: UTF8.self)
            .split(whereSeparator: \.isNewline).first.map(String.init)
    }

    /// Makes a fresh temporary directory that other users may enter.
    static func makeTemporaryDirectory(prefix: String) throws -> String {
        var template = Array("/tmp/\(prefix)-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else {
            throw LocalServerError("mkdtemp failed: errno \(errno)")
        }
        let path = String(cString: made)
        chmod(path, 0o755)
        return path
    }

    /// Polls `condition` until it holds or `timeout` passes.
    static func wait(for timeout: Duration, _ what: String, until condition: () -> Bool) async throws {
        let deadline = ContinuousClock.now + timeout
        while !condition() {
            if ContinuousClock.now > deadline {
                throw LocalServerError("timed out after \(timeout) waiting for \(what)")
            }
            try await Task.sleep(for: .milliseconds(50))
        }
    }
}

/// TCP sockets on 127.0.0.1, for finding free ports and for tests that need a bare listener.
public enum Loopback {
    /// A loopback TCP port that nothing listens on right now.
    public static func freePort() throws -> Int {
        let fd = try boundSocket()
        defer { close(fd) }
        return try port(of: fd)
    }

    /// A TCP socket bound to a free loopback port; the caller closes it.
    public static func boundSocket() throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw LocalServerError("socket() failed: errno \(errno)") }
        let bound = withAddress(port: 0) { bind(fd, $0, $1) }
        guard bound == 0 else {
            close(fd)
            throw LocalServerError("bind() failed: errno \(errno)")
        }
        return fd
    }

    /// The local port a socket is bound to.
    public static func port(of fd: Int32) throws -> Int {
        var address = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let named = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard named == 0 else { throw LocalServerError("getsockname() failed: errno \(errno)") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    /// A socket connected to the loopback port; the caller closes it.
    public static func connectedSocket(port: Int) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw LocalServerError("socket() failed: errno \(errno)") }
        guard withAddress(port: port, { connect(fd, $0, $1) }) == 0 else {
            close(fd)
            throw LocalServerError("connect() failed: errno \(errno)")
        }
        return fd
    }

    private static func withAddress(port: Int, _ body: (UnsafePointer<sockaddr>, socklen_t) -> Int32) -> Int32 {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
    }
}
