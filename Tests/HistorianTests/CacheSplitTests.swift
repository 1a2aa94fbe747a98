import Testing

@testable import Historian

/// How a batch's cache work is cut into script calls.
struct CacheSplitTests {
    static func write(_ index: Int, elements: Int = 1) -> CacheWrite {
        CacheWrite(
            mode: elements == 1 ? .delta : .snapshot,
            conversationID: "c\(index)",
            version: 1,
            elements: Array(repeating: "{}", count: elements)
        )
    }

    static func touch(_ index: Int) -> SessionTouch {
        SessionTouch(sessionID: "s\(index)", userID: "u", deptID: nil, conversationID: "c\(index)", at: "t", first: "t")
    }

    @Test func nothingToDoIsOneEmptyCall() {
        let calls = RecentCache.split([], sessions: [], workPerCall: 256)
        #expect(calls.count == 1)
        #expect(calls[0].writes.isEmpty && calls[0].sessions.isEmpty)
    }

    @Test func aSmallBatchIsOneCall() {
        let calls = RecentCache.split((0..<100).map { Self.write($0) }, sessions: (0..<100).map(Self.touch), workPerCall: 256)
        #expect(calls.count == 1)
        #expect(calls[0].writes.count == 100 && calls[0].sessions.count == 100)
    }

    @Test func aLargeBatchIsCutInOrderWithNothingLost() {
        let writes = (0..<600).map { Self.write($0) }
        let sessions = (0..<100).map(Self.touch)
        let calls = RecentCache.split(writes, sessions: sessions, workPerCall: 256)
        #expect(calls.map { $0.writes.count + $0.sessions.count } == [256, 256, 188])
        #expect(calls.flatMap(\.writes) == writes)
        #expect(calls.flatMap(\.sessions) == sessions)
    }

    @Test func writesWeighTheirElementsAndABigOneGoesAlone() {
        let writes = [Self.write(0, elements: 10), Self.write(1, elements: 300), Self.write(2, elements: 10)]
        let calls = RecentCache.split(writes, sessions: [], workPerCall: 256)
        #expect(calls.map { $0.writes.map(\.conversationID) } == [["c0"], ["c1"], ["c2"]])
    }
}
