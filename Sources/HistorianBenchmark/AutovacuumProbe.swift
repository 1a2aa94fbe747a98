import PostgresClient

/// Watches PostgreSQL's autovacuum workers in the benchmark's database while a phase runs.
///
/// Autovacuum is part of any PostgreSQL that takes inserts, so the latency run includes it, as
/// production would. But it comes at times of its own: each database is visited once a
/// minute, and the 300,000 messages of a latency run on the drain's 1,000,000 pass the
/// `ANALYZE` threshold of `messages` (a tenth of the table) after 20 s and the insert-driven
/// `VACUUM`'s (a fifth) after 40 s. An `ANALYZE` of `messages` took 0.35 s of a core for 0.8 s
/// in one run. With the probe beside them, the figures say whether a stall in a window the
/// disk and the host spared came from there.
///
/// Every 100 ms the probe lists the autovacuum workers from `pg_stat_activity` over a
/// connection of its own. A worker's run is known by its process and start; it is reported
/// from the first time it was seen to the last, so a run shorter than 100 ms may show as 0 ms
/// or not at all.
struct AutovacuumProbe {
    static let interval = Duration.milliseconds(100)

    /// Each run as seen: what it did, and the first and last time (monotonic nanoseconds).
    private typealias Run = (what: String, first: UInt64, last: UInt64)

    private let task: Task<[String: Run], Never>

    init(connection: PostgresConnection) {
        task = Task {
            // Keyed by the worker's process and the run's start, as PostgreSQL reports them.
            var runs: [String: Run] = [:]
            while !Task.isCancelled {
                if let rows = try? await connection.query(
                    """
                    SELECT pid || ' ' || query_start AS run, query FROM pg_stat_activity
                    WHERE backend_type = 'autovacuum worker' AND datname = current_database() AND query <> ''
                    """
                ) {
                    let seen = monotonicNanoseconds()
                    for row in rows.rows.indices {
                        guard let key = rows[row, "run"], let query = rows[row, "query"] else { continue }
                        runs[key, default: (Self.name(query), seen, seen)].last = seen
                    }
                }
                try? await Task.sleep(for: Self.interval)
            }
            return runs
        }
    }

    /// `autovacuum: VACUUM ANALYZE public.conversations` → `VACUUM ANALYZE public.conversations`.
    private static func name(_ query: String) -> String {
        let prefix = "autovacuum: "
        return query.hasPrefix(prefix) ? String(query.dropFirst(prefix.count)) : query
    }

    /// Stops watching; the runs are in the order they were first seen, in seconds since
    /// `origin` (monotonic nanoseconds).
    func stop(origin: UInt64) async -> [AutovacuumEvent] {
        task.cancel()
        return await task.value.values
            .sorted { $0.first < $1.first }
            .map { run in
                AutovacuumEvent(
                    what: run.what,
                    at: (Double(run.first) - Double(origin)) / 1e9,
                    milliseconds: Double(run.last - run.first) / 1e6
                )
            }
    }

    /// Stops watching without waiting, as when a phase fails.
    func cancel() {
        task.cancel()
    }
}

/// An autovacuum run during a phase: what it did (`ANALYZE public.messages`), when it was first
/// seen, in seconds since the phase began (for a latency run, since its first message), and for
/// how long.
struct AutovacuumEvent: Codable {
    var what: String
    var at: Double
    var milliseconds: Double

    /// `ANALYZE public.messages at 21.3 s (0.8 s)`.
    var summary: String {
        "\(what) at \(String(format: "%.1f", at)) s (\(String(format: "%.1f", milliseconds / 1000)) s)"
    }

    enum CodingKeys: String, CodingKey {
        case what
        case at = "at_s"
        case milliseconds = "seen_ms"
    }
}
