import Foundation
import LocalServers
import RedisClient
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// `historian run` under a stand-in for systemd: the notify socket's messages, the watchdog's
/// pings through a PostgreSQL that is down, busy and frozen, and the health endpoints beside.
@Suite(.serialized)
struct SystemdTests {
    /// The watchdog interval the test asks for: pings every 2 s, a loop stuck after 2 s.
    static let watchdog: Duration = .seconds(4)

    @Test("notify: no READY=1 while PostgreSQL is down, pings while idle and busy, none while it is frozen, STOPPING=1")
    func notifyAndWatchdog() async throws {
        try await TestEnvironment.with { environment in
            try await environment.postgresServer.stop()
            let receiver = try NotifyReceiver()
            defer { receiver.stop() }
            let port = try Loopback.freePort()
            var variables = environment.historianEnvironment
            variables["NOTIFY_SOCKET"] = receiver.name
            variables["WATCHDOG_USEC"] = String(Self.watchdog.components.seconds * 1_000_000)
            variables["HISTORIAN_METRICS_ADDRESS"] = "127.0.0.1:\(port)"
            variables["HISTORIAN_WORKERS"] = "2"
            let redis = try await environment.redis()
            defer { redis.close() }

            try await Daemons.with { daemons in
                let daemon = try daemons.start(["run"], variables: variables)

                // PostgreSQL down: the start waits, says why, and the endpoints answer.
                try await eventually("the endpoint listening", timeout: .seconds(30)) {
                    (try? LoopbackHTTP.get(port: port, path: "/healthz")) != nil
                }
                try await eventually("a status naming PostgreSQL", timeout: .seconds(30)) {
                    receiver.statuses.contains("waiting for PostgreSQL")
                }
                try await Task.sleep(for: .seconds(3))
                #expect(receiver.times(of: "READY=1").isEmpty)
                #expect(receiver.times(of: "WATCHDOG=1").isEmpty, "no pings before READY=1")
                let notReady = try LoopbackHTTP.get(port: port, path: "/readyz")
                #expect(notReady.status == 503)
                #expect(notReady.contentType == "application/json")
                let body = try Self.object(notReady.body)
                #expect((body["missing"] as? [String])?.contains("postgres") == true, "\(notReady.body)")
                #expect(try LoopbackHTTP.get(port: port, path: "/healthz").status == 200)
                #expect(try Prometheus.samples(port: port)["historian_ready"] == 0)
                #expect(daemon.isRunning)

                // PostgreSQL back: READY=1 once, /readyz 200, historian_ready 1.
                try await environment.postgresServer.start()
                try await eventually("READY=1", timeout: .seconds(60)) { !receiver.times(of: "READY=1").isEmpty }
                let ready = try #require(receiver.times(of: "READY=1").first)
                #expect(try LoopbackHTTP.get(port: port, path: "/readyz").status == 200)
                #expect(try LoopbackHTTP.get(port: port, path: "/healthz").status == 200)
                #expect(try Prometheus.samples(port: port)["historian_ready"] == 1)

                // Idle: a ping every half interval.
                try await Task.sleep(for: .seconds(7))
                let idle = receiver.times(of: "WATCHDOG=1").filter { $0 > ready }
                #expect(idle.count >= 3, "\(idle.count) pings in 7 s idle")
                Self.expectRegular(idle, "idle")

                // Busy: 20,000 messages, and the pings keep coming.
                let busyFrom = ContinuousClock.now
                let load = Producer.workload(count: 20_000, conversations: 200, seed: 61)
                try await Producer.append(load, redis: redis)
                try await eventually("the load stored", timeout: .seconds(120)) {
                    try await environment.scalar("SELECT count(*) FROM messages") == load.count
                }
                let busyUntil = ContinuousClock.now
                let busy = receiver.times(of: "WATCHDOG=1").filter { $0 > busyFrom && $0 < busyUntil }
                print("notifyAndWatchdog: \(busy.count) pings while storing \(load.count) messages in \(busyUntil - busyFrom)")
                Self.expectRegular(busy, "busy", spanning: busyFrom..<busyUntil)
                #expect(receiver.statuses.contains { $0.hasPrefix("consuming: ") && $0.contains("messages/s") })

                // Frozen: every PostgreSQL process stopped, more messages arrive. The workers wait
                // on it: the pings stop within a stall limit plus a ping, and /healthz says stuck.
                let postgres = try PostgresProcesses(environment.postgresServer)
                postgres.signal(SIGSTOP)
                let frozen = ContinuousClock.now
                var thawed = false
                defer { if !thawed { postgres.signal(SIGCONT) } }
                let more = Producer.workload(count: 1_000, conversations: 20, seed: 62)
                try await Producer.append(more, redis: redis)
                try await Task.sleep(for: .seconds(10))
                let whileFrozen = receiver.times(of: "WATCHDOG=1").filter { $0 > frozen + Self.watchdog }
                #expect(whileFrozen.isEmpty, "\(whileFrozen.count) pings more than \(Self.watchdog) into the freeze")
                let stuck = try LoopbackHTTP.get(port: port, path: "/healthz")
                #expect(stuck.status == 503, "\(stuck.body)")
                #expect(try Self.object(stuck.body)["status"] as? String == "stuck")
                #expect(receiver.statuses.contains { $0.hasPrefix("stalled: ") }, "\(receiver.statuses.suffix(3))")
                #expect(daemon.isRunning)

                // Thawed: the pings resume and the messages are stored.
                postgres.signal(SIGCONT)
                thawed = true
                let thaw = ContinuousClock.now
                try await eventually("pings again", timeout: .seconds(30)) {
                    receiver.times(of: "WATCHDOG=1").contains { $0 > thaw }
                }
                try await eventually("the messages sent during the freeze stored", timeout: .seconds(90)) {
                    try await environment.scalar("SELECT count(*) FROM messages") == load.count + more.count
                }
                try await eventually("/healthz 200 again", timeout: .seconds(30)) {
                    try LoopbackHTTP.get(port: port, path: "/healthz").status == 200
                }

                // SIGTERM: STOPPING=1, then a clean exit.
                daemon.signal(SIGTERM)
                #expect(try await daemon.wait(timeout: .seconds(60)) == 0)
                #expect(receiver.messages.last?.lines.first == "STOPPING=1")
                #expect(receiver.times(of: "READY=1").count == 1)
            }
        }
    }

    /// Consecutive pings come about half a watchdog interval apart, and never a whole interval:
    /// systemd would not have fired. Over `span`, the first and last pings are within an interval
    /// of its ends.
    static func expectRegular(
        _ pings: [ContinuousClock.Instant],
        _ what: String,
        spanning span: Range<ContinuousClock.Instant>? = nil,
        sourceLocation: SourceLocation = #_sourceLocation
    ) {
        let gaps = zip(pings, pings.dropFirst()).map { $1 - $0 }
        let longest = gaps.max() ?? .zero
        #expect(longest < watchdog, "\(what): longest gap between pings \(longest)", sourceLocation: sourceLocation)
        #expect(
            gaps.allSatisfy { $0 > watchdog / 4 },
            "\(what): pings closer than a quarter interval: \(gaps)",
            sourceLocation: sourceLocation
        )
        if let span {
            #expect(pings.first.map { $0 - span.lowerBound < watchdog } == true, "\(what): first ping", sourceLocation: sourceLocation)
            #expect(pings.last.map { span.upperBound - $0 < watchdog } == true, "\(what): last ping", sourceLocation: sourceLocation)
        }
    }

    static func object(_ body: String) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any])
    }
}

/// A PostgreSQL server's processes: the postmaster and its children, to freeze and thaw.
struct PostgresProcesses {
    let postmaster: pid_t

    init(_ server: PostgresServer) throws {
        postmaster = try #require(server.postmasterPID)
    }

    /// The postmaster's children now.
    var children: [pid_t] { childProcesses(of: postmaster) }

    /// Signals the postmaster first (so it forks no one new), then its children.
    func signal(_ signal: Int32) {
        kill(postmaster, signal)
        for child in children { kill(child, signal) }
    }
}
