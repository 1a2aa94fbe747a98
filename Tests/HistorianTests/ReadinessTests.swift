import Foundation
import Testing

@testable import Historian

struct ReadinessTests {
    @Test func readyOnlyWithBothServersAndTheCurrentSchema() {
        #expect(Readiness(postgres: .reachable, redis: .reachable, schema: .current).isReady)
        #expect(!Readiness().isReady)
        #expect(Readiness().missing == ["postgres", "redis", "schema"])
        #expect(Readiness(postgres: .unreachable, redis: .reachable, schema: .unknown).missing == ["postgres", "schema"])
        #expect(Readiness(postgres: .reachable, redis: .reachable, schema: .behind(recorded: 1, needed: 2)).missing == ["schema"])
    }

    @Test func theBodyNamesWhatIsMissing() throws {
        let readiness = Readiness(postgres: .unreachable, redis: .reachable, schema: .unknown)
        let body = try #require(try JSONSerialization.jsonObject(with: Data(readiness.json)) as? [String: Any])
        #expect(body["ready"] as? Bool == false)
        #expect(body["missing"] as? [String] == ["postgres", "schema"])
        #expect(
            body["checks"] as? [String: String] == [
                "postgres": "unreachable", "redis": "reachable", "schema": "unknown until PostgreSQL answers",
            ]
        )
    }

    @Test func theSnapshotIsReadyOnlyOncePrepared() {
        let health = DaemonHealth(stallLimit: .seconds(5))
        health.update(Readiness(postgres: .reachable, redis: .reachable, schema: .current))
        #expect(!health.snapshot().isReady)
        health.markPrepared()
        #expect(health.snapshot().isReady)
        health.recordProcessed(3)
        health.recordProcessed(4)
        #expect(health.snapshot().processed == 7)
        let worker = health.loops.register("worker-0")
        worker.awaiting(at: .now - .seconds(6))
        #expect(!health.snapshot().isLive)
        #expect(health.snapshot().stuck.map(\.name) == ["worker-0"])
    }
}
