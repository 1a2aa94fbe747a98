import Foundation
import LocalServers

/// Extra drains, each like the main one (the same messages, freshly prefilled into an empty
/// Redis, and a new database): one with the daemon's default settings, without `--workers`, and
/// one for each worker count asked for. Their rates show whether Historian is fast by default:
/// whether the default drains about as fast as the best `--workers` of the same run.
struct WorkersSweep {
    let servers: BenchmarkServers
    let workload: Workload
    let messages: [WorkloadMessage]
    let executable: String
    /// The daemon's arguments but `--workers`, the same for every drain.
    let arguments: [String]
    let workerCounts: [Int]

    func run() async throws -> SweepResult {
        var result = SweepResult()
        result.defaults = try await drain(workers: nil)
        for count in workerCounts {
            result.drains.append(try await drain(workers: count))
        }
        return result
    }

    private func drain(workers: Int?) async throws -> DrainResult {
        let database = workers.map { "sweep_workers_\($0)" } ?? "sweep_default"
        let phase = DrainPhase(
            servers: servers,
            workload: workload,
            messages: messages,
            executable: executable,
            arguments: (workers.map { ["--workers", String($0)] } ?? []) + arguments,
            workers: workers,
            database: database,
            label: workers.map { "sweep, --workers \($0)" } ?? "sweep, default settings"
        )
        return try await phase.runDroppingDatabase()
    }
}

struct SweepResult: Encodable {
    /// The drain with the daemon's default settings (no `--workers`).
    var defaults: DrainResult?
    /// One drain per worker count, in the order they ran.
    var drains: [DrainResult] = []

    enum CodingKeys: String, CodingKey {
        case defaults = "default_settings"
        case drains = "by_workers"
    }
}
