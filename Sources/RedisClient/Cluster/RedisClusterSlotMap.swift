/// Which master serves each hash slot, and the replicas of each, as one `CLUSTER SLOTS` reply described them.
///
/// A value: it is replaced whole when the client relearns the map, never patched, so every call routes by one
/// consistent view. Slots that no master served when it was learnt (during a failover, say) have no owner here.
public struct RedisClusterSlotMap: Sendable, Hashable {
    /// For each slot, the index in `masters` of the master serving it, or -1.
    private var owners: [Int16]
    /// The masters that serve at least one slot, in the order `CLUSTER SLOTS` first named them.
    public private(set) var masters: [RedisClusterNode]
    /// The replicas of those masters.
    public private(set) var replicas: [RedisClusterNode]

    /// Every node: the masters, then the replicas.
    public var nodes: [RedisClusterNode] {
        masters + replicas
    }

    /// How many of the 16384 slots have a master.
    public var servedSlotCount: Int {
        owners.count { $0 >= 0 }
    }

    /// The master serving `slot`, if any did when the map was learnt.
    public func master(serving slot: RedisHashSlot) -> RedisClusterNode? {
        let owner = owners[slot.value]
        return owner < 0 ? nil : masters[Int(owner)]
    }

    /// Parses a `CLUSTER SLOTS` reply (Redis 7.0: each range is `[start, end, master, replica…]`, each node
    /// `[ip, port, id, metadata…]`).
    ///
    /// `replyingHost` is the host of the node that answered: an empty IP means "the host you asked", as the
    /// specification says. A node whose endpoint is unknown (`?`) is left out; a master left out leaves its slots
    /// without an owner. Throws ``RedisError/Code/protocolError`` for a reply of another shape.
    init(clusterSlotsReply reply: RESPValue, replyingHost: String) throws(RedisError) {
        guard let ranges = reply.array else {
            throw Self.malformed("the reply is not an array")
        }
        owners = Array(repeating: -1, count: RedisHashSlot.count)
        masters = []
        replicas = []
        var masterIndex: [String: Int] = [:]
        var replicaIndex: [String: Int] = [:]
        for range in ranges {
            guard let fields = range.array, fields.count >= 3,
                let start = fields[0].int, let end = fields[1].int,
                start >= 0, start <= end, end < RedisHashSlot.count
            else {
                throw Self.malformed("a slot range is not [start, end, master, replicas…]")
            }
            let slots = Int(start)...Int(end)
            guard let master = try Self.node(fields[2], role: .master, replyingHost: replyingHost) else { continue }
            let index: Int
            if let known = masterIndex[master.id] {
                index = known
            } else {
                index = masters.count
                masterIndex[master.id] = index
                masters.append(master)
            }
            masters[index].slots.append(slots)
            for slot in slots {
                owners[slot] = Int16(index)
            }
            for field in fields.dropFirst(3) {
                guard let replica = try Self.node(field, role: .replica, replyingHost: replyingHost) else { continue }
                if let known = replicaIndex[replica.id] {
                    replicas[known].slots.append(slots)
                } else {
                    replicaIndex[replica.id] = replicas.count
                    replicas.append(replica)
                    replicas[replicas.count - 1].slots.append(slots)
                }
            }
        }
        for index in masters.indices {
            masters[index].slots.sort { $0.lowerBound < $1.lowerBound }
        }
        for index in replicas.indices {
            replicas[index].slots.sort { $0.lowerBound < $1.lowerBound }
        }
    }

    /// One `[ip, port, id, …]` element; `nil` when its endpoint is unknown.
    private static func node(
        _ value: RESPValue,
        role: RedisClusterNode.Role,
        replyingHost: String
    ) throws(RedisError) -> RedisClusterNode? {
        guard let fields = value.array, fields.count >= 3,
            let host = fields[0].string, let port = fields[1].int, let id = fields[2].string
        else {
            throw malformed("a node is not [ip, port, id, …]")
        }
        guard host != "?", (1...65535).contains(port) else { return nil }
        let endpoint = RedisConfiguration.Endpoint.tcp(host: host.isEmpty ? replyingHost : host, port: Int(port))
        return RedisClusterNode(id: id, endpoint: endpoint, role: role, slots: [])
    }

    private static func malformed(_ reason: String) -> RedisError {
        RedisError(code: .protocolError, message: "unexpected CLUSTER SLOTS reply: \(reason)")
    }
}
