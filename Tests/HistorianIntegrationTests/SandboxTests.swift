import Foundation
import Historian
import LocalServers
import RedisClient
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The sandbox of `systemd/historian.service` against what the real binary does. systemd is not
/// the init here, so the test traces `historian run` with strace through a whole working life
/// (start, READY=1, a load, an archive pass, scrapes, SIGTERM) and checks every address family,
/// system call, write, memory mapping and file it used against the unit's settings.
@Suite(.serialized)
struct SandboxTests {
    static let unitPath = SystemdUnit.directory + "/historian.service"

    @Test("both units have one sandbox; the archive directory is writable under it")
    func unitsAgree() throws {
        let unit = try SystemdUnit(path: Self.unitPath)
        let template = try SystemdUnit(path: SystemdUnit.directory + "/historian@.service")
        let instanceOnly: Set<String> = ["ExecStart", "EnvironmentFile"]
        #expect(unit.service.filter { !instanceOnly.contains($0.key) } == template.service.filter { !instanceOnly.contains($0.key) })
        #expect(template.service["ExecStart"] == ["/usr/bin/historian run --instance %i"])
        #expect(unit.service["Type"] == ["notify"] && unit.service["NotifyAccess"] == ["main"])
        #expect(unit.service["WatchdogSec"]?.isEmpty == false)
        // The default archive_dir, and the example config's, lie below a writable directory.
        let example = try String(contentsOfFile: SystemdUnit.directory + "/../deploy/config.yaml", encoding: .utf8)
        let configured = try #require(
            example.split(separator: "\n").first { $0.hasPrefix("archive_dir:") }?
                .dropFirst("archive_dir:".count).trimmingCharacters(in: .whitespaces)
        )
        let defaultDirectory = try #require(HistorianConfiguration.keys.first { $0.name == "archive_dir" }).defaultValue
        for directory in [defaultDirectory, configured] {
            #expect(unit.writablePaths.contains { directory.hasPrefix($0 + "/") }, "\(directory) in \(unit.writablePaths)")
        }
        // The credentials are looked up by name (a missing one is not fatal) and are the ones
        // Historian reads from $CREDENTIALS_DIRECTORY.
        let credentials = (unit.service["LoadCredential"] ?? []).map { $0.split(separator: ":").first.map(String.init) ?? "" }
        #expect(Set(credentials) == ["redis-password", "postgres-password", "api-token"])
        #expect((unit.service["LoadCredential"] ?? []).allSatisfy { !$0.contains(":/") })
    }

    @Test("historian run under strace uses only what the unit's sandbox allows")
    func sandboxAllowsWhatHistorianDoes() async throws {
        let strace = try #require(
            ["/usr/bin/strace", "/bin/strace"].first { FileManager.default.isExecutableFile(atPath: $0) },
            "strace is not installed: apt-get install -y strace (scripts/test installs it)"
        )
        let unit = try SystemdUnit(path: Self.unitPath)
        try await TestEnvironment.with { environment in
            let receiver = try NotifyReceiver()
            defer { receiver.stop() }
            let port = try Loopback.freePort()
            var variables = environment.historianEnvironment.merging(unit.environment) { _, unit in unit }
            variables["NOTIFY_SOCKET"] = receiver.name
            variables["WATCHDOG_USEC"] = "10000000"
            variables["HISTORIAN_METRICS_ADDRESS"] = "127.0.0.1:\(port)"
            variables["HISTORIAN_ARCHIVE_EVERY"] = "1s"
            variables["HISTORIAN_LOG_LEVEL"] = "debug"
            let directory = try TemporaryDirectory("historian-strace")
            defer { directory.remove() }
            let log = directory.path + "/strace.log"
            // As an unprivileged user, as the unit runs it (User=historian), when the test can.
            let user = getuid() == 0 ? ["-u", PostgresServer.serviceUser] : []
            let traced = try ChildProcess(
                executable: strace,
                arguments: ["-f", "-y", "-s", "512", "-qq", "-o", log] + user + [HistorianBinary.path, "run", "--workers", "2"],
                environment: variables,
                standardError: directory.path + "/stderr"
            )
            defer { traced.signal(SIGKILL) }
            try await eventually("READY=1", timeout: .seconds(120)) { !receiver.times(of: "READY=1").isEmpty }

            // Work: messages stored, then archived by the schedule, and the endpoints scraped.
            let redis = try await environment.redis()
            defer { redis.close() }
            let messages = Producer.workload(count: 300, conversations: 10, seed: 71)
            try await Producer.append(messages, redis: redis)
            try await eventually("the messages stored", timeout: .seconds(60)) {
                try await environment.scalar("SELECT count(*) FROM messages") == messages.count
            }
            _ = try await environment.rows("UPDATE conversations SET updated_at = now() - interval '40 days'")
            try await eventually("the conversations archived", timeout: .seconds(60)) {
                try await environment.scalar("SELECT count(*) FROM archived_conversations") == 10
            }
            for path in ["/metrics", "/healthz", "/readyz"] {
                #expect(try LoopbackHTTP.get(port: port, path: path).status == 200, "\(path)")
            }
            let historian = try #require(childProcesses(of: traced.pid).first)
            kill(historian, SIGTERM)
            #expect(try await traced.wait(timeout: .seconds(60)) == 0)
            let errors = (try? String(contentsOfFile: directory.path + "/stderr", encoding: .utf8)) ?? ""

            let trace = try StraceLog(path: log)
            print("sandbox: \(trace.calls.count) calls of \(trace.systemCalls.count) kinds in \(trace.pids.count) threads")
            #expect(trace.calls.count > 1000, "the trace is too short to mean anything")

            // RestrictAddressFamilies=
            let families = Set(unit.words("RestrictAddressFamilies"))
            #expect(trace.socketFamilies.contains("AF_UNIX") && trace.socketFamilies.contains("AF_INET"))
            #expect(trace.socketFamilies.isSubset(of: families), "\(trace.socketFamilies) not all in \(families)")

            // SystemCallFilter=
            let allowed = try unit.allowedSystemCalls()
            let refused = trace.systemCalls.subtracting(allowed).subtracting(Self.beforeTheFilter)
            #expect(refused.subtracting(Self.refusalsIgnored).isEmpty, "system calls the filter refuses: \(refused.sorted())")
            if getuid() == 0 {
                // Refused already, by the kernel, for the unprivileged user: the run above lived with it.
                for call in refused.intersection(Self.refusalsIgnored) {
                    #expect(trace.calls.contains { $0.name == call && !$0.succeeded }, "\(call) never failed in the run")
                }
            }

            // MemoryDenyWriteExecute=yes
            #expect(trace.writableExecutableMappings.isEmpty, "\(trace.writableExecutableMappings.prefix(3))")

            // ProtectSystem=strict with StateDirectory=: writes only below the archive directory
            // (which stands for /var/lib/historian/archive here) or the private /tmp.
            // Threads name themselves through /proc/thread-self/comm, which stays writable.
            let writable = [environment.archiveDir, "/tmp", "/var/tmp", "/dev/null", "/proc/thread-self", "/proc/self"]
            let outside = trace.writtenPaths.filter { path in !writable.contains { path == $0 || path.hasPrefix($0 + "/") } }
            #expect(outside.isEmpty, "writes outside the writable paths: \(Set(outside).sorted())")
            #expect(trace.writtenPaths.contains { $0.hasPrefix(environment.archiveDir + "/") && $0.contains(".jsonl.gz") })

            // ProtectHome=, ProcSubset=pid, PrivateDevices=: nothing it reads is hidden from it.
            let hidden = trace.touchedPaths.filter { Self.hiddenInSandbox($0, ownThreads: trace.pids) }
            #expect(hidden.isEmpty, "paths the sandbox hides: \(Set(hidden).sorted())")

            // The malloc tuning still applies with the unit's environment.
            let tuning = try #require(errors.split(separator: "\n").first { $0.contains("malloc tuning") }, "\(errors.suffix(2000))")
            #expect(tuning.contains("arena_max=2") && !tuning.contains("refused") && !tuning.contains("left to the environment"))
        }
    }

    /// strace also shows the `execve` that starts the binary, which systemd allows implicitly.
    static let beforeTheFilter: Set<String> = ["execve"]

    /// Calls the filter refuses (with EPERM, `SystemCallErrorNumber=`) whose refusal Historian
    /// already meets without a sandbox: libdispatch sets its worker threads' nice value and
    /// ignores failure, and as an unprivileged user its `setpriority(…, -4)` is refused by the
    /// kernel (EACCES) anyway, as the traced run shows. Allowing it would cost the unit 0.2 of
    /// exposure.
    static let refusalsIgnored: Set<String> = ["setpriority"]

    /// Whether the sandbox hides `path`: home directories (ProtectHome=yes), other processes and
    /// the kernel's files in /proc (ProcSubset=pid), devices but the basic ones (PrivateDevices=yes).
    static func hiddenInSandbox(_ path: String, ownThreads: Set<Int>) -> Bool {
        if ["/home", "/root", "/run/user"].contains(where: { path == $0 || path.hasPrefix($0 + "/") }) { return true }
        if path.hasPrefix("/proc/") {
            let first = path.dropFirst("/proc/".count).split(separator: "/").first.map(String.init) ?? ""
            if first == "self" || first == "thread-self" { return false }
            return Int(first).map { !ownThreads.contains($0) } ?? true
        }
        if path.hasPrefix("/dev/") {
            let visible = ["/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty"]
            return !visible.contains(path) && !path.hasPrefix("/dev/shm/")
        }
        return false
    }
}
