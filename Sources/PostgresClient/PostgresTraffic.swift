/// What a connection sent to PostgreSQL: statements, and the round trips they took.
///
/// A round trip is one wait for the server's answer to what was sent before it. A connection
/// made with a `PostgresTrafficObserver` reports each call's share as the call goes out:
/// - `query`: 1 statement, 1 round trip;
/// - `pipeline` of n statements: n statements, 1 round trip;
/// - `execute`: 1 round trip, and as many statements as the server ran (one result each);
/// - `copyIn`: 1 statement, 2 round trips (the wait for the server to start the `COPY`, then
///   the data and the wait for its result);
/// - preparing a named statement, by `prepare` or on its first use: no statement, 1 round trip.
///
/// A call counts once its request has gone out, whether or not it then succeeds (`execute`,
/// once its results are in).
public struct PostgresTraffic: Sendable, Hashable {
    public var statements: Int
    public var roundTrips: Int

    public init(statements: Int = 0, roundTrips: Int = 0) {
        self.statements = statements
        self.roundTrips = roundTrips
    }

    public static func + (left: PostgresTraffic, right: PostgresTraffic) -> PostgresTraffic {
        PostgresTraffic(statements: left.statements + right.statements, roundTrips: left.roundTrips + right.roundTrips)
    }

    public static func += (left: inout PostgresTraffic, right: PostgresTraffic) {
        left = left + right
    }
}

/// Told each call's `PostgresTraffic` on the connection's thread, in the middle of the call:
/// it should do no more than add to a counter.
public typealias PostgresTrafficObserver = @Sendable (PostgresTraffic) -> Void
