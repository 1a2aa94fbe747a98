@testable import Historian
import Testing

@testable import SystemdNotify

/// The notify decisions, without a socket: what is sent, and when, for given health snapshots.
@Suite struct NotifyStateMachineTests {
    let start = ContinuousClock.now

    static let ready = Readiness(postgres: .reachable, redis: .reachable, schema: .current)

    func snapshot(
        _ readiness: Readiness = NotifyStateMachineTests.ready,
        prepared: Bool = true,
        stuck: [LoopWatch.Stuck] = [],
        processed: Int = 0,
        lag: Int? = 0
    ) -> DaemonHealth.Snapshot {
        DaemonHealth.Snapshot(readiness: readiness, prepared: prepared, stuck: stuck, processed: processed, lag: lag)
    }

    @Test(
        "no READY=1 before both servers answer, the schema is current and the ingest is prepared; STATUS says what it waits for",
        arguments: [
            (Readiness(postgres: .unreachable, redis: .reachable), true, "waiting for PostgreSQL"),
            (Readiness(postgres: .reachable, redis: .unreachable, schema: .current), true, "waiting for Redis"),
            (Readiness(postgres: .unreachable, redis: .unreachable), true, "waiting for PostgreSQL and Redis"),
            (Readiness(postgres: .reachable, redis: .reachable, schema: .missing), true, "waiting for the schema migration"),
            (
                Readiness(postgres: .reachable, redis: .reachable, schema: .ahead(recorded: 9, needed: 2)), true,
                "cannot start: schema version 9 is newer than this build's 2; upgrade Historian"
            ),
            (NotifyStateMachineTests.ready, false, "preparing the consumer group"),
            (Readiness(), true, "checking PostgreSQL and Redis"),
        ]
    )
    func notReady(readiness: Readiness, prepared: Bool, status: String) {
        var machine = NotifyStateMachine(watchdogInterval: .seconds(4))
        let first = machine.tick(at: start, snapshot(readiness, prepared: prepared))
        #expect(first.message == "STATUS=" + status)
        #expect(first.next == start + .seconds(1))
        // The same state again: systemd already shows it, nothing is sent.
        let second = machine.tick(at: start + .seconds(1), snapshot(readiness, prepared: prepared))
        #expect(second.message == nil)
        #expect(machine.phase == .starting)
    }

    @Test("READY=1 once, then WATCHDOG=1 every half interval while live, none while a loop is stuck, again after")
    func readyAndWatchdog() {
        var machine = NotifyStateMachine(watchdogInterval: .seconds(4), statusEvery: .seconds(60))
        #expect(machine.tick(at: start, snapshot(Readiness(postgres: .unreachable))).message == "STATUS=waiting for PostgreSQL")
        let ready = machine.tick(at: start + .seconds(1), snapshot(lag: 7))
        #expect(ready.message == "READY=1\nSTATUS=consuming: measuring the rate, lag 7")
        #expect(ready.next == start + .seconds(3))

        // Ticks between pings send nothing; a ping is due every 2 s.
        #expect(machine.tick(at: start + .seconds(2), snapshot(lag: 7)).message == nil)
        let ping = machine.tick(at: start + .seconds(3), snapshot(lag: 7))
        #expect(ping.message == "WATCHDOG=1")
        #expect(ping.next == start + .seconds(5))

        // A worker stuck: no ping, and the status says who and how long.
        let stuck = [LoopWatch.Stuck(name: "worker-1", waited: .seconds(12))]
        let stalled = machine.tick(at: start + .seconds(5), snapshot(stuck: stuck, lag: 40))
        #expect(stalled.message == "STATUS=stalled: worker-1 has waited 12 s for a server's answer: measuring the rate, lag 40")
        #expect(machine.tick(at: start + .seconds(7), snapshot(stuck: stuck, lag: 40)).message?.contains("WATCHDOG") != true)

        // Answers again: the pings resume at the next half interval.
        let resumed = machine.tick(at: start + .seconds(9), snapshot(lag: 0))
        #expect(resumed.message == "WATCHDOG=1\nSTATUS=consuming: measuring the rate, lag 0")
        #expect(machine.phase == .ready)
    }

    @Test("a late tick does not shift the pings: each is due a half interval after the one before")
    func latePing() {
        var machine = NotifyStateMachine(watchdogInterval: .seconds(10), statusEvery: .seconds(600))
        _ = machine.tick(at: start, snapshot())
        let late = machine.tick(at: start + .milliseconds(5400), snapshot())
        #expect(late.message == "WATCHDOG=1")
        #expect(late.next == start + .seconds(10))
    }

    @Test("STATUS= carries the rate of finished entries over each status interval, and the lag")
    func rate() {
        var machine = NotifyStateMachine(watchdogInterval: nil, statusEvery: .seconds(5))
        let ready = machine.tick(at: start, snapshot(processed: 1000, lag: nil))
        #expect(ready.message == "READY=1\nSTATUS=consuming: measuring the rate, lag unknown")
        #expect(ready.next == start + .seconds(5))
        let first = machine.tick(at: start + .seconds(5), snapshot(processed: 11_000, lag: 250))
        #expect(first.message == "STATUS=consuming: 2000 messages/s, lag 250")
        // Unchanged words in between send nothing; the next interval refreshes the line.
        let idle = machine.tick(at: start + .seconds(10), snapshot(processed: 11_000, lag: 0))
        #expect(idle.message == "STATUS=consuming: 0 messages/s, lag 0")
    }

    @Test("without a watchdog interval nothing pings")
    func noWatchdog() {
        var machine = NotifyStateMachine(watchdogInterval: nil, statusEvery: .seconds(1))
        _ = machine.tick(at: start, snapshot())
        for second in 1...10 {
            #expect(machine.tick(at: start + .seconds(second), snapshot()).message?.contains("WATCHDOG") == false)
        }
    }

    @Test("a server lost after ready is in the status; the pings go on while loops get answers")
    func outageAfterReady() {
        var machine = NotifyStateMachine(watchdogInterval: .seconds(2), statusEvery: .seconds(60))
        _ = machine.tick(at: start, snapshot())
        let down = machine.tick(at: start + .seconds(1), snapshot(Readiness(postgres: .unreachable, redis: .reachable), lag: 9))
        #expect(down.message == "WATCHDOG=1\nSTATUS=waiting for PostgreSQL: measuring the rate, lag 9")
    }

    @Test("the watchdog interval comes from WATCHDOG_USEC, only for this process")
    func watchdogEnvironment() {
        #expect(SystemdNotifier.watchdogInterval(["WATCHDOG_USEC": "4000000"]) == .seconds(4))
        #expect(SystemdNotifier.watchdogInterval(["WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"]) == nil)
        #expect(SystemdNotifier.watchdogInterval(["WATCHDOG_USEC": "0"]) == nil)
        #expect(SystemdNotifier.watchdogInterval(["WATCHDOG_USEC": "soon"]) == nil)
        #expect(SystemdNotifier.watchdogInterval([:]) == nil)
    }
}
