import RedisClient

/// The Redis part of an erasure: each erased conversation's recent list, LangChain list and
/// version key, and for a user, their session hashes and their set of sessions (contract §3,
/// §8), with `key_prefix`.
///
/// **Tombstones.** A batch that committed just before the erasure took its locks writes its
/// cache update just after, possibly after the keys are gone: that would put erased messages
/// back in a recent list. So each erased conversation's version key is not deleted but set to
/// ``tombstone``, a version above any real one, with TTL `session_ttl`. The cache script applies
/// a delta only on top of exactly the version before it and a snapshot only over an older
/// version, so neither applies over a tombstone, and neither brings the lists back. (The script
/// puts the tombstone back with a fresh TTL each time it turns a write away.) The tombstone
/// holds no content. A message stored later under the same conversation id is new data
/// (contract §7) and is in PostgreSQL as usual; its recent list stays off until the tombstone
/// expires, one `session_ttl` after the last such write.
///
/// Session hashes and the user's set have no version; a touch arriving after the first pass
/// re-creates them, which the second pass (after `Erasure.settle`) removes again. They hold
/// identifiers and times, no content.
enum ErasureKeys {
    /// The version key's value that no cache write gets past: `<version> <time>` with the largest
    /// version a bigint holds, and no time.
    static let tombstone = "9223372036854775807 "

    /// Conversations per pipeline.
    static let chunk = 500

    /// The keys deleted outright for a conversation; its version key is tombstoned instead. The
    /// LangChain list goes whether `langchain_cache` is on now or not: it may have been on.
    static func listKeys(of conversation: String, settings: CacheSettings) -> [String] {
        [settings.recentKey(conversation), settings.langchainKey(conversation)]
    }

    /// The session keys of the plan, and of the user's session set as it is now, with the set.
    static func sessionKeys(
        _ subject: ErasureSubject,
        plan: ErasurePlan,
        settings: CacheSettings,
        redis: RedisConnection
    ) async throws -> [String] {
        guard let user = subject.userID else { return [] }
        let set = settings.userSessionsKey(user)
        let members: [String]
        do {
            members = try await redis.send("SMEMBERS", RedisArgument(set)).array?.compactMap(\.string) ?? []
        } catch let error as RedisError where error.serverErrorPrefix == "WRONGTYPE" {
            // Not a set of sessions, but under the set's name: it goes all the same.
            members = []
        }
        let sessions = Set(plan.sessions).union(members).sorted()
        return sessions.map(settings.sessionKey) + [set]
    }

    /// Removes the keys and writes the tombstones.
    /// - Returns: how many keys held something of the subject (see `ErasureCounts.redisKeys`).
    static func remove(
        _ subject: ErasureSubject,
        plan: ErasurePlan,
        settings: CacheSettings,
        redis: RedisConnection
    ) async throws -> Int {
        var removed = 0
        let ttl = RedisArgument(String(max(1, settings.ttlMilliseconds)))
        var start = 0
        while start < plan.conversations.count {
            let conversations = plan.conversations[start..<min(start + chunk, plan.conversations.count)]
            start += chunk
            // The tombstone first: a cache write that comes after it is turned away, and one that
            // came before has its list deleted right after.
            var commands: [[RedisArgument]] = []
            for conversation in conversations {
                commands.append(
                    [
                        "SET", RedisArgument(settings.versionKey(conversation)), RedisArgument(tombstone), "PX", ttl,
                        "GET",
                    ]
                )
                commands.append(["DEL"] + listKeys(of: conversation, settings: settings).map { RedisArgument($0) })
            }
            let replies = try await redis.pipeline(commands)
            var wrongType: [String] = []
            for (index, conversation) in conversations.enumerated() {
                removed += try deleted(replies[2 * index + 1])
                switch replies[2 * index] {
                case .null:
                    break
                case .error(let text) where RedisError(serverReply: text).serverErrorPrefix == "WRONGTYPE":
                    // Not a version key's value, but under its name: it goes, and the tombstone takes its place.
                    wrongType.append(conversation)
                case .error(let text):
                    throw RedisError(serverReply: text)
                case let previous:
                    if previous.bytes != Array(tombstone.utf8) { removed += 1 }
                }
            }
            for conversation in wrongType {
                // Replaced in one step, and the lists deleted again after, as above.
                let key = RedisArgument(settings.versionKey(conversation))
                let lists = ["DEL"] + listKeys(of: conversation, settings: settings).map { RedisArgument($0) }
                let replies = try await redis.pipeline(
                    [["MULTI"], ["DEL", key], ["SET", key, RedisArgument(tombstone), "PX", ttl], ["EXEC"], lists]
                )
                guard let results = replies[3].array, results.count == 2 else {
                    throw HistorianError(.unexpectedReply, "replacing a version key that held another type failed")
                }
                removed += try deleted(results[0]) + deleted(replies[4])
            }
        }
        let sessions = try await sessionKeys(subject, plan: plan, settings: settings, redis: redis)
        start = 0
        while start < sessions.count {
            let keys = sessions[start..<min(start + chunk, sessions.count)]
            start += chunk
            removed += try deleted(try await redis.send(["DEL"] + keys.map { RedisArgument($0) }))
        }
        return removed
    }

    /// How many keys `remove` would count now, changing nothing.
    static func existing(
        _ subject: ErasureSubject,
        plan: ErasurePlan,
        settings: CacheSettings,
        redis: RedisConnection
    ) async throws -> Int {
        var found = 0
        var start = 0
        while start < plan.conversations.count {
            let conversations = plan.conversations[start..<min(start + chunk, plan.conversations.count)]
            start += chunk
            var commands: [[RedisArgument]] = []
            for conversation in conversations {
                commands.append(["EXISTS"] + listKeys(of: conversation, settings: settings).map { RedisArgument($0) })
                commands.append(["TYPE", RedisArgument(settings.versionKey(conversation))])
                commands.append(["GETRANGE", RedisArgument(settings.versionKey(conversation)), "0", "-1"])
            }
            let replies = try await redis.pipeline(commands)
            for index in 0..<conversations.count {
                found += Int(replies[3 * index].int ?? 0)
                switch replies[3 * index + 1].string {
                case "none": break
                case "string": if replies[3 * index + 2].bytes != Array(tombstone.utf8) { found += 1 }
                default: found += 1
                }
            }
        }
        let sessions = try await sessionKeys(subject, plan: plan, settings: settings, redis: redis)
        start = 0
        while start < sessions.count {
            let keys = sessions[start..<min(start + chunk, sessions.count)]
            start += chunk
            found += Int(try await redis.send(["EXISTS"] + keys.map { RedisArgument($0) }).int ?? 0)
        }
        return found
    }

    /// The number a `DEL` answered.
    private static func deleted(_ reply: RESPValue) throws -> Int {
        if case .error(let text) = reply { throw RedisError(serverReply: text) }
        return Int(reply.int ?? 0)
    }
}
