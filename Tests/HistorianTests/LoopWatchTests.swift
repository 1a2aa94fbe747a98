import PostgresClient
import RedisClient
import Testing

@testable import Historian

/// Which loops count as stuck: waiting for an answer longer than the limit, timeouts included.
struct LoopWatchTests {
    let start = ContinuousClock.now
    let quick = Backoff(base: .milliseconds(1), cap: .milliseconds(1))

    @Test func aLoopIsStuckOnlyWhileItWaitsForAnAnswerPastTheLimit() {
        let watch = LoopWatch()
        let worker = watch.register("worker-0")
        let probe = watch.register("probe-redis")
        #expect(watch.stuck(at: start + .seconds(60), limit: .seconds(2)).isEmpty)
        worker.awaiting(at: start)
        probe.awaiting(at: start + .seconds(1))
        #expect(watch.stuck(at: start + .seconds(2), limit: .seconds(2)).isEmpty)
        #expect(watch.stuck(at: start + .milliseconds(2500), limit: .seconds(2)) == [.init(name: "worker-0", waited: .milliseconds(2500))])
        // A second attempt keeps the first one's start: the loop has waited all along.
        worker.awaiting(at: start + .seconds(3))
        #expect(watch.stuck(at: start + .seconds(4), limit: .seconds(2)).map(\.name) == ["worker-0", "probe-redis"])
        worker.answered()
        #expect(watch.stuck(at: start + .seconds(4), limit: .seconds(2)).map(\.name) == ["probe-redis"])
    }

    @Test func retryingReportsEachAttemptAndOnlyAnswersEndTheWait() async throws {
        let watch = LoopWatch()
        let loop = watch.register("worker-0")
        var attempts = 0
        // A timeout is no answer: the loop is still waiting when the next attempt starts.
        _ = try await retrying(.store, logger: .init(label: "test"), metrics: .disabled, loop: loop, backoff: quick) {
            attempts += 1
            #expect(watch.stuck(at: .now + .seconds(10), limit: .seconds(5)).count == 1)
            if attempts == 1 { throw PostgresError(code: .timeout, message: "test: no answer") }
            return attempts
        }
        #expect(attempts == 2)
        #expect(watch.stuck(at: .now + .seconds(3600), limit: .seconds(1)).isEmpty)

        // A refusal is an answer: between attempts the loop waits for nothing.
        var refused = false
        _ = try await retrying(.read, logger: .init(label: "test"), metrics: .disabled, loop: loop, backoff: quick) {
            if !refused {
                refused = true
                throw RedisError(code: .connectionFailed, message: "test: connection refused")
            }
            return 0
        }
        #expect(watch.stuck(at: .now + .seconds(3600), limit: .seconds(1)).isEmpty)
    }

    @Test func aTimeoutLeavesTheLoopWaitingUntilSomethingAnswers() async throws {
        let watch = LoopWatch()
        let loop = watch.register("worker-0")
        await #expect(throws: PostgresError.self) {
            try await retrying(
                .store, logger: .init(label: "test"), metrics: .disabled, loop: loop, backoff: quick,
                rethrowing: { _ in true }
            ) { () async throws -> Int in throw PostgresError(code: .timeout, message: "test: no answer") }
        }
        #expect(watch.stuck(at: .now + .seconds(10), limit: .seconds(5)).map(\.name) == ["worker-0"])
    }

    @Test func onlyTimeoutsAreUnanswered() {
        #expect(FailureKind.isUnanswered(PostgresError(code: .timeout, message: "")))
        #expect(FailureKind.isUnanswered(RedisError(code: .timeout, message: "")))
        #expect(!FailureKind.isUnanswered(PostgresError(code: .connectionFailed, message: "refused")))
        #expect(!FailureKind.isUnanswered(RedisError(code: .server, message: "LOADING")))
        #expect(!FailureKind.isUnanswered(CancellationError()))
    }
}
