import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The `historian` processes a test started; `killAll` SIGKILLs and reaps whatever still runs,
/// so that no process outlives its test, whatever failed.
final class Daemons: Sendable {
    private let processes = Mutex<[HistorianProcess]>([])

    func start(_ arguments: [String], _ environment: TestEnvironment) throws -> HistorianProcess {
        try start(arguments, variables: environment.historianEnvironment)
    }

    /// Starts `historian` with exactly these environment variables.
    func start(_ arguments: [String], variables: [String: String]) throws -> HistorianProcess {
        let process = try HistorianProcess(arguments, environment: variables)
        processes.withLock { $0.append(process) }
        return process
    }

    func killAll() {
        for process in processes.withLock({ $0 }) {
            process.signal(SIGKILL)
            var tries = 0
            while process.isRunning, tries < 500 {
                usleep(10_000)
                tries += 1
            }
        }
    }

    /// Runs `body` with a fresh set of processes. If it throws, prints the end of each one's
    /// standard error to explain the failure; either way, kills whatever still runs.
    static func with<T>(_ body: (Daemons) async throws -> T) async throws -> T {
        let daemons = Daemons()
        defer { daemons.killAll() }
        do {
            return try await body(daemons)
        } catch {
            daemons.printErrors()
            throw error
        }
    }

    /// Prints the end of each process's standard error, to explain a failure.
    private func printErrors() {
        for process in processes.withLock({ $0 }) {
            let errors = process.errorOutput
            guard !errors.isEmpty else { continue }
            print("--- historian \(process.arguments.joined(separator: " ")) (stderr, last 3000 bytes):")
            print(String(errors.suffix(3000)))
        }
    }
}

/// The processes whose parent is `parent`, from /proc.
func childProcesses(of parent: pid_t) -> [pid_t] {
    let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
    return entries.compactMap { entry -> pid_t? in
        guard let pid = pid_t(entry),
            let stat = try? String(contentsOfFile: "/proc/\(entry)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return nil }
        // After "pid (comm)": the state, then the parent's pid.
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        return fields.count > 1 && pid_t(fields[1]) == parent ? pid : nil
    }
}

/// A temporary directory of a test's own.
struct TemporaryDirectory {
    let path: String

    init(_ prefix: String) throws {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    func remove() {
        try? FileManager.default.removeItem(atPath: path)
    }
}
