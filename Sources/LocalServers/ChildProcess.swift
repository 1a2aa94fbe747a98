import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A child process started with `posix_spawn`, with an empty signal mask and default handlers.
///
/// Foundation's `Process` hands the child the spawning thread's signal mask, and Swift's worker
/// threads block SIGTERM; a server or daemon started that way never sees the SIGTERM meant to
/// stop it. This spawner resets both, so signals reach the child as they would from a shell.
public final class ChildProcess: Sendable {
    /// The child's process ID.
    public let pid: pid_t
    private let status: Mutex<Int32?>
    private let usage: Mutex<ResourceUsage?>

    /// Starts `executable` with `arguments`; output goes to the given files (or /dev/null).
    public init(
        executable: String,
        arguments: [String],
        environment: [String: String]? = nil,
        standardOutput: String? = nil,
        standardError: String? = nil
    ) throws {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, standardOutput ?? "/dev/null", O_WRONLY | O_CREAT | O_APPEND, 0o644)
        posix_spawn_file_actions_addopen(&actions, 2, standardError ?? "/dev/null", O_WRONLY | O_CREAT | O_APPEND, 0o644)

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attributes, &empty)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in [SIGTERM, SIGINT, SIGHUP, SIGPIPE, SIGQUIT, SIGUSR1, SIGUSR2, SIGCHLD] {
            sigaddset(&defaults, signal)
        }
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        let environmentStrings = (environment ?? ProcessInfo.processInfo.environment).map { "\($0.key)=\($0.value)" }
        let envp = environmentStrings.map { strdup($0) } + [nil]
        defer { envp.forEach { free($0) } }

        var child = pid_t()
        let result = posix_spawn(&child, executable, &actions, &attributes, argv, envp)
        guard result == 0 else {
            throw LocalServerError("cannot start \(executable): \(String(cString: strerror(result)))")
        }
        self.pid = child
        self.status = Mutex(nil)
        self.usage = Mutex(nil)
    }

    /// Sends a signal to the child.
    public func signal(_ signal: Int32) {
        if isRunning { kill(pid, signal) }
    }

    /// Whether the child has not exited yet (reaps it when it has).
    public var isRunning: Bool {
        status.withLock { status in
            if status != nil { return false }
            var raw: Int32 = 0
            var usage = rusage()
            let reaped = wait4(pid, &raw, WNOHANG, &usage)
            if reaped == pid {
                status = Self.decode(raw)
                self.usage.withLock { $0 = ResourceUsage(usage) }
                return false
            }
            if reaped < 0 {
                status = -1
                return false
            }
            return true
        }
    }

    /// The exit code, or 128 + the signal that ended it; `nil` while running.
    public var exitStatus: Int32? {
        _ = isRunning
        return status.withLock { $0 }
    }

    /// What the child used, as the kernel reports it when it exits; `nil` while it runs.
    public var resourceUsage: ResourceUsage? {
        _ = isRunning
        return usage.withLock { $0 }
    }

    /// The most memory the running child has had resident so far, in bytes (`VmHWM` in
    /// /proc); `nil` once it exited.
    public var peakResidentBytes: Int? {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
            let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
            let kibibytes = Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "")
        else { return nil }
        return kibibytes * 1024
    }

    /// Waits up to `timeout` for the child to exit; returns its status, or `nil` if it still runs.
    @discardableResult
    public func wait(timeout: Duration) async throws -> Int32? {
        let deadline = ContinuousClock.now + timeout
        while isRunning {
            if ContinuousClock.now > deadline { return nil }
            try await Task.sleep(for: .milliseconds(20))
        }
        return exitStatus
    }

    private static func decode(_ raw: Int32) -> Int32 {
        let signal = raw & 0x7F
        return signal == 0 ? (raw >> 8) & 0xFF : 128 + signal
    }
}

/// The CPU time an exited child used.
///
/// Not its peak memory: `ru_maxrss` of a child started with `posix_spawn` includes the parent's
/// resident set, shared until `exec`. Read `VmHWM` (``ChildProcess/peakResidentBytes``) instead.
public struct ResourceUsage: Sendable {
    public var userSeconds: Double
    public var systemSeconds: Double

    init(_ usage: rusage) {
        userSeconds = Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) / 1e6
        systemSeconds = Double(usage.ru_stime.tv_sec) + Double(usage.ru_stime.tv_usec) / 1e6
    }
}
