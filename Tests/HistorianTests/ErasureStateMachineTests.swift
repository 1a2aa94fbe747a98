import Testing

@testable import Historian

/// The order of an erasure's steps, the settle wait, and where a rerun goes on from, without
/// servers.
struct ErasureStateMachineTests {
    static let settle: Duration = .seconds(2)
    static let plan = ErasurePlan(
        conversations: ["0193aa00-0000-7000-8000-000000000001"],
        files: ["/archive/2025/01/01/0193aa00-0000-7000-8000-000000000001.jsonl.gz"],
        sessions: ["s-1"]
    )

    static func counts(_ values: [Int]) -> ErasureCounts {
        var counts = ErasureCounts()
        counts.values = values
        return counts
    }

    /// Runs the machine to its end as `Erasure` would, with every step succeeding and no time
    /// passing but the waits; returns the actions in order.
    static func drive(
        _ machine: inout ErasureStateMachine,
        from start: ContinuousClock.Instant
    ) -> [ErasureStateMachine.Action] {
        var now = start
        var actions: [ErasureStateMachine.Action] = []
        for _ in 0..<20 {
            let action = machine.nextAction(now: now)
            actions.append(action)
            switch action {
            case .open:
                machine.opened(
                    at: .opened,
                    resumed: false,
                    plan: nil,
                    removed: ErasureCounts(),
                    sinceRowsDeleted: nil,
                    now: now
                )
            case .deleteRows:
                machine.rowsDeleted(plan, removed: counts([1, 10, 2, 1, 0, 0, 0]), now: now)
            case .removeKeys(_, let again):
                machine.recorded(again ? .keysRemovedAgain : .keysRemoved, removed: machine.removed)
            case .removeFiles:
                machine.recorded(.filesRemoved, removed: machine.removed)
            case .wait(let until):
                now = until
            case .removeDeadLetters:
                machine.recorded(.deadLettersRemoved, removed: machine.removed)
            case .close:
                machine.closed()
            case .done:
                return actions
            }
        }
        Issue.record("the machine did not end: \(actions)")
        return actions
    }

    @Test func aNewErasureRunsEveryStepInOrderAndWaitsBeforeTheDeadLetters() {
        var machine = ErasureStateMachine(settle: Self.settle)
        let start = ContinuousClock.now
        let actions = Self.drive(&machine, from: start)
        #expect(
            actions == [
                .open, .deleteRows, .removeKeys(Self.plan, again: false), .removeFiles(Self.plan),
                .wait(until: start + Self.settle), .removeDeadLetters, .removeKeys(Self.plan, again: true), .close,
                .done,
            ]
        )
        #expect(machine.resumedAfter == nil)
        #expect(machine.removed == Self.counts([1, 10, 2, 1, 0, 0, 0]))
    }

    @Test func noWaitOnceTheSettleTimeHasPassed() {
        var machine = ErasureStateMachine(settle: Self.settle)
        let start = ContinuousClock.now
        machine.opened(
            at: .opened,
            resumed: false,
            plan: nil,
            removed: ErasureCounts(),
            sinceRowsDeleted: nil,
            now: start
        )
        machine.rowsDeleted(Self.plan, removed: ErasureCounts(), now: start)
        machine.recorded(.keysRemoved, removed: ErasureCounts())
        machine.recorded(.filesRemoved, removed: ErasureCounts())
        #expect(machine.nextAction(now: start + .seconds(1)) == .wait(until: start + Self.settle))
        #expect(machine.nextAction(now: start + Self.settle) == .removeDeadLetters)
    }

    /// For each step an interrupted run recorded: the step after it comes next, with the
    /// journal's plan and counts.
    @Test(arguments: ErasureStep.allCases)
    func aRerunGoesOnAfterTheRecordedStep(_ recorded: ErasureStep) {
        var machine = ErasureStateMachine(settle: Self.settle)
        let now = ContinuousClock.now
        #expect(machine.nextAction(now: now) == .open)
        let removed = Self.counts([2, 20, 4, 1, 2, 7, 1])
        machine.opened(
            at: recorded,
            resumed: true,
            plan: recorded == .opened ? nil : Self.plan,
            removed: removed,
            sinceRowsDeleted: .seconds(60),
            now: now
        )
        #expect(machine.resumedAfter == recorded)
        #expect(machine.removed == removed)
        let expected: ErasureStateMachine.Action =
            switch recorded {
            case .opened: .deleteRows
            case .rowsDeleted: .removeKeys(Self.plan, again: false)
            case .keysRemoved: .removeFiles(Self.plan)
            // The rows went a minute ago: no wait.
            case .filesRemoved: .removeDeadLetters
            case .deadLettersRemoved: .removeKeys(Self.plan, again: true)
            case .keysRemovedAgain: .close
            }
        #expect(machine.nextAction(now: now) == expected)
    }

    @Test func aRerunWhoseRowsWentJustNowStillWaits() {
        var machine = ErasureStateMachine(settle: Self.settle)
        let now = ContinuousClock.now
        machine.opened(
            at: .filesRemoved,
            resumed: true,
            plan: Self.plan,
            removed: ErasureCounts(),
            sinceRowsDeleted: .milliseconds(500),
            now: now
        )
        #expect(machine.nextAction(now: now) == .wait(until: now + .milliseconds(1500)))
    }

    @Test func everyStepHasItsOwnCrashPoint() {
        let points = ErasureStep.allCases.map(\.crashPoint)
        #expect(Set(points).count == ErasureStep.allCases.count)
        #expect(points.allSatisfy { $0.rawValue.hasPrefix("erasure-") })
    }
}
