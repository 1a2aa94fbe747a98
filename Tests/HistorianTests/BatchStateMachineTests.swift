import Foundation
import Testing

@testable import Historian

struct BatchStateMachineTests {
    @Test func storesValidEntriesAndDeadLettersInvalidOnes() {
        var machine = BatchStateMachine(entries: [testEntry(0), testEntry(1, valid: false), testEntry(2)], validator: EntryValidator())
        guard case .store(let unit) = machine.nextAction() else {
            Issue.record("expected a store")
            return
        }
        #expect(unit.map(\.entryID.sequence) == [0, 2])
        machine.unitStored([unit[0].id: .stored, unit[1].id: .alreadyStored])
        guard case .finish(let acknowledgement) = machine.nextAction() else {
            Issue.record("expected finish")
            return
        }
        #expect(acknowledgement.acknowledge.map(\.sequence) == [0, 2])
        #expect(acknowledgement.deadLetters.map(\.entry.id.sequence) == [1])
        #expect(acknowledgement.deadLetters.first?.rejection.reason == .invalidUUID)
        #expect(acknowledgement.stored.map(\.entryID.sequence) == [0])
    }

    @Test func repeatedMessageIDsGoInLaterRounds() {
        let machine = BatchStateMachine(
            entries: [testEntry(0, message: 7), testEntry(1, message: 8), testEntry(2, message: 7, content: "changed")],
            validator: EntryValidator()
        )
        guard case .store(let first) = machine.nextAction() else {
            Issue.record("expected a store")
            return
        }
        #expect(first.map(\.entryID.sequence) == [0, 1])
        var next = machine
        next.unitStored([first[0].id: .stored, first[1].id: .stored])
        guard case .store(let second) = next.nextAction() else {
            Issue.record("expected a second round")
            return
        }
        #expect(second.map(\.entryID.sequence) == [2])
        next.unitStored([second[0].id: .conflict])
        guard case .finish(let acknowledgement) = next.nextAction() else {
            Issue.record("expected finish")
            return
        }
        #expect(acknowledgement.deadLetters.map(\.rejection.reason) == [.conflict])
        #expect(acknowledgement.acknowledge.map(\.sequence) == [0, 1])
    }

    @Test(arguments: [1, 2, 7, 64, 500])
    func bisectionIsolatesTheOneRefusedRow(size: Int) {
        let bad = size / 3
        var machine = BatchStateMachine(entries: (0..<size).map { testEntry($0) }, validator: EntryValidator())
        var transactions = 0
        while case .store(let unit) = machine.nextAction() {
            transactions += 1
            if unit.contains(where: { $0.entryID.sequence == UInt64(bad) }) {
                machine.unitRejected(detail: "SQLSTATE 23514")
            } else {
                machine.unitStored(Dictionary(uniqueKeysWithValues: unit.map { ($0.id, StoreResult.stored) }))
            }
        }
        guard case .finish(let acknowledgement) = machine.nextAction() else {
            Issue.record("expected finish")
            return
        }
        #expect(acknowledgement.deadLetters.map(\.entry.id.sequence) == [UInt64(bad)])
        #expect(acknowledgement.deadLetters.first?.rejection.reason == .rejectedByDatabase)
        #expect(acknowledgement.acknowledge.count == size - 1)
        // Halving: two transactions per level of a log2(n)-deep split, not one per row.
        let levels = Int(log2(Double(size)).rounded(.up))
        #expect(transactions <= 2 * levels + 1)
    }

    @Test func vanishedEntriesAreAcknowledged() {
        let id = StreamID(milliseconds: 5, sequence: 0)
        let machine = BatchStateMachine(entries: [nil], ids: [id], validator: EntryValidator())
        guard case .finish(let acknowledgement) = machine.nextAction() else {
            Issue.record("expected finish")
            return
        }
        #expect(acknowledgement.acknowledge == [id])
    }

    @Test func aMessageTheStoreDidNotReportIsRetried() {
        var machine = BatchStateMachine(entries: [testEntry(0), testEntry(1)], validator: EntryValidator())
        guard case .store(let unit) = machine.nextAction() else {
            Issue.record("expected a store")
            return
        }
        #expect(unit.map(\.entryID.sequence) == [0, 1])
        machine.unitStored([unit[0].id: .stored])
        guard case .store(let retry) = machine.nextAction() else {
            Issue.record("the unreported message was dropped")
            return
        }
        #expect(retry.map(\.entryID.sequence) == [1])
    }

    @Test func judgementMatchesTheContract() throws {
        let message = try EntryValidator().validate(testEntry(0)).get()
        let same = StoredMessage(conversationID: message.conversationID, role: "user", content: "hello")
        #expect(StoreJudgement.judge(message, existing: same, owner: "u") == .alreadyStored)
        var changed = same
        changed.content = "other"
        #expect(StoreJudgement.judge(message, existing: changed, owner: "u") == .conflict)
        #expect(StoreJudgement.judge(message, existing: nil, owner: "someone") == .userMismatch)
        #expect(StoreJudgement.judge(message, existing: nil, owner: "u") == nil)
        #expect(StoreJudgement.judge(message, existing: nil, owner: nil) == nil)
    }
}

struct BackoffTests {
    @Test func staysWithinTheCap() {
        let backoff = Backoff(base: .milliseconds(100), cap: .seconds(2))
        for attempt in 1...40 {
            let delay = backoff.delay(attempt: attempt)
            #expect(delay >= .zero && delay <= .seconds(2))
        }
        #expect((0..<50).allSatisfy { _ in backoff.delay(attempt: 1) <= .milliseconds(100) })
    }
}
