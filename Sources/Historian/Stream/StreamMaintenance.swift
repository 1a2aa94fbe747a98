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
    let logger: Logger

    /// The gap reported last, so each gap is logged once.
    private(set) var reportedGap: StreamID?
    /// Entries trimmed before this group read them, since the process started.
    private(set) var trimmedBeforeDelivery = 0

    init(stream: IngestStream, ownConsumers: Set<String>, forgetConsumersAfter: Duration, logger: Logger) {
        self.stream = stream
        self.ownConsumers = ownConsumers
        self.forgetConsumersAfter = forgetConsumersAfter
        self.logger = logger
    }

    struct GroupInfo {
        var name: String
        var lastDelivered: StreamID
        var pending: Int
        var entriesRead: Int?
    }

    static func groups(_ redis: RedisConnection, stream: String) async throws -> [GroupInfo] {
        let reply = try await redis.send("XINFO", "GROUPS", RedisArgument(stream))
        return (reply.array ?? []).map(DryRun.pairs).compactMap { info in
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
    mutating func run(_ redis: RedisConnection) async throws {
        let type = try await redis.send("TYPE", RedisArgument(stream.stream))
        guard type.string == "stream" else { return }
        let groups = try await Self.groups(redis, stream: stream.stream)
        guard let ours = groups.first(where: { $0.name == stream.group }) else { return }
        try await checkForGap(redis, group: ours)
        try await trim(redis, groups: groups)
        try await forgetIdleConsumers(redis)
    }

    /// Entries deleted from the stream beyond this group's last-delivered ID were never read by
    /// it. When the stream's first entry lies past that ID, everything before it is gone and the
    /// number lost is `entries-added − length − entries-read`.
    mutating func checkForGap(_ redis: RedisConnection, group: GroupInfo) async throws {
        let info = DryRun.pairs(try await redis.send("XINFO", "STREAM", RedisArgument(stream.stream)))
        guard let deleted = info["max-deleted-entry-id"]?.string.flatMap({ StreamID($0) }),
            deleted > group.lastDelivered
        else { return }
        guard reportedGap.map({ deleted > $0 }) ?? true else { return }
        reportedGap = deleted
        let length = Int(info["length"]?.int ?? 0)
        let added = Int(info["entries-added"]?.int ?? 0)
        let first = info["first-entry"]?.array?.first?.string.flatMap { StreamID($0) }
        var lost: Int?
        if let read = group.entriesRead, first.map({ $0 > group.lastDelivered }) ?? true {
            lost = added - length - read
        }
        if let lost, lost > 0 { trimmedBeforeDelivery += lost }
        logger.error(
            "entries were deleted from the stream before this group read them",
            metadata: [
                "stream": "\(stream.stream)", "group": "\(stream.group)",
                "gap.after": "\(group.lastDelivered)", "gap.through": "\(deleted)",
                "gap.entries": "\(lost.map(String.init) ?? "unknown")",
                "trimmed_before_delivery.total": "\(trimmedBeforeDelivery)",
            ]
        )
    }

    /// Trims entries that every group has acknowledged: below the oldest pending entry of each
    /// group, and never past any group's last-delivered ID.
    func trim(_ redis: RedisConnection, groups: [GroupInfo]) async throws {
        var keepFrom: StreamID?
        for group in groups {
            var needed = StreamID(milliseconds: group.lastDelivered.milliseconds, sequence: group.lastDelivered.sequence &+ 1)
            if group.lastDelivered.sequence == .max {
                needed = StreamID(milliseconds: group.lastDelivered.milliseconds + 1, sequence: 0)
            }
            if group.pending > 0 {
                let summary = try await redis.send("XPENDING", RedisArgument(stream.stream), RedisArgument(group.name))
                if let oldest = summary.array?.dropFirst().first?.string.flatMap({ StreamID($0) }) {
                    needed = min(needed, oldest)
                }
            }
            keepFrom = min(keepFrom ?? needed, needed)
        }
        guard let keepFrom, keepFrom > StreamID(milliseconds: 0, sequence: 1) else { return }
        let trimmed = try await redis.send(
            "XTRIM", RedisArgument(stream.stream), "MINID", "~", RedisArgument(keepFrom.description)
        )
        if let count = trimmed.int, count > 0 {
            logger.debug("trimmed the stream", metadata: ["entries": "\(count)", "kept_from": "\(keepFrom)"])
        }
    }

    /// Removes consumers that have nothing pending and have been idle for a long time.
    func forgetIdleConsumers(_ redis: RedisConnection) async throws {
        let reply = try await redis.send("XINFO", "CONSUMERS", RedisArgument(stream.stream), RedisArgument(stream.group))
        let limit = forgetConsumersAfter.components.seconds * 1000
        for consumer in (reply.array ?? []).map(DryRun.pairs) {
            guard let name = consumer["name"]?.string, !ownConsumers.contains(name),
                consumer["pending"]?.int == 0, let idle = consumer["idle"]?.int, idle > limit
            else { continue }
            _ = try await redis.send("XGROUP", "DELCONSUMER", RedisArgument(stream.stream), RedisArgument(stream.group), RedisArgument(name))
            logger.info("removed an idle consumer with nothing pending", metadata: ["consumer": "\(name)"])
        }
    }
}
