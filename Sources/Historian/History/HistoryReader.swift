import Logging

/// Reads chat history for the API (contract §7): a user's conversations, a conversation's
/// messages, its recent list and its context window, from PostgreSQL, Redis or, once archived,
/// the conversation's verified archive file.
///
/// Each read is a few statements on one of `connections`' sessions, run on that connection's
/// thread (archive files are read there too, as `historian export` does): nothing blocks the
/// cooperative pool. Reads write nothing but a rebuilt recent list (through the pipeline's own
/// versioned update) and, once per conversation archived by an older release, the columns its
/// listing needs.
public struct HistoryReader: Sendable {
    public let connections: HistoryConnections
    public let cache: CacheSettings
    let logger: Logger
    /// Runs between reading a recent list's snapshot from PostgreSQL and applying it to Redis:
    /// tests write a newer list there meanwhile, as a worker would.
    var beforeRebuild: @Sendable () async throws -> Void = {}

    public init(connections: HistoryConnections, cache: CacheSettings, logger: Logger) {
        self.connections = connections
        self.cache = cache
        self.logger = logger
    }

    /// How often a read looks again when the archive file it was sent to is gone: a restore
    /// brings the conversation back to PostgreSQL first and removes its file afterwards.
    static let attempts = 3
}
