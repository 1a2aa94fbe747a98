import Gzip

/// The shard a frontend writes a message to (contract §9): `crc32(conversation_id) mod N`, which
/// keeps each conversation on one shard, so its messages reach Historian in the order they were
/// written.
public enum StreamShard {
    /// The index of the shard for `conversationID`, of `count` shards.
    public static func index(conversationID: String, count: Int) -> Int {
        guard count > 1 else { return 0 }
        return Int(crc32(Array(conversationID.utf8)) % UInt32(count))
    }

    /// The key of shard `index` of `stream`: `<stream>:{<index>}`, its number a hash tag.
    public static func key(_ stream: String, index: Int) -> String {
        "\(stream):{\(index)}"
    }

    /// `stream` alone for one shard; `<stream>:{0}` … `<stream>:{count-1}` for more, each with
    /// the same group and dead-letter stream.
    public static func streams(of stream: IngestStream, count: Int) -> [IngestStream] {
        guard count > 1 else { return [stream] }
        return (0..<count).map {
            IngestStream(stream: key(stream.stream, index: $0), group: stream.group, dlqStream: stream.dlqStream)
        }
    }
}
