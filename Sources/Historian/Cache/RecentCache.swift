import Crypto
import Foundation
import PostgresClient
import RedisClient

/// Settings of the Redis cache (contract §3).
public struct CacheSettings: Sendable {
    /// Messages kept in each recent-history list; 0 turns the lists off (sessions stay on).
    public var recentSize: Int
    public var sessionTTL: Duration
    public var keyPrefix: String
    /// Whether each recent list has a LangChain twin, `message_store:{id}` (contract §8).
    public var langchain: Bool
    /// Whether the keys are those of a Redis Cluster (contract §9): each one's ID in a hash tag,
    /// so that a conversation's keys share a slot, and the cache's calls can go one per slot.
    public var cluster: Bool

    public init(
        recentSize: Int = 10,
        sessionTTL: Duration = .seconds(1800),
        keyPrefix: String = "",
        langchain: Bool = false,
        cluster: Bool = false
    ) {
        self.recentSize = recentSize
        self.sessionTTL = sessionTTL
        self.keyPrefix = keyPrefix
        self.langchain = langchain
        self.cluster = cluster
    }

    /// `id` as a key names it: in a hash tag on a cluster.
    private func tagged(_ id: String) -> String { cluster ? "{\(id)}" : id }

    public init(_ configuration: HistorianConfiguration) {
        self.init(
            recentSize: configuration.recentSize,
            sessionTTL: configuration.sessionTTL,
            keyPrefix: configuration.keyPrefix,
            langchain: configuration.langchainCache,
            cluster: configuration.redisCluster
        )
    }

    public func recentKey(_ conversation: String) -> String { "\(keyPrefix)history:\(tagged(conversation)):recent" }
    /// The version of the recent list, beside it; readers never need it.
    public func versionKey(_ conversation: String) -> String { "\(keyPrefix)history:\(tagged(conversation)):recent:version" }
    /// The list LangChain's `RedisChatMessageHistory` reads: the recent list's messages as
    /// LangChain message dicts, newest first.
    public func langchainKey(_ conversation: String) -> String { "\(keyPrefix)message_store:\(conversation)" }
    /// The keys a conversation's cache consists of: the ones the archive and erasure remove.
    public func conversationKeys(_ conversation: String) -> [String] {
        [recentKey(conversation), versionKey(conversation)] + (langchain ? [langchainKey(conversation)] : [])
    }
    public func sessionKey(_ session: String) -> String { "\(keyPrefix)session:\(tagged(session))" }
    public func userSessionsKey(_ user: String) -> String { "\(keyPrefix)user:\(tagged(user)):sessions" }

    var ttlMilliseconds: Int64 {
        sessionTTL.wholeMilliseconds
    }
}

/// One change to a conversation's recent list.
///
/// Every transaction that stores messages of a conversation raises its `cache_version` by one,
/// while it holds the conversation's row lock; so versions follow commit order. A `delta` holds
/// the messages version `version` added and applies only on top of exactly `version - 1`; a
/// `snapshot` holds the whole list as of `version` and applies on top of anything older.
/// Redis therefore only ever moves to a newer version: the list cannot go backwards, whatever
/// order workers, processes and redeliveries reach it in.
public struct CacheWrite: Sendable, Hashable {
    public enum Mode: String, Sendable, Hashable {
        case delta = "d"
        case snapshot = "s"
    }

    public var mode: Mode
    public var conversationID: String
    public var version: Int64
    /// Elements in the contract's JSON shape, oldest first.
    public var elements: [String]
}

/// The latest activity of a session in a batch.
public struct SessionTouch: Sendable, Hashable {
    public var sessionID: String
    public var userID: String
    public var deptID: String?
    public var conversationID: String
    /// The session's latest message time in the batch, RFC 3339 UTC with microseconds, which
    /// compares correctly as text.
    public var at: String
    /// Its earliest message time in the batch.
    public var first: String

    /// One touch per session: its latest message in the batch, and the earliest time.
    static func latest(of messages: [IncomingMessage]) -> [SessionTouch] {
        // Positions rather than copies of the messages; a later message wins a tie.
        var latest: [String: (latest: Int, earliest: Timestamp)] = [:]
        for (position, message) in messages.enumerated() {
            guard let session = message.sessionID else { continue }
            if let seen = latest[session] {
                let newer = messages[seen.latest].createdAt <= message.createdAt
                latest[session] = (newer ? position : seen.latest, min(seen.earliest, message.createdAt))
            } else {
                latest[session] = (position, message.createdAt)
            }
        }
        return latest.map { session, seen in
            let message = messages[seen.latest]
            return SessionTouch(
                sessionID: session,
                userID: message.userID,
                deptID: message.deptID,
                conversationID: message.conversationID.text,
                at: message.createdAt.rfc3339,
                first: seen.earliest.rfc3339
            )
        }
        .sorted { $0.sessionID < $1.sessionID }
    }
}

/// Keeps `history:{id}:recent`, `session:{id}` and `user:{id}:sessions` fresh: a batch's cache
/// work is a few script calls, one round trip each (one call for batches of up to 256).
public enum RecentCache {
    /// The contract's element, as PostgreSQL builds it for snapshots (list rebuilds).
    /// `created_at` comes right after `role`, before any free text, so the script can find it.
    /// `element(of:metadata:)` builds the same bytes in Swift for the messages a unit stores.
    static func elementSQL(_ m: String) -> String {
        """
        json_build_object('id', \(m).id, 'conversation_id', \(m).conversation_id, 'role', \(m).role,
            'created_at', to_char(\(m).created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
            'tokens_used', \(m).tokens_used, 'latency_ms', \(m).latency_ms, 'content', \(m).content,
            'metadata', \(m).metadata)::text
        """
    }

    /// The bytes `elementSQL` makes PostgreSQL build for this message, given its metadata as
    /// PostgreSQL prints it (`jsonb` text: keys sorted, duplicates dropped, numbers and strings
    /// rewritten), or `nil`. The store builds its elements here rather than have PostgreSQL
    /// read back the rows it has just written and build them: PostgreSQL's CPU is the scarcer.
    ///
    /// `json_build_object` separates keys from values with `" : "` and pairs with `", "`;
    /// strings are escaped as PostgreSQL's `escape_json` does (`\b \f \n \r \t \" \\`, other
    /// bytes below 0x20 as `\u00xx`, everything else as it is). `MessageStoreTests` compares
    /// both builders on awkward content.
    public static func element(of message: IncomingMessage, metadata: String?) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(message.content.utf8.count + (metadata?.utf8.count ?? 0) + 240)
        func literal(_ text: StaticString) {
            out.append(contentsOf: UnsafeBufferPointer(start: text.utf8Start, count: text.utf8CodeUnitCount))
        }
        func number(_ value: Int32?) {
            if let value { out.append(contentsOf: String(value).utf8) } else { out.append(contentsOf: "null".utf8) }
        }
        literal(#"{"id" : ""#)
        message.id.appendText(to: &out)
        literal(#"", "conversation_id" : ""#)
        message.conversationID.appendText(to: &out)
        literal(#"", "role" : ""#)
        out.append(contentsOf: message.role.rawValue.utf8)
        literal(#"", "created_at" : ""#)
        message.createdAt.appendRFC3339(to: &out)
        literal(#"", "tokens_used" : "#)
        number(message.tokensUsed)
        literal(#", "latency_ms" : "#)
        number(message.latencyMs)
        literal(#", "content" : "#)
        appendJSONString(message.content, to: &out)
        literal(#", "metadata" : "#)
        if let metadata { out.append(contentsOf: metadata.utf8) } else { out.append(contentsOf: "null".utf8) }
        out.append(0x7D)
        return String(decoding: out, as: UTF8.self)
    }

    /// A JSON string as PostgreSQL's `escape_json` writes it.
    static func appendJSONString(_ value: String, to out: inout [UInt8]) {
        out.append(0x22)
        var value = value
        value.withUTF8 { bytes in
            // Runs of plain bytes are copied whole.
            var runStart = 0
            var next = ByteScan.firstCandidate(in: bytes, from: 0, quote: true)
            while next < bytes.count {
                let index = next
                next = ByteScan.firstCandidate(in: bytes, from: index + 1, quote: true)
                let byte = bytes[index]
                out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[runStart..<index]))
                runStart = index + 1
                out.append(0x5C)
                switch byte {
                case 0x08: out.append(0x62)
                case 0x0C: out.append(0x66)
                case 0x0A: out.append(0x6E)
                case 0x0D: out.append(0x72)
                case 0x09: out.append(0x74)
                case 0x22, 0x5C: out.append(byte)
                default:
                    // `\u00xx`, lower-case hex; only 0x00–0x1F get here.
                    out.append(contentsOf: [0x75, 0x30, 0x30, 0x30 + (byte >> 4), hexDigit(byte & 0x0F)])
                }
            }
            out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[runStart...]))
        }
        out.append(0x22)
    }

    private static func hexDigit(_ value: UInt8) -> UInt8 {
        value < 10 ? 0x30 + value : 0x61 + value - 10
    }

    static let snapshotSQL = """
        SELECT c.id::text, c.cache_version::text, e.element
        FROM conversations AS c
        LEFT JOIN LATERAL (
            SELECT \(elementSQL("m")) AS element, m.created_at, m.arrival
            FROM messages AS m
            WHERE m.conversation_id = c.id
            ORDER BY m.created_at DESC, m.arrival DESC
            LIMIT $2
        ) AS e ON true
        WHERE c.id = ANY($1)
        ORDER BY c.id, e.created_at, e.arrival
        """

    /// Reads the current recent lists of these conversations, with their versions.
    static func snapshots(of conversations: [String], size: Int, in session: PostgresSession) throws -> [CacheWrite] {
        let ids = conversations.compactMap(CanonicalUUID.init)
        guard !ids.isEmpty else { return [] }
        let rows = try session.query(
            snapshotSQL,
            parameters: [.binary(PostgresBinary.uuidArray(ids.map(\.value))), .text(String(size))]
        )
        var writes: [CacheWrite] = []
        for row in rows.rows {
            guard let id = row[0], let version = row[1].flatMap({ Int64($0) }) else { continue }
            if writes.last?.conversationID != id {
                writes.append(CacheWrite(mode: .snapshot, conversationID: id, version: version, elements: []))
            }
            if let element = row[2] { writes[writes.count - 1].elements.append(element) }
        }
        return writes
    }

    /// Entries to acknowledge in the same script call, once the cache is fresh.
    struct Acknowledge {
        var stream: String
        var group: String
        var ids: [StreamID]
    }

    /// What one `apply` did.
    struct Applied {
        /// Conversations whose delta found Redis at an unexpected version (expired, evicted, or
        /// behind a commit whose cache update never happened); they need a snapshot.
        var stale: [String]
        /// Whether the entries were acknowledged: only when nothing was stale.
        var acknowledged: Bool
        /// Keys that held another type than the cache writes there, and were removed.
        var repaired: [String] = []
    }

    /// About the most work one script call carries: a write counts its elements, a session
    /// touch one. Redis serves no other client while a script runs, and a whole batch of 500
    /// in one call would hold it for milliseconds.
    static let workPerCall = 256

    /// Applies the writes and session touches, in script calls of about `workPerCall` each,
    /// then acknowledges `acknowledge` in the last call if no conversation was stale in any of
    /// them: the cache is refreshed before the entries are acknowledged, and an entry is never
    /// acknowledged while its conversation's list is behind. A batch of up to `workPerCall` is
    /// one call, one round trip.
    static func apply(
        _ writes: [CacheWrite],
        sessions: [SessionTouch],
        acknowledge: Acknowledge? = nil,
        settings: CacheSettings,
        redis: RedisConnection,
        workPerCall: Int = workPerCall
    ) async throws -> Applied {
        let calls = split(writes, sessions: sessions, workPerCall: workPerCall)
        var stale: [String] = []
        var acknowledged = false
        var repaired: [String] = []
        for (index, call) in calls.enumerated() {
            let last = index == calls.count - 1
            func once() async throws -> Applied {
                try await applyInOneCall(
                    call.writes,
                    sessions: call.sessions,
                    acknowledge: last && stale.isEmpty ? acknowledge : nil,
                    settings: settings,
                    redis: redis
                )
            }
            let applied: Applied
            do {
                applied = try await once()
            } catch let error as RedisError where error.serverErrorPrefix == "WRONGTYPE" {
                // Someone wrote another type under one of the cache's keys: the script stopped
                // there. Those keys go, and the call runs again: a list found missing is rebuilt
                // from PostgreSQL like an expired one. What the first call did applies again
                // as a no-op (its versions are in), so nothing goes backwards.
                let removed = try await removeWrongTypes(call.writes, sessions: call.sessions, settings: settings, redis: redis)
                guard !removed.isEmpty else { throw error }
                repaired += removed
                applied = try await once()
            }
            stale += applied.stale
            acknowledged = applied.acknowledged
        }
        return Applied(stale: stale, acknowledged: acknowledged, repaired: repaired)
    }

    /// Removes the keys of these writes and touches that hold another type than the cache
    /// writes there: a list, its version string and its LangChain twin (all go when one is
    /// wrong, so that the list is rebuilt whole), a session hash, a user's session set.
    /// - Returns: the keys removed.
    static func removeWrongTypes(
        _ writes: [CacheWrite],
        sessions: [SessionTouch],
        settings: CacheSettings,
        redis: RedisConnection
    ) async throws -> [String] {
        let groups = typedKeys(writes, sessions: sessions, settings: settings)
        let keys = groups.flatMap { $0 }
        let types = try await redis.pipeline(keys.map { ["TYPE", RedisArgument($0.key)] }).map { $0.string ?? "" }
        let removed = wrongTypes(groups, types: types)
        if !removed.isEmpty { _ = try await redis.send(["DEL"] + removed.map { RedisArgument($0) }) }
        return removed
    }

    /// The keys these writes and touches use, with the type the cache keeps under each, in
    /// groups that go together: a conversation's list, version string and LangChain twin; a
    /// session hash; a user's session set.
    static func typedKeys(
        _ writes: [CacheWrite],
        sessions: [SessionTouch],
        settings: CacheSettings
    ) -> [[(key: String, type: String)]] {
        var groups: [[(key: String, type: String)]] = writes.map {
            [(settings.recentKey($0.conversationID), "list"), (settings.versionKey($0.conversationID), "string")]
                + (settings.langchain ? [(settings.langchainKey($0.conversationID), "list")] : [])
        }
        for touch in sessions {
            groups.append([(settings.sessionKey(touch.sessionID), "hash")])
            groups.append([(settings.userSessionsKey(touch.userID), "set")])
        }
        return groups
    }

    /// The keys of the groups in which a key holds another type than its own (`types`: what
    /// `TYPE` answered for each key, in order; `none` is fine): every key of such a group.
    static func wrongTypes(_ groups: [[(key: String, type: String)]], types: [String]) -> [String] {
        var position = 0
        var removed: [String] = []
        for group in groups {
            let found = types[position..<position + group.count]
            position += group.count
            let wrong = zip(group, found).contains { expected, type in type != "none" && type != expected.type }
            if wrong { removed += group.map(\.key) }
        }
        return removed
    }

    /// The writes, then the session touches, in order, cut into calls of at most `workPerCall`
    /// (a write larger than that alone in its call). Always at least one call.
    static func split(
        _ writes: [CacheWrite],
        sessions: [SessionTouch],
        workPerCall: Int
    ) -> [(writes: [CacheWrite], sessions: [SessionTouch])] {
        var calls: [(writes: [CacheWrite], sessions: [SessionTouch])] = [([], [])]
        var work = 0
        func makeRoom(for cost: Int) {
            if work > 0, work + cost > workPerCall {
                calls.append(([], []))
                work = 0
            }
            work += cost
        }
        for write in writes {
            makeRoom(for: max(1, write.elements.count))
            calls[calls.count - 1].writes.append(write)
        }
        for touch in sessions {
            makeRoom(for: 1)
            calls[calls.count - 1].sessions.append(touch)
        }
        return calls
    }

    /// One script call: the writes and session touches, then, if no conversation was stale,
    /// `acknowledge`, atomically.
    private static func applyInOneCall(
        _ writes: [CacheWrite],
        sessions: [SessionTouch],
        acknowledge: Acknowledge?,
        settings: CacheSettings,
        redis: RedisConnection
    ) async throws -> Applied {
        let acks = acknowledge?.ids ?? []
        guard !writes.isEmpty || !sessions.isEmpty else { return Applied(stale: [], acknowledged: false) }
        var command = scriptCall(writes, sessions: sessions, acknowledge: acknowledge, settings: settings)
        var reply: RESPValue
        do {
            reply = try await redis.send(command)
        } catch let error as RedisError where error.serverErrorPrefix == "NOSCRIPT" {
            command[0] = "EVAL"
            command[1] = RedisArgument(script)
            reply = try await redis.send(command)
        }
        return applied(reply, writes: writes, acknowledging: !acks.isEmpty)
    }

    /// What the script's reply to a call with these writes says.
    static func applied(_ reply: RESPValue, writes: [CacheWrite], acknowledging: Bool) -> Applied {
        let values = (reply.array ?? []).compactMap { $0.int }.map { Int($0) }
        let stale = values.dropFirst().compactMap { index in writes.indices.contains(index - 1) ? writes[index - 1].conversationID : nil }
        return Applied(stale: stale, acknowledged: acknowledging && values.first == 1)
    }

    /// The `EVALSHA` of the script for these writes and touches, acknowledging `acknowledge`'s
    /// entries when none is stale.
    static func scriptCall(
        _ writes: [CacheWrite],
        sessions: [SessionTouch],
        acknowledge: Acknowledge?,
        settings: CacheSettings
    ) -> [RedisArgument] {
        let acks = acknowledge?.ids ?? []
        var keys: [RedisArgument] = []
        keys.reserveCapacity(3 * writes.count + 2 * sessions.count + 1)
        var arguments: [RedisArgument] = [
            RedisArgument(String(settings.ttlMilliseconds)), RedisArgument(settings.recentSize),
            RedisArgument(writes.count), RedisArgument(sessions.count), RedisArgument(acks.count),
            RedisArgument(settings.langchain ? "1" : "0"),
        ]
        let elementsPerMessage = settings.langchain ? 2 : 1
        arguments.reserveCapacity(
            writes.reduce(8 + 6 * sessions.count + acks.count) { $0 + 3 + elementsPerMessage * $1.elements.count }
        )
        for write in writes {
            keys.append(RedisArgument(settings.recentKey(write.conversationID)))
            keys.append(RedisArgument(settings.versionKey(write.conversationID)))
            if settings.langchain { keys.append(RedisArgument(settings.langchainKey(write.conversationID))) }
            arguments.append(RedisArgument(write.mode.rawValue))
            arguments.append(RedisArgument(String(write.version)))
            arguments.append(RedisArgument(write.elements.count))
            for element in write.elements { arguments.append(RedisArgument(element)) }
            if settings.langchain {
                // Empty: the script converts that element itself.
                for element in write.elements { arguments.append(RedisArgument(LangchainElement.make(fromRecent: element) ?? "")) }
            }
        }
        for touch in sessions {
            keys.append(RedisArgument(settings.sessionKey(touch.sessionID)))
            keys.append(RedisArgument(settings.userSessionsKey(touch.userID)))
            arguments += [
                RedisArgument(touch.sessionID), RedisArgument(touch.userID), RedisArgument(touch.deptID ?? ""),
                RedisArgument(touch.conversationID), RedisArgument(touch.at), RedisArgument(touch.first),
            ]
        }
        if let acknowledge, !acks.isEmpty {
            keys.append(RedisArgument(acknowledge.stream))
            arguments.append(RedisArgument(acknowledge.group))
            for id in acks { arguments.append(RedisArgument(id.description)) }
        }
        var command: [RedisArgument] = ["EVALSHA", RedisArgument(scriptSHA1), RedisArgument(keys.count)]
        command.reserveCapacity(3 + keys.count + arguments.count)
        command += keys
        command += arguments
        return command
    }

    /// The script behind `apply`. KEYS: per write its list and version keys (and its LangChain
    /// list when `langchain` is 1), per session its hash and its user's set, then the stream
    /// when there are entries to acknowledge. ARGV: ttl_ms, recent_size, writes, sessions, acks,
    /// langchain; per write mode, version, count, elements (and, when `langchain` is 1, as many
    /// LangChain elements, an empty one where the script is to convert the element itself);
    /// per session id, user, dept, conversation, latest and earliest time; then the group and
    /// the entry IDs. Returns `{acknowledged (0 or 1), stale write numbers…}`.
    ///
    /// A version key holds `<version> <created_at of the list's last element>`, so the usual
    /// in-order append needs no read of the list. (A bare `<version>`, as older releases wrote,
    /// makes it read the list's last element instead.) Elements of a write are oldest first.
    /// Numbers go to Redis as the strings they came as: Lua would format them as floats.
    ///
    /// The LangChain list is derived from the recent list, element by element (`langchainElement`),
    /// whenever the recent list changes, in the same call: it holds the same messages, newest
    /// first, and moves only when the recent list moves, so it never goes backwards either.
    /// When its length does not follow the recent list's (it expired or was removed apart from
    /// it, or `langchain_cache` was just turned on), it is rebuilt from the recent list.
    static let script = """
        local ttl = ARGV[1]
        local size = tonumber(ARGV[2])
        local trimFrom = ARGV[2] == '0' and '0' or '-' .. ARGV[2]
        local writes = tonumber(ARGV[3])
        local sessions = tonumber(ARGV[4])
        local acks = tonumber(ARGV[5])
        local langchain = ARGV[6] == '1'
        local keysPerWrite = langchain and 3 or 2
        local a = 7
        local stale = {}
        \(langchainScript)
        \(sessionScript)
        local function created(element)
          local _, finish = string.find(element, '"created_at" : "', 1, true)
          if not finish then return '' end
          return string.sub(element, finish + 1, finish + 27)
        end
        -- RPUSHes in chunks (Lua's unpack has a limit); returns the list's new length.
        local function append(list, elements)
          local length = 0
          for i = 1, #elements, 1000 do
            length = redis.call('RPUSH', list, unpack(elements, i, math.min(i + 999, #elements)))
          end
          return length
        end
        local function replace(list, elements)
          redis.call('DEL', list)
          append(list, elements)
        end
        -- The LangChain list of these recent-list elements (oldest first), replacing what it held.
        local function replaceLangchain(key, elements)
          redis.call('DEL', key)
          pushLangchain(key, langchainElements(elements))
        end
        -- The list with the new elements merged in by created_at, the latest `size` kept.
        local function mergeKeepingLatest(list, current, new)
          local merged, times = {}, {}
          if current ~= -1 then
            merged = redis.call('LRANGE', list, 0, -1)
            for i, element in ipairs(merged) do times[i] = created(element) end
          end
          for _, element in ipairs(new) do
            local at = created(element)
            local position = #merged + 1
            while position > 1 and times[position - 1] > at do position = position - 1 end
            table.insert(merged, position, element)
            table.insert(times, position, at)
          end
          local kept = {}
          for i = math.max(1, #merged - size + 1), #merged do kept[#kept + 1] = merged[i] end
          return kept
        end
        for w = 1, writes do
          local list, versionKey = KEYS[keysPerWrite * (w - 1) + 1], KEYS[keysPerWrite * (w - 1) + 2]
          local twin = langchain and KEYS[3 * w] or nil
          local mode, versionText, n = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2])
          local version = tonumber(versionText)
          local new, twinNew = {}, {}
          for i = 1, n do new[i] = ARGV[a + 2 + i] end
          if langchain then
            for i = 1, n do
              local given = ARGV[a + 2 + n + i]
              twinNew[i] = given ~= '' and given or langchainElement(new[i])
            end
            a = a + 3 + 2 * n
          else
            a = a + 3 + n
          end
          -- Written before it is known to apply, which is the usual case: SET ... GET reads the
          -- old version in the same call. Put back below when the write does not apply.
          local written = versionText .. ' ' .. (n > 0 and created(new[n]) or '')
          local stored = redis.call('SET', versionKey, written, 'PX', ttl, 'GET')
          local current, last = -1, nil
          if stored then
            local space = string.find(stored, ' ', 1, true)
            current = tonumber(space and string.sub(stored, 1, space - 1) or stored) or -1
            if space and space < #stored then last = string.sub(stored, space + 1) end
          end
          -- The version key's value once this write is in, when it is not `written`.
          local final = nil
          if current >= version then
            -- Redis already holds this version or a newer one.
            final = stored
          elseif mode == 's' then
            replace(list, new)
            if twin then
              redis.call('DEL', twin)
              pushLangchain(twin, twinNew)
            end
          elseif current == version - 1 or (current == -1 and version == 1) then
            if current == -1 then
              redis.call('DEL', list)
              if twin then redis.call('DEL', twin) end
              last = ''
            elseif not last then
              local element = redis.call('LINDEX', list, -1)
              last = element and created(element) or ''
            end
            if created(new[1]) >= last then
              local length = append(list, new)
              if length > size then redis.call('LTRIM', list, trimFrom, -1) end
              if twin then
                if pushLangchain(twin, twinNew) ~= length then
                  replaceLangchain(twin, redis.call('LRANGE', list, 0, -1))
                elseif length > size then
                  redis.call('LTRIM', twin, 0, size - 1)
                end
              end
            else
              local merged = mergeKeepingLatest(list, current, new)
              replace(list, merged)
              if twin then replaceLangchain(twin, merged) end
              final = versionText .. ' ' .. (#merged > 0 and created(merged[#merged]) or '')
            end
          else
            -- Behind, or ahead of, this delta: the caller follows up with a snapshot.
            stale[#stale + 1] = w
            final = stored or false
          end
          if final == false then
            redis.call('DEL', versionKey)
          elseif final and final ~= written then
            redis.call('SET', versionKey, final, 'PX', ttl)
          end
          -- The lists live as long as their version key (whose TTL the SET above renewed).
          redis.call('PEXPIRE', list, ttl)
          if twin then redis.call('PEXPIRE', twin, ttl) end
        end
        for s = 1, sessions do
          local key, users = KEYS[keysPerWrite * writes + 2 * s - 1], KEYS[keysPerWrite * writes + 2 * s]
          local session, user, dept, conversation, at, earliest =
            ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5]
          a = a + 6
          touchSession(key, ttl, user, dept, conversation, at, earliest)
          redis.call('SADD', users, session)
          redis.call('PEXPIRE', users, ttl)
        end
        local acknowledged = 0
        if acks > 0 and #stale == 0 then
          local stream, group = KEYS[#KEYS], ARGV[a]
          for i = a + 1, a + acks, 1000 do
            redis.call('XACK', stream, group, unpack(ARGV, i, math.min(i + 999, a + acks)))
          end
          acknowledged = 1
        end
        table.insert(stale, 1, acknowledged)
        return stale
        """

    /// The script's part that refreshes a session hash: `last_active` and the fields beside it
    /// move only forward, `created_at` only back, and the TTL is renewed.
    static let sessionScript = """
        local function touchSession(key, ttl, user, dept, conversation, at, earliest)
          local known = redis.call('HMGET', key, 'last_active', 'created_at')
          local last, first = known[1], known[2]
          if not last or at > last then
            redis.call('HSET', key, 'user_id', user, 'dept_id', dept, 'conversation_id', conversation, 'last_active', at)
          end
          if not first or earliest < first then redis.call('HSET', key, 'created_at', earliest) end
          redis.call('PEXPIRE', key, ttl)
        end
        """

    /// The script's part that makes LangChain's message dicts: `langchainElement(element)` turns
    /// a recent-list element into what LangChain's `message_to_dict` writes for that message
    /// (the same bytes as `LangchainElement.make`, which makes the elements of the messages a
    /// write carries), `langchainElements` a list of them, and `pushLangchain(key, elements)`
    /// pushes LangChain elements, oldest first, onto the head of a list (LangChain's own
    /// `LPUSH`), returning its length.
    ///
    /// The recent-list element's fields before `content` hold no free text, and inside
    /// `content` every `"` is escaped, so the first `"content" : ` and the `, "metadata" : `
    /// after it are the fields themselves; `content` is copied as it is, already JSON.
    /// A `tool` message's `tool_call_id` is its metadata's `tool_call_id` when that is a string,
    /// else empty: LangChain cannot load a tool message without one.
    static let langchainScript = """
        local langchainTypes = {user = 'human', assistant = 'ai', system = 'system', tool = 'tool'}
        local function langchainElement(element)
          local id = string.sub(element, 10, 45)
          local _, roleStart = string.find(element, '"role" : "', 46, true)
          local roleEnd = string.find(element, '"', roleStart + 1, true)
          local kind = langchainTypes[string.sub(element, roleStart + 1, roleEnd - 1)] or 'human'
          local _, contentStart = string.find(element, '"content" : ', roleEnd, true)
          local contentEnd, metadataStart = string.find(element, ', "metadata" : ', contentStart, true)
          local extra = ''
          if kind == 'ai' then
            extra = ', "tool_calls": [], "invalid_tool_calls": [], "usage_metadata": null'
          elseif kind == 'tool' then
            local callID = '""'
            local ok, metadata = pcall(cjson.decode, string.sub(element, metadataStart + 1, -2))
            if ok and type(metadata) == 'table' and type(metadata.tool_call_id) == 'string' then
              callID = cjson.encode(metadata.tool_call_id)
            end
            extra = ', "tool_call_id": ' .. callID .. ', "artifact": null, "status": "success"'
          end
          return '{"type": "' .. kind .. '", "data": {"content": ' .. string.sub(element, contentStart + 1, contentEnd - 1)
            .. ', "additional_kwargs": {}, "response_metadata": {}, "type": "' .. kind .. '", "name": null, "id": "'
            .. id .. '"' .. extra .. '}}'
        end
        local function langchainElements(elements)
          local converted = {}
          for i, element in ipairs(elements) do converted[i] = langchainElement(element) end
          return converted
        end
        local function pushLangchain(key, elements)
          local length = 0
          for i = 1, #elements, 1000 do
            length = redis.call('LPUSH', key, unpack(elements, i, math.min(i + 999, #elements)))
          end
          return length
        end
        """

    /// The script's name for `EVALSHA`: its SHA-1, the digest Redis names scripts by.
    static let scriptSHA1 = sha1(script)

    /// A script's name for `EVALSHA`.
    static func sha1(_ script: String) -> String {
        Insecure.SHA1.hash(data: Array(script.utf8)).map { String(format: "%02x", $0) }.joined()
    }
}
