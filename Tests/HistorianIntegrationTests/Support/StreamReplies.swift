import Foundation
import RedisClient

/// An `XADD` of `fields` to `stream` (`MAXLEN` first when given), values as bytes.
func xadd(_ fields: [(String, [UInt8])], to stream: String = "chat:messages", maxlen: Int? = nil) -> [RedisArgument] {
    let trim: [RedisArgument] = maxlen.map { ["MAXLEN", RedisArgument($0)] } ?? []
    return ["XADD", RedisArgument(stream)] + trim + ["*"]
        + fields.flatMap { [RedisArgument($0.0), RedisArgument($0.1)] }
}

/// An `XADD` of `fields` to `stream` (`MAXLEN` first when given), values as text.
func xadd(_ fields: [(String, String)], to stream: String = "chat:messages", maxlen: Int? = nil) -> [RedisArgument] {
    xadd(fields.map { ($0.0, Array($0.1.utf8)) }, to: stream, maxlen: maxlen)
}

/// One stream entry as `XRANGE` returns it: its ID and its fields in order, values as bytes.
struct StreamRecord: Hashable {
    var id: String
    var names: [String]
    var values: [[UInt8]]

    var fields: [(String, [UInt8])] { Array(zip(names, values)) }

    /// An element of an `XRANGE` or `XREADGROUP` reply, `[id, [name, value, …]]`.
    init?(_ element: RESPValue) {
        guard let parts = element.array, parts.count == 2, let id = parts[0].string, let flat = parts[1].array else {
            return nil
        }
        self.id = id
        names = stride(from: 0, to: flat.count - 1, by: 2).map { flat[$0].string ?? "?" }
        values = stride(from: 0, to: flat.count - 1, by: 2).map { flat[$0 + 1].bytes ?? [] }
    }

    /// The first value of field `name`, as UTF-8 text (nil if absent or not UTF-8).
    func value(_ name: String) -> String? {
        names.firstIndex(of: name).flatMap { String(validating: values[$0], as: UTF8.self) }
    }

    /// Every field as text, the first value of each name.
    var strings: [String: String] {
        var strings: [String: String] = [:]
        for (name, value) in zip(names, values) where strings[name] == nil {
            strings[name] = String(decoding: value, as: UTF8.self)
        }
        return strings
    }
}

/// The entries of `stream` from `start` to `end` (`XRANGE`).
func streamRecords(
    _ redis: RedisConnection,
    _ stream: String,
    from start: String = "-",
    to end: String = "+"
)
    async throws -> [StreamRecord]
{
    let reply = try await redis.send("XRANGE", RedisArgument(stream), RedisArgument(start), RedisArgument(end))
    return try (reply.array ?? []).map { element in
        guard let record = StreamRecord(element) else { throw UnexpectedReply(reply: "\(element)") }
        return record
    }
}

struct UnexpectedReply: Error, CustomStringConvertible {
    var reply: String
    var description: String { "unexpected reply: \(reply)" }
}

/// A flat `[key, value, …]` reply (`XINFO`, `HGETALL`) as a dictionary.
func replyPairs(_ reply: RESPValue) -> [String: RESPValue] {
    let flat = reply.array ?? []
    var pairs: [String: RESPValue] = [:]
    var index = 0
    while index + 1 < flat.count {
        if let key = flat[index].string { pairs[key] = flat[index + 1] }
        index += 2
    }
    return pairs
}

/// A consumer group's state from `XINFO GROUPS`.
struct GroupState {
    var pending: Int
    var entriesRead: Int?
    var lag: Int?
    var lastDelivered: String?

    /// The group `name` of `stream`; nil while either does not exist.
    static func of(
        _ redis: RedisConnection,
        stream: String = "chat:messages",
        name: String = "historian"
    )
        async throws -> GroupState?
    {
        guard let groups = try? await redis.send("XINFO", "GROUPS", RedisArgument(stream)).array else { return nil }
        for group in groups {
            let info = replyPairs(group)
            guard info["name"]?.string == name else { continue }
            return GroupState(
                pending: Int(info["pending"]?.int ?? -1),
                entriesRead: info["entries-read"]?.int.map(Int.init),
                lag: info["lag"]?.int.map(Int.init),
                lastDelivered: info["last-delivered-id"]?.string
            )
        }
        return nil
    }

    /// Entries the group `historian` has acknowledged: read minus pending.
    static func acknowledged(_ redis: RedisConnection) async throws -> Int {
        guard let group = try await of(redis), let read = group.entriesRead else { return 0 }
        return read - group.pending
    }
}

/// `XINFO STREAM`: entries ever added, and the last ID generated.
func streamInfo(
    _ redis: RedisConnection,
    stream: String = "chat:messages"
) async throws
    -> (entriesAdded: Int, lastGenerated: String?)
{
    let info = replyPairs(try await redis.send("XINFO", "STREAM", RedisArgument(stream)))
    return (Int(info["entries-added"]?.int ?? -1), info["last-generated-id"]?.string)
}

/// The length of the dead-letter stream `chat:messages:dlq` (0 while it does not exist).
func deadLetterCount(_ redis: RedisConnection) async throws -> Int {
    Int(try await redis.send("XLEN", "chat:messages:dlq").int ?? -1)
}

/// How many times Redis has served each command since its start or `CONFIG RESETSTAT`, by lower-case
/// name (`INFO commandstats`).
func commandCalls(_ redis: RedisConnection) async throws -> [String: Int] {
    let info = try await redis.send("INFO", "commandstats").string ?? ""
    var calls: [String: Int] = [:]
    for line in info.split(whereSeparator: \.isNewline) where line.hasPrefix("cmdstat_") {
        let name = line.dropFirst("cmdstat_".count).prefix { $0 != ":" }
        if let range = line.range(of: "calls="), let count = Int(line[range.upperBound...].prefix { $0.isNumber }) {
            calls[String(name)] = count
        }
    }
    return calls
}
