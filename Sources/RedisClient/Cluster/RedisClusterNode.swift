/// One node of a Redis Cluster, as `CLUSTER SLOTS` describes it.
public struct RedisClusterNode: Sendable, Hashable, CustomStringConvertible {
    /// Whether a node serves its slots or holds a copy of a master's.
    public enum Role: Sendable, Hashable {
        case master
        case replica
    }

    /// The node's 40-character ID.
    public var id: String
    /// Where clients reach it.
    public var endpoint: RedisConfiguration.Endpoint
    /// Master or replica.
    public var role: Role
    /// The slots a master serves, or a replica copies, as ranges in ascending order.
    public var slots: [ClosedRange<Int>]

    public init(id: String, endpoint: RedisConfiguration.Endpoint, role: Role, slots: [ClosedRange<Int>]) {
        self.id = id
        self.endpoint = endpoint
        self.role = role
        self.slots = slots
    }

    /// `master 127.0.0.1:7001 (0-5460)`: role, endpoint and slot ranges.
    public var description: String {
        let ranges = slots.map { $0.count == 1 ? "\($0.lowerBound)" : "\($0.lowerBound)-\($0.upperBound)" }
        return "\(role) \(endpoint) (\(ranges.joined(separator: ",")))"
    }
}
