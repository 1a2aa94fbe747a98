import Synchronization
import Testing

@testable import Historian

struct ReadTurnTests {
    /// Counts who is inside the turn at once, and the most there ever were.
    final class Occupancy: Sendable {
        private let state = Mutex((now: 0, most: 0, order: [Int]()))

        func enter(_ who: Int) {
            state.withLock {
                $0.now += 1
                $0.most = max($0.most, $0.now)
                $0.order.append(who)
            }
        }

        func leave() { state.withLock { $0.now -= 1 } }
        var most: Int { state.withLock { $0.most } }
        var order: [Int] { state.withLock { $0.order } }
    }

    @Test func oneHolderAtATime() async throws {
        let turn = ReadTurn()
        let occupancy = Occupancy()
        try await withThrowingTaskGroup { group in
            for who in 0..<8 {
                group.addTask {
                    for _ in 0..<50 {
                        try await turn.withTurn {
                            occupancy.enter(who)
                            await Task.yield()
                            try await Task.sleep(for: .microseconds(50))
                            occupancy.leave()
                        }
                    }
                }
            }
            try await group.waitForAll()
        }
        #expect(occupancy.most == 1)
        #expect(occupancy.order.count == 400)
    }

    @Test func waitersAreServedInArrivalOrder() async throws {
        let turn = ReadTurn()
        let occupancy = Occupancy()
        let holding = AsyncStream<Void>.makeStream()
        let letGo = AsyncStream<Void>.makeStream()
        try await withThrowingTaskGroup { group in
            group.addTask {
                try await turn.withTurn {
                    holding.continuation.yield()
                    for await _ in letGo.stream { break }
                    occupancy.enter(0)
                    occupancy.leave()
                }
            }
            for await _ in holding.stream { break }
            for who in 1...4 {
                group.addTask { try await turn.withTurn { occupancy.enter(who); occupancy.leave() } }
                // Each waiter queues before the next one starts.
                try await Self.waitUntil { turn.waiting == who }
            }
            letGo.continuation.yield()
            try await group.waitForAll()
        }
        #expect(occupancy.order == [0, 1, 2, 3, 4])
    }

    @Test func aCancelledWaiterLeavesTheQueueAndTheTurnPassesOn() async throws {
        let turn = ReadTurn()
        let holding = AsyncStream<Void>.makeStream()
        let letGo = AsyncStream<Void>.makeStream()
        let holder = Task {
            try await turn.withTurn {
                holding.continuation.yield()
                for await _ in letGo.stream { break }
            }
        }
        for await _ in holding.stream { break }
        let cancelled = Task { try await turn.withTurn { "ran" } }
        try await Self.waitUntil { turn.waiting == 1 }
        let next = Task { try await turn.withTurn { "ran" } }
        try await Self.waitUntil { turn.waiting == 2 }

        cancelled.cancel()
        await #expect(throws: CancellationError.self) { try await cancelled.value }
        #expect(turn.waiting == 1)

        letGo.continuation.yield()
        try await holder.value
        #expect(try await next.value == "ran")
        #expect(turn.waiting == 0)
        // Free again: a new holder gets it at once.
        #expect(try await turn.withTurn { "again" } == "again")
    }

    @Test func aTaskCancelledBeforeItAsksNeverRuns() async throws {
        let turn = ReadTurn()
        let task = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            return try await turn.withTurn { "ran" }
        }
        await #expect(throws: CancellationError.self) { try await task.value }
        #expect(try await turn.withTurn { "free" } == "free")
    }

    @Test func theTurnIsReleasedWhenTheBodyThrows() async throws {
        struct Failed: Error {}
        let turn = ReadTurn()
        await #expect(throws: Failed.self) { try await turn.withTurn { throw Failed() } }
        #expect(try await turn.withTurn { "free" } == "free")
    }

    static func waitUntil(_ condition: () -> Bool) async throws {
        let deadline = ContinuousClock.now + .seconds(10)
        while !condition() {
            guard ContinuousClock.now < deadline else {
                Issue.record("condition not reached in 10 s")
                return
            }
            try await Task.sleep(for: .milliseconds(1))
        }
    }
}
