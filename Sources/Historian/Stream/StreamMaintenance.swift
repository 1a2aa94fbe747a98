import Logging
import RedisClient

/// Upkeep of the ingest stream, done by one task per process: trimming what every group has
/// acknowledged, reporting entries trimmed before this group read them, and removing consumers
/// that are long gone.
struct StreamMaintenance {
    let stream: IngestStream
    let ownConsumers: Set<String>
    /// Consumers idle this long with nothing pending are removed from the group.
    let forgetConsumersAfter: Duration
    let metrics: DaemonMetrics
    let logger: Logger

    /// Entries already reported lost, so each gap is logged once.
    private(set) var reportedLost = 0
    /// Entries trimmed before this group read them, since the process started.
    private(set) var trimmedBeforeDelivery = 0

    init(
        stream: IngestStream,
        ownConsumers: Set<String>,
        forgetConsumersAfter: Duration,
        metrics: DaemonMetrics = .disabled,
        logger: Logger
    ) {
        self.stream = stream
        self.ownConsumers = ownConsumers
        self.forgetConsumersAfter = forgetConsumersAfter
        self.metrics = metrics
        self.logger = logger
    }

    struct GroupInfo {
        var name: String
        var lastDelivered: StreamID
        var pending: Int
        var entriesRead: Int?
    }

    static func groups(_ redis: some RoutedRedis, stream: String) async throws -> [GroupInfo] {
        let reply = try await redis.send(["XINFO", "GROUPS", RedisArgument(stream)], key: RedisArgument(stream))
        return (reply.array ?? []).map(\.fieldPairs).compactMap { info in
            guard let name = info["name"]?.string else { return nil }
            return GroupInfo(
                name: name,
                lastDelivered: info["last-delivered-id"]?.string.flatMap { StreamID($0) } ?? .zero,
                pending: Int(info["pending"]?.int ?? 0),
                entriesRead: info["entries-read"]?.int.map { Int($0) }
            )
        }
    }

    /// One pass: gap check, trim, consumer cleanup.
    mutating func run(_ redis: some RoutedRedis) async throws {
        let type = try await redis.send(["TYPE", key], key: key)
        guard type.string == "stream" else { return }
        let groups = try await Self.groups(redis, stream: stream.stream)
        guard let ours = groups.first(where: { $0.name == stream.group }) else { return }
        try await checkForGap(redis, group: ours)
        try await trim(redis, groups: groups)
        try await forgetIdleConsumers(redis)
    }

    /// Entries the group never read although they were added: every entry ever added was
    /// either read by the group (`entries-read`), or is still in the stream after the group's
    /// last-delivered ID, or was deleted (trimmed) before the group got to it. The count is
    /// cumulative, so it is compared with what was reported before and each gap is logged once.
    ///
    /// Counting the entries after the last-delivered ID makes Redis walk them, so the check
    /// waits while the group is more than `countLimit` entries behind; being cumulative, it
    /// finds any gap once the group has caught up.
    mutating func checkForGap(_ redis: some RoutedRedis, group: GroupInfo) async throws {
        guard let read = group.entriesRead else { return }
        let info = try await redis.send(["XINFO", "STREAM", key], key: key).fieldPairs
        let added = Int(info["entries-added"]?.int ?? 0)
        guard added - read <= Self.countLimit else { return }
        let after = try await redis.send(
            [
                "EVAL", RedisArgument(Self.countAfterScript), "1", key, RedisArgument(group.lastDelivered.description),
                RedisArgument(Self.countLimit),
            ],
            key: key
        )
        guard let unread = after.int.map({ Int($0) }), unread <= Self.countLimit else { return }
        let lost = added - read - unread
        guard lost > reportedLost else { return }
        let gap = lost - reportedLost
        reportedLost = lost
        trimmedBeforeDelivery += gap
        metrics.recordGap(entries: gap)
        logger.error(
            "entries were deleted from the stream before this group read them",
            metadata: [
                "stream": "\(stream.stream)", "group": "\(stream.group)",
                "gap.after": "\(group.lastDelivered)", "gap.entries": "\(gap)",
                "trimmed_before_delivery.total": "\(trimmedBeforeDelivery)",
            ]
        )
    }

    static let countLimit = 2_000
    /// The number of entries after ARGV[1], counted up to ARGV[2] + 1 (only the count leaves Redis).
    static let countAfterScript = """
        return #redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+', 'COUNT', tonumber(ARGV[2]) + 1)
        """

    /// Trims entries that every group has acknowledged: below the oldest pending entry of each
    /// group, and never past any group's last-delivered ID.
    func trim(_ redis: some RoutedRedis, groups: [GroupInfo]) async throws {
        var keepFrom: StreamID?
        for group in groups {
            var needed = StreamID(milliseconds: group.lastDelivered.milliseconds, sequence: group.lastDelivered.sequence &+ 1)
            if group.lastDelivered.sequence == .max {
                // The last possible ID has no successor: it is kept.
                needed =
                    group.lastDelivered.milliseconds == .max
                    ? group.lastDelivered : StreamID(milliseconds: group.lastDelivered.milliseconds + 1, sequence: 0)
            }
            if group.pending > 0 {
                let summary = try await redis.send(["XPENDING", key, RedisArgument(group.name)], key: key)
                if let oldest = summary.array?.dropFirst().first?.string.flatMap({ StreamID($0) }) {
                    needed = min(needed, oldest)
                }
            }
            keepFrom = min(keepFrom ?? needed, needed)
        }
        guard let keepFrom, keepFrom > StreamID(milliseconds: 0, sequence: 1) else { return }
        var total = 0
        while true {
            let trimmed = try await redis.send(
                ["XTRIM", key, "MINID", "~", RedisArgument(keepFrom.description), "LIMIT", RedisArgument(Self.trimPerCall)],
                key: key
            )
            guard let count = trimmed.int, count > 0 else { break }
            total += Int(count)
        }
        if total > 0 {
            metrics.recordTrimmed(entries: total)
            logger.debug("trimmed the stream", metadata: ["entries": "\(total)", "kept_from": "\(keepFrom)"])
        }
    }

    /// The most entries one `XTRIM` removes. An approximate trim removes whole nodes, and
    /// Redis stops it after 100 of them (10,000 entries with the default
    /// `stream-node-max-entries`) unless told otherwise. One call per pass, as before, therefore
    /// fell behind any stream fed faster than 2,000 entries a second, and the stream grew
    /// without end. A pass now trims in calls of this many until one finds nothing left, each
    /// its own round trip, so no single call holds Redis for long.
    static let trimPerCall = 10_000

    /// The stream's key, where its commands are routed.
    private var key: RedisArgument { RedisArgument(stream.stream) }

    /// Removes consumers that have nothing pending and have been idle for a long time.
    func forgetIdleConsumers(_ redis: some RoutedRedis) async throws {
        let reply = try await redis.send(["XINFO", "CONSUMERS", key, RedisArgument(stream.group)], key: key)
        let limit = forgetConsumersAfter.components.seconds * 1000
        for consumer in (reply.array ?? []).map(\.fieldPairs) {
            guard let name = consumer["name"]?.string, !ownConsumers.contains(name),
                consumer["pending"]?.int == 0, let idle = consumer["idle"]?.int, idle > limit
            else { continue }
            _ = try await redis.send(["XGROUP", "DELCONSUMER", key, RedisArgument(stream.group), RedisArgument(name)], key: key)
            logger.info("removed an idle consumer with nothing pending", metadata: ["consumer": "\(name)"])
        }
    }
}
