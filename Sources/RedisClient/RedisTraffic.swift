/// What a connection sent to Redis: commands, and the round trips they took.
///
/// A round trip is one write of commands followed by the wait for all their replies. A
/// connection made with a `RedisTrafficObserver` reports each call's share as the call goes
/// out: `send` is 1 command in 1 round trip, a `pipeline` of n commands n commands in 1 round
/// trip, and so are `AUTH` and `SELECT` when `connect` sends them. A call counts once its
/// commands are queued for writing, whether or not it then succeeds.
public struct RedisTraffic: Sendable, Hashable {
    public var commands: Int
    public var roundTrips: Int

    public init(commands: Int = 0, roundTrips: Int = 0) {
        self.commands = commands
        self.roundTrips = roundTrips
    }

    public static func + (left: RedisTraffic, right: RedisTraffic) -> RedisTraffic {
        RedisTraffic(commands: left.commands + right.commands, roundTrips: left.roundTrips + right.roundTrips)
    }

    public static func += (left: inout RedisTraffic, right: RedisTraffic) {
        left = left + right
    }
}

/// Told each call's `RedisTraffic` on the connection's thread, in the middle of the call: it
/// should do no more than add to a counter.
public typealias RedisTrafficObserver = @Sendable (RedisTraffic) -> Void
