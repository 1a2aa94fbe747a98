import ServiceLifecycle

/// Runs `service` once `precondition` has returned; if it throws, so does this, and the
/// service never starts.
///
/// `run` puts the ingest behind the metrics endpoint's `waitUntilListening`: with the
/// endpoint's port taken, the daemon stops at startup, before it has read a single entry.
struct StartAfter<Wrapped: Service & CustomStringConvertible>: Service, CustomStringConvertible {
    let precondition: @Sendable () async throws -> Void
    let service: Wrapped

    var description: String { service.description }

    func run() async throws {
        try await precondition()
        try await service.run()
    }
}
