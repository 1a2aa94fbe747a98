import Testing

@testable import Historian

/// The end of a batch as the state machine's actions: snapshots, cache refresh, rebuilds,
/// acknowledgement and dead letters, without servers.
struct BatchEndTests {
    static let conversation = "00000000-0000-7000-9000-000000000001"

    static func entry(_ number: Int, session: String? = nil, valid: Bool = true) -> StreamEntry {
        var pairs = [
            ("message_id", valid ? "00000000-0000-7000-8000-\(String(format: "%012d", number))" : "bad"),
            ("conversation_id", conversation),
            ("user_id", "u"), ("role", "user"), ("content", "hello \(number)"),
        ]
        if let session { pairs.append(("session_id", session)) }
        let fields = pairs.map { StreamEntry.Field(name: Array($0.0.utf8), value: Array($0.1.utf8)) }
        return StreamEntry(id: StreamID(milliseconds: 1000, sequence: UInt64(number)), fields: fields)
    }

    static func delta(version: Int64) -> CacheWrite {
        CacheWrite(mode: .delta, conversationID: conversation, version: version, elements: ["{}"])
    }

    /// Stores every unit with `result`, handing back one delta per unit.
    static func storeAll(_ machine: inout BatchStateMachine, _ result: StoreResult) {
        var version: Int64 = 0
        while case .store(let unit) = machine.nextAction() {
            version += 1
            machine.unitStored(
                Dictionary(uniqueKeysWithValues: unit.map { ($0.id, result) }),
                cacheWrites: result == .stored ? [delta(version: version)] : []
            )
        }
    }

    @Test func newMessagesAreAcknowledgedByTheCacheCall() throws {
        var machine = BatchStateMachine(entries: [Self.entry(0, session: "s"), Self.entry(1)], validator: EntryValidator(), cache: .listsAndSessions)
        Self.storeAll(&machine, .stored)
        guard case .refreshCache(let refresh) = machine.nextAction() else {
            Issue.record("expected the cache refresh, got \(machine.nextAction())")
            return
        }
        #expect(refresh.writes == [Self.delta(version: 1)])
        #expect(refresh.sessions.map(\.sessionID) == ["s"])
        #expect(refresh.acknowledge.map(\.sequence) == [0, 1])
        machine.cacheRefreshed(acknowledged: true, stale: [])
        // Acknowledged by the cache call, no dead letters: nothing is left for `finish`.
        guard case .done(let outcome) = machine.nextAction() else {
            Issue.record("expected done, got \(machine.nextAction())")
            return
        }
        #expect(outcome.acknowledge.map(\.sequence) == [0, 1])
        #expect(outcome.stored.count == 2)
    }

    @Test func deadLettersFinishWithoutAcknowledgingTwice() {
        var machine = BatchStateMachine(entries: [Self.entry(0), Self.entry(1, valid: false)], validator: EntryValidator(), cache: .listsAndSessions)
        Self.storeAll(&machine, .stored)
        guard case .refreshCache(let refresh) = machine.nextAction() else {
            Issue.record("expected the cache refresh")
            return
        }
        #expect(refresh.acknowledge.map(\.sequence) == [0])
        machine.cacheRefreshed(acknowledged: true, stale: [])
        guard case .finish(let rest) = machine.nextAction() else {
            Issue.record("expected finish, got \(machine.nextAction())")
            return
        }
        // The cache call acknowledged entry 0; `finish` only moves the dead letter.
        #expect(rest.acknowledge.isEmpty)
        #expect(rest.deadLetters.map(\.entry.id.sequence) == [1])
        machine.finished()
        guard case .done = machine.nextAction() else {
            Issue.record("expected done")
            return
        }
    }

    @Test func redeliveriesReadSnapshotsFirst() {
        var machine = BatchStateMachine(entries: [Self.entry(0)], validator: EntryValidator(), cache: .listsAndSessions)
        Self.storeAll(&machine, .alreadyStored)
        guard case .readSnapshots(let conversations) = machine.nextAction() else {
            Issue.record("expected a snapshot read, got \(machine.nextAction())")
            return
        }
        #expect(conversations == [Self.conversation])
        let snapshot = CacheWrite(mode: .snapshot, conversationID: Self.conversation, version: 7, elements: ["{}"])
        machine.snapshotsRead([snapshot])
        guard case .refreshCache(let refresh) = machine.nextAction() else {
            Issue.record("expected the cache refresh")
            return
        }
        #expect(refresh.writes == [snapshot])
        #expect(refresh.acknowledge.map(\.sequence) == [0])
    }

    @Test func listsBehindAreRebuiltAndTheAcknowledgementWaitsForFinish() {
        var machine = BatchStateMachine(entries: [Self.entry(0), Self.entry(1)], validator: EntryValidator(), cache: .listsAndSessions)
        Self.storeAll(&machine, .stored)
        guard case .refreshCache = machine.nextAction() else {
            Issue.record("expected the cache refresh")
            return
        }
        // The list was behind: the script acknowledged nothing.
        machine.cacheRefreshed(acknowledged: false, stale: [Self.conversation])
        guard case .readSnapshots(let stale) = machine.nextAction() else {
            Issue.record("expected a snapshot read for the rebuild")
            return
        }
        #expect(stale == [Self.conversation])
        let snapshot = CacheWrite(mode: .snapshot, conversationID: Self.conversation, version: 9, elements: ["{}"])
        machine.snapshotsRead([snapshot])
        guard case .refreshCache(let rebuild) = machine.nextAction() else {
            Issue.record("expected the rebuild")
            return
        }
        #expect(rebuild.writes == [snapshot])
        #expect(rebuild.sessions.isEmpty)
        #expect(rebuild.acknowledge.isEmpty, "a rebuild acknowledges nothing")
        machine.cacheRefreshed(acknowledged: false, stale: [])
        guard case .finish(let rest) = machine.nextAction() else {
            Issue.record("expected finish")
            return
        }
        #expect(rest.acknowledge.map(\.sequence) == [0, 1])
        machine.finished()
        guard case .done = machine.nextAction() else {
            Issue.record("expected done")
            return
        }
    }

    @Test func sessionsOnlyWithoutSessionsGoesStraightToFinish() {
        var machine = BatchStateMachine(entries: [Self.entry(0)], validator: EntryValidator(), cache: .sessions)
        Self.storeAll(&machine, .stored)
        guard case .finish(let rest) = machine.nextAction() else {
            Issue.record("expected finish, got \(machine.nextAction())")
            return
        }
        #expect(rest.acknowledge.map(\.sequence) == [0])

        var withSession = BatchStateMachine(entries: [Self.entry(0, session: "s")], validator: EntryValidator(), cache: .sessions)
        Self.storeAll(&withSession, .stored)
        guard case .refreshCache(let refresh) = withSession.nextAction() else {
            Issue.record("expected the session refresh")
            return
        }
        #expect(refresh.writes.isEmpty, "no recent lists with recent_size 0")
        #expect(refresh.sessions.map(\.sessionID) == ["s"])
    }

    @Test func archivedConversationsAreRestoredAndTheUnitStoredAgain() {
        var machine = BatchStateMachine(entries: [Self.entry(0)], validator: EntryValidator(), cache: .listsAndSessions)
        guard case .store(let unit) = machine.nextAction() else {
            Issue.record("expected a store")
            return
        }
        let archived = [unit[0].conversationID]
        machine.unitFoundArchived(archived)
        #expect(machine.nextAction() == .restore(archived))
        machine.restored()
        #expect(machine.nextAction() == .store(unit))
    }

    @Test func aBatchOfOnlyDeadLettersFinishesAndEnds() {
        var machine = BatchStateMachine(entries: [Self.entry(0, valid: false)], validator: EntryValidator(), cache: .listsAndSessions)
        guard case .finish(let rest) = machine.nextAction() else {
            Issue.record("expected finish, got \(machine.nextAction())")
            return
        }
        #expect(rest.deadLetters.count == 1)
        machine.finished()
        guard case .done = machine.nextAction() else {
            Issue.record("expected done")
            return
        }
    }
}
