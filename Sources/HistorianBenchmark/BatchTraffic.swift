import Foundation

/// What the daemon's ingest workers sent to the servers over a number of batches, from its own
/// counters (docs/contract.md, "Metrics"): PostgreSQL statements and Redis commands, and the
/// round trips they took.
struct BatchTraffic: Encodable, Equatable {
    var batches = 0
    var postgresStatements = 0
    var postgresRoundTrips = 0
    var redisCommands = 0
    var redisRoundTrips = 0

    /// The counters' names in the daemon's metrics.
    static let counters = [
        "historian_batches_total", "historian_postgres_statements_total", "historian_postgres_round_trips_total",
        "historian_redis_commands_total", "historian_redis_round_trips_total",
    ]

    init(batches: Int, postgresStatements: Int, postgresRoundTrips: Int, redisCommands: Int, redisRoundTrips: Int) {
        self.batches = batches
        self.postgresStatements = postgresStatements
        self.postgresRoundTrips = postgresRoundTrips
        self.redisCommands = redisCommands
        self.redisRoundTrips = redisRoundTrips
    }

    /// Reads the counters from the Prometheus text that `/metrics` serves and `--metrics-file` writes.
    init(exposition: String) throws {
        var values: [String: Int] = [:]
        for line in exposition.split(separator: "\n") where !line.hasPrefix("#") {
            let parts = line.split(separator: " ")
            guard parts.count == 2, Self.counters.contains(String(parts[0])), let value = Double(parts[1]) else { continue }
            values[String(parts[0])] = Int(value)
        }
        let missing = Self.counters.filter { values[$0] == nil }
        guard missing.isEmpty else {
            throw BenchmarkError("the daemon's metrics have no \(missing.joined(separator: ", "))")
        }
        self.init(
            batches: values["historian_batches_total"]!,
            postgresStatements: values["historian_postgres_statements_total"]!,
            postgresRoundTrips: values["historian_postgres_round_trips_total"]!,
            redisCommands: values["historian_redis_commands_total"]!,
            redisRoundTrips: values["historian_redis_round_trips_total"]!
        )
    }

    /// What was sent between two readings of one process's counters.
    static func - (after: BatchTraffic, before: BatchTraffic) -> BatchTraffic {
        BatchTraffic(
            batches: after.batches - before.batches,
            postgresStatements: after.postgresStatements - before.postgresStatements,
            postgresRoundTrips: after.postgresRoundTrips - before.postgresRoundTrips,
            redisCommands: after.redisCommands - before.redisCommands,
            redisRoundTrips: after.redisRoundTrips - before.redisRoundTrips
        )
    }

    /// `count` per batch; 0 without batches.
    func perBatch(_ count: Int) -> Double {
        batches == 0 ? 0 : Double(count) / Double(batches)
    }

    /// One line for the table.
    func summary(messages: Int) -> String {
        String(
            format: "PostgreSQL %.1f statements in %.1f round trips, Redis %.1f commands in %.1f round trips "
                + "(%d batches, %.0f messages each on average)",
            perBatch(postgresStatements), perBatch(postgresRoundTrips), perBatch(redisCommands),
            perBatch(redisRoundTrips), batches, perBatch(messages)
        )
    }

    enum CodingKeys: String, CodingKey {
        case batches
        case postgresStatements = "postgres_statements"
        case postgresRoundTrips = "postgres_round_trips"
        case redisCommands = "redis_commands"
        case redisRoundTrips = "redis_round_trips"
        case postgresStatementsPerBatch = "postgres_statements_per_batch"
        case postgresRoundTripsPerBatch = "postgres_round_trips_per_batch"
        case redisCommandsPerBatch = "redis_commands_per_batch"
        case redisRoundTripsPerBatch = "redis_round_trips_per_batch"
    }

    func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(batches, forKey: .batches)
        try container.encode(postgresStatements, forKey: .postgresStatements)
        try container.encode(postgresRoundTrips, forKey: .postgresRoundTrips)
        try container.encode(redisCommands, forKey: .redisCommands)
        try container.encode(redisRoundTrips, forKey: .redisRoundTrips)
        try container.encode(perBatch(postgresStatements), forKey: .postgresStatementsPerBatch)
        try container.encode(perBatch(postgresRoundTrips), forKey: .postgresRoundTripsPerBatch)
        try container.encode(perBatch(redisCommands), forKey: .redisCommandsPerBatch)
        try container.encode(perBatch(redisRoundTrips), forKey: .redisRoundTripsPerBatch)
    }
}
