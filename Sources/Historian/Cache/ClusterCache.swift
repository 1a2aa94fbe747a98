import RedisClient

/// The cache's writes on a Redis Cluster (contract §9), where one script call may only touch
/// keys of one slot.
///
/// A conversation's keys share a slot (their ID is a hash tag), so each write is one call of the
/// same script `RecentCache.apply` runs, with that conversation's keys alone: the versions
/// guard each list exactly as on a single Redis, so nothing goes backwards. A session hash is
/// one call of `sessionCall`; its user's set, in another slot, gets a plain `SADD` and
/// `PEXPIRE`. All of a batch's calls go out in one pipeline per master. The entries are
/// acknowledged afterwards, one `XACK` per stream shard, and only when no list was stale: a
/// crash in between redelivers them, and storing them again changes nothing.
///
/// The LangChain twin has no place here: `message_store:{id}` is in another slot than the
/// recent list it mirrors, and LangChain's reader does not speak Redis Cluster.
enum ClusterCache {
    /// Applies the writes and touches, then acknowledges `acknowledge` (entries of several
    /// shards, each its own stream) if no conversation was stale.
    static func apply(
        _ writes: [CacheWrite],
        sessions: [SessionTouch],
        acknowledge: [RecentCache.Acknowledge] = [],
        settings: CacheSettings,
        cluster: RedisClusterClient
    ) async throws -> RecentCache.Applied {
        guard settings.cluster, !settings.langchain else {
            throw HistorianError(.invalidConfiguration, "the cache on a Redis Cluster needs its key names, and no LangChain lists")
        }
        var calls: [(key: RedisArgument, command: [RedisArgument])] = writes.map { write in
            (
                RedisArgument(settings.recentKey(write.conversationID)),
                RecentCache.scriptCall([write], sessions: [], acknowledge: nil, settings: settings)
            )
        }
        let ttl = RedisArgument(String(settings.ttlMilliseconds))
        for touch in sessions {
            let users = RedisArgument(settings.userSessionsKey(touch.userID))
            calls.append((RedisArgument(settings.sessionKey(touch.sessionID)), sessionCall(touch, settings: settings)))
            calls.append((users, ["SADD", users, RedisArgument(touch.sessionID)]))
            calls.append((users, ["PEXPIRE", users, ttl]))
        }
        var replies = try await cluster.pipeline(calls)
        var repaired: [String] = []

        // A master that has not run the scripts yet: the calls again, with their source.
        var retry = replies.indices.filter { errorPrefix(replies[$0]) == "NOSCRIPT" }
        if !retry.isEmpty {
            replies = try await resend(retry, of: calls, replies: replies, cluster: cluster)
        }
        // Another type under a cache key: its keys go, and the call runs again (see
        // `RecentCache.apply`).
        retry = replies.indices.filter { errorPrefix(replies[$0]) == "WRONGTYPE" }
        if !retry.isEmpty {
            let failedWrites = retry.filter { $0 < writes.count }.map { writes[$0] }
            // A touch's calls: its hash's script, then its user's SADD and PEXPIRE.
            let failedSessions = sessions.indices.filter { index in
                retry.contains(writes.count + 3 * index) || retry.contains(writes.count + 3 * index + 1)
            }.map { sessions[$0] }
            repaired = try await removeWrongTypes(failedWrites, sessions: failedSessions, settings: settings, cluster: cluster)
            replies = try await resend(retry, of: calls, replies: replies, cluster: cluster)
        }
        if let failed = replies.first(where: { if case .error = $0 { true } else { false } }), case .error(let text) = failed {
            throw RedisError(serverReply: text)
        }
        let stale = writes.indices.flatMap { index in
            RecentCache.applied(replies[index], writes: [writes[index]], acknowledging: false).stale
        }
        var acknowledged = false
        let acks = acknowledge.filter { !$0.ids.isEmpty }
        if stale.isEmpty, !acks.isEmpty {
            let commands = acks.map { ack in
                (
                    key: RedisArgument(ack.stream),
                    command: ["XACK", RedisArgument(ack.stream), RedisArgument(ack.group)] + ack.ids.map { RedisArgument($0.description) }
                )
            }
            for reply in try await cluster.pipeline(commands) {
                if case .error(let text) = reply { throw RedisError(serverReply: text) }
            }
            acknowledged = true
        }
        return RecentCache.Applied(stale: stale, acknowledged: acknowledged, repaired: repaired)
    }

    /// The `EVALSHA` of `sessionScript` for one touch: KEYS the session hash; ARGV the TTL in
    /// milliseconds, user, department, conversation, latest and earliest time.
    static func sessionCall(_ touch: SessionTouch, settings: CacheSettings) -> [RedisArgument] {
        [
            "EVALSHA", RedisArgument(sessionScriptSHA1), "1", RedisArgument(settings.sessionKey(touch.sessionID)),
            RedisArgument(String(settings.ttlMilliseconds)), RedisArgument(touch.userID), RedisArgument(touch.deptID ?? ""),
            RedisArgument(touch.conversationID), RedisArgument(touch.at), RedisArgument(touch.first),
        ]
    }

    /// A session hash refreshed alone, as `RecentCache.script` refreshes it beside the lists.
    static let sessionScript = """
        \(RecentCache.sessionScript)
        touchSession(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6])
        return 1
        """

    static let sessionScriptSHA1 = RecentCache.sha1(sessionScript)

    /// An error reply's first word, e.g. `NOSCRIPT`; `nil` for other replies.
    private static func errorPrefix(_ reply: RESPValue) -> String? {
        guard case .error(let text) = reply else { return nil }
        return RedisError(serverReply: text).serverErrorPrefix
    }

    /// The calls at `indices` sent again, `EVAL` with their script's source in place of
    /// `EVALSHA`; the replies with theirs in place.
    private static func resend(
        _ indices: [Int],
        of calls: [(key: RedisArgument, command: [RedisArgument])],
        replies: [RESPValue],
        cluster: RedisClusterClient
    ) async throws -> [RESPValue] {
        let again = indices.map { index in
            var call = calls[index]
            if call.command.first == "EVALSHA" {
                call.command[0] = "EVAL"
                call.command[1] = RedisArgument(call.command[1] == RedisArgument(sessionScriptSHA1) ? sessionScript : RecentCache.script)
            }
            return call
        }
        var replies = replies
        for (index, reply) in zip(indices, try await cluster.pipeline(again)) { replies[index] = reply }
        return replies
    }

    /// `RecentCache.removeWrongTypes` on a cluster: each key's `TYPE`, and the `DEL`s, routed by
    /// the key.
    private static func removeWrongTypes(
        _ writes: [CacheWrite],
        sessions: [SessionTouch],
        settings: CacheSettings,
        cluster: RedisClusterClient
    ) async throws -> [String] {
        let groups = RecentCache.typedKeys(writes, sessions: sessions, settings: settings)
        let keys = groups.flatMap { $0 }
        let types = try await cluster.pipeline(keys.map { (RedisArgument($0.key), ["TYPE", RedisArgument($0.key)]) })
        let removed = RecentCache.wrongTypes(groups, types: types.map { $0.string ?? "" })
        if !removed.isEmpty {
            for reply in try await cluster.pipeline(removed.map { (RedisArgument($0), ["DEL", RedisArgument($0)]) }) {
                if case .error(let text) = reply { throw RedisError(serverReply: text) }
            }
        }
        return removed
    }
}
