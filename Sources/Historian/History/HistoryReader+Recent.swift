import PostgresClient
import RedisClient

/// A conversation's recent list (contract §3) as the API gives it out.
public struct RecentList: Sendable, Hashable {
    public enum Source: String, Sendable, Hashable {
        /// Redis held the list.
        case cache
        /// The key was missing; the list was rebuilt from PostgreSQL and this is what Redis
        /// then held.
        case rebuilt
        /// The conversation is archived: its latest messages, from its verified archive file.
        case archive
    }

    public var source: Source
    /// JSON objects, oldest first: the recent list's elements or, from an archive, message lines
    /// (which have every key an element has).
    public var elements: [String]
}

extension HistoryReader {
    /// The conversation's recent list; `nil` when the conversation is neither in PostgreSQL nor
    /// archived.
    ///
    /// A missing key is rebuilt from a snapshot of PostgreSQL through `RecentCache.apply`, the
    /// pipeline's own versioned update: a snapshot applies only over an older version, so a
    /// list that a worker wrote meanwhile is never replaced by an older one, and what Redis holds
    /// afterwards is returned. An archived conversation's list is read from its file and not
    /// written back: the archive removed the key on purpose.
    public func recent(_ id: CanonicalUUID) async throws -> RecentList? {
        let key = RedisArgument(cache.recentKey(id.text))
        if cache.recentSize > 0 {
            let cached = try await connections.withRedis { try await Self.elements(of: key, in: $0) }
            if !cached.isEmpty { return RecentList(source: .cache, elements: cached) }
        }
        let size = cache.recentSize
        let found = try await connections.withPostgres { postgres in
            try await postgres.withSession { session in try Self.findRecent(id, size: size, in: session) }
        }
        switch found {
        case .notFound, .archive:
            return nil
        case .archived(let elements):
            return RecentList(source: .archive, elements: elements)
        case .snapshot(let snapshot):
            guard size > 0 else { return RecentList(source: .rebuilt, elements: []) }
            try await beforeRebuild()
            let cache = cache
            let held = try await connections.withRedis { redis in
                _ = try await RecentCache.apply([snapshot], sessions: [], settings: cache, redis: redis)
                return try await Self.elements(of: key, in: redis)
            }
            // Empty only if the list went again in between (it expired, or was archived): the
            // snapshot is then the latest there was.
            return RecentList(source: .rebuilt, elements: held.isEmpty ? snapshot.elements : held)
        }
    }

    /// The conversation's list as PostgreSQL holds it or, archived, its latest messages from its
    /// file.
    private static func findRecent(_ id: CanonicalUUID, size: Int, in session: PostgresSession) throws -> FoundRecent {
        for attempt in 1...attempts {
            // Where it is, from one snapshot (see `conversation(_:limit:after:)`).
            let found = try session.transaction("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY") { _ -> FoundRecent in
                // The message tables only for a live conversation: an archived one is read from its
                // file alone.
                let live = try session.query("SELECT 1 FROM conversations WHERE id = $1::uuid", [id.text])
                if !live.rows.isEmpty,
                    let snapshot = try RecentCache.snapshots(of: [id.text], size: size, in: session).first
                {
                    return .snapshot(snapshot)
                }
                return try ArchivedConversation.find(id, in: session).map(FoundRecent.archive) ?? .notFound
            }
            guard case .archive(let archive) = found else { return found }
            var latest = RingBuffer<String>(capacity: size)
            let conversation = try archive.read { line, _ in latest.append(line) }
            guard let conversation else {
                if attempt < attempts { continue }
                throw HistorianError(.archiveUnreadable, "archive \(archive.path): no such file")
            }
            archive.recordListingColumns(from: conversation, in: session)
            return .archived(latest.elements)
        }
        return .notFound
    }

    /// The list's elements; none when there is no list, or another type under its key (which
    /// `RecentCache.apply` then replaces, as the pipeline does).
    private static func elements(of key: RedisArgument, in redis: RedisConnection) async throws -> [String] {
        let reply: RESPValue
        do {
            reply = try await redis.send("LRANGE", key, "0", "-1")
        } catch let error as RedisError where error.serverErrorPrefix == "WRONGTYPE" {
            return []
        }
        guard let items = reply.array else {
            throw HistorianError(.unexpectedReply, "LRANGE of a recent list did not answer with an array")
        }
        return items.compactMap(\.string)
    }
}

/// What PostgreSQL holds for a recent list.
private enum FoundRecent: Sendable {
    case snapshot(CacheWrite)
    /// An archived conversation, its file not read yet.
    case archive(ArchivedConversation)
    /// An archived conversation's latest messages, from its file.
    case archived([String])
    case notFound
}

/// The last `capacity` elements appended, in order.
struct RingBuffer<Element> {
    let capacity: Int
    private var storage: [Element] = []
    private var start = 0

    init(capacity: Int) {
        self.capacity = capacity
        storage.reserveCapacity(min(capacity, 1024))
    }

    mutating func append(_ element: Element) {
        guard capacity > 0 else { return }
        if storage.count < capacity {
            storage.append(element)
        } else {
            storage[start] = element
            start = (start + 1) % capacity
        }
    }

    var elements: [Element] { Array(storage[start...] + storage[..<start]) }
}
