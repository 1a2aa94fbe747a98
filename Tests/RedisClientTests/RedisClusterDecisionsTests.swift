import Testing

@testable import RedisClient

/// The cluster client's decisions, without a server: reading redirects and `CLUSTER SLOTS`, and what a call does
/// with each reply.
@Suite
struct RedisClusterDecisionsTests {
    // MARK: Redirections

    @Test("MOVED and ASK name a slot and an endpoint; an empty host is the replying node's, ? is unknown")
    func redirections() {
        #expect(
            RedisClusterRedirection(errorReply: "MOVED 3999 127.0.0.1:6381", replyingHost: "10.0.0.9")
                == .moved(slot: 3999, to: .tcp(host: "127.0.0.1", port: 6381))
        )
        #expect(
            RedisClusterRedirection(errorReply: "ASK 12182 10.1.2.3:7002", replyingHost: "10.0.0.9")
                == .ask(slot: 12182, to: .tcp(host: "10.1.2.3", port: 7002))
        )
        #expect(
            RedisClusterRedirection(errorReply: "MOVED 3999 :6381", replyingHost: "10.0.0.9")
                == .moved(slot: 3999, to: .tcp(host: "10.0.0.9", port: 6381))
        )
        #expect(
            RedisClusterRedirection(errorReply: "MOVED 1 ::1:6381", replyingHost: "x")
                == .moved(slot: 1, to: .tcp(host: "::1", port: 6381))
        )
        #expect(
            RedisClusterRedirection(errorReply: "MOVED 1 [::1]:6381", replyingHost: "x")
                == .moved(slot: 1, to: .tcp(host: "::1", port: 6381))
        )
        #expect(RedisClusterRedirection(errorReply: "MOVED 1 ?:6381", replyingHost: "x") == .moved(slot: 1, to: nil))
        // Still a redirect (the command did not run), to a node the map must tell.
        #expect(RedisClusterRedirection(errorReply: "ASK 1 1.2.3.4", replyingHost: "x") == .ask(slot: 1, to: nil))
        #expect(
            RedisClusterRedirection(
                errorReply: "TRYAGAIN Multiple keys request during rehashing of slot",
                replyingHost: "x"
            )
                == .tryAgain
        )
        #expect(
            RedisClusterRedirection(errorReply: "CLUSTERDOWN Hash slot not served", replyingHost: "x") == .clusterDown
        )
        #expect(
            RedisClusterRedirection(errorReply: "CLUSTERDOWN The cluster is down", replyingHost: "x") == .clusterDown
        )
        for notARedirect in [
            "ERR wrong number of arguments", "WRONGTYPE Operation against a key", "MOVED", "MOVED abc 1.2.3.4:5",
            "MOVED 16384 1.2.3.4:5", "MOVEDX 1 1.2.3.4:5", "",
        ] {
            #expect(RedisClusterRedirection(errorReply: notARedirect, replyingHost: "x") == nil, "\(notARedirect)")
        }
    }

    // MARK: Slot map

    @Test("CLUSTER SLOTS: masters with several ranges, replicas, an empty IP, an unknown endpoint")
    func slotMap() throws {
        let map = try RedisClusterSlotMap(
            clusterSlotsReply: .array([
                Self.range(0, 99, master: ("10.0.0.1", 7001, "a"), replicas: [("10.0.0.4", 7004, "d")]),
                Self.range(100, 199, master: ("", 7002, "b"), replicas: []),
                Self.range(200, 299, master: ("10.0.0.1", 7001, "a"), replicas: [("10.0.0.4", 7004, "d")]),
                Self.range(300, 399, master: ("?", 7003, "c"), replicas: []),
                Self.range(400, 16383, master: ("10.0.0.3", 7003, "e"), replicas: [("?", 7005, "f")]),
            ]),
            replyingHost: "10.0.0.2"
        )
        #expect(map.masters.map(\.id) == ["a", "b", "e"])
        #expect(map.masters[0].slots == [0...99, 200...299])
        #expect(map.masters[1].endpoint == .tcp(host: "10.0.0.2", port: 7002))
        #expect(map.replicas.map(\.id) == ["d"])
        #expect(map.replicas[0].role == .replica)
        #expect(map.replicas[0].slots == [0...99, 200...299])
        #expect(map.master(serving: RedisHashSlot(250)!)?.id == "a")
        #expect(map.master(serving: RedisHashSlot(150)!)?.endpoint == .tcp(host: "10.0.0.2", port: 7002))
        #expect(map.master(serving: RedisHashSlot(350)!) == nil)
        #expect(map.master(serving: RedisHashSlot(16383)!)?.id == "e")
        #expect(map.servedSlotCount == RedisHashSlot.count - 100)
        #expect(map.nodes.count == 4)

        #expect(throws: RedisError.self) {
            try RedisClusterSlotMap(clusterSlotsReply: .simpleString("OK"), replyingHost: "x")
        }
        #expect(throws: RedisError.self) {
            try RedisClusterSlotMap(clusterSlotsReply: .array([.array([.integer(5), .integer(1)])]), replyingHost: "x")
        }
        #expect(throws: RedisError.self) {
            try RedisClusterSlotMap(
                clusterSlotsReply: .array([Self.range(0, 16384, master: ("h", 1, "a"), replicas: [])]),
                replyingHost: "x"
            )
        }
    }

    // MARK: A call's state machine

    private static let first = RedisConfiguration.Endpoint.tcp(host: "10.0.0.1", port: 7001)
    private static let second = RedisConfiguration.Endpoint.tcp(host: "10.0.0.2", port: 7002)
    private static let third = RedisConfiguration.Endpoint.tcp(host: "10.0.0.3", port: 7003)

    /// Slots 0-5460 on `first`, 5461-10922 on `second`, the rest on `third`; or without the last range.
    private static func map(servingAll: Bool = true) throws -> RedisClusterSlotMap {
        var ranges = [
            range(0, 5460, master: ("10.0.0.1", 7001, "a"), replicas: []),
            range(5461, 10922, master: ("10.0.0.2", 7002, "b"), replicas: []),
        ]
        if servingAll {
            ranges.append(range(10923, 16383, master: ("10.0.0.3", 7003, "c"), replicas: []))
        }
        return try RedisClusterSlotMap(clusterSlotsReply: .array(ranges), replyingHost: "x")
    }

    private static func slots(_ values: Int...) -> [RedisHashSlot] {
        values.map { RedisHashSlot($0)! }
    }

    @Test("commands go to their slots' masters, one share per node in the caller's order; replies come back in order")
    func routes() throws {
        let map = try Self.map()
        let now = ContinuousClock.now
        var machine = RedisClusterCallStateMachine(
            slots: Self.slots(10, 6000, 20, 16000, 5460),
            deadline: now + .seconds(1),
            maxRedirects: 5
        )
        let action = machine.nextAction(map: map, now: now)
        #expect(
            action
                == .send([
                    .init(
                        endpoint: Self.first,
                        entries: [
                            .init(index: 0, asking: false), .init(index: 2, asking: false),
                            .init(index: 4, asking: false),
                        ]
                    ),
                    .init(endpoint: Self.second, entries: [.init(index: 1, asking: false)]),
                    .init(endpoint: Self.third, entries: [.init(index: 3, asking: false)]),
                ])
        )
        let replies: [RESPValue] = [.integer(0), .integer(1), .error("WRONGTYPE not a list"), .null, .bulkString([4])]
        for (index, reply) in replies.enumerated() {
            machine.received(reply, forCommand: index, now: now)
        }
        // An error reply that is not a redirect is the command's result.
        #expect(machine.nextAction(map: map, now: now) == .finish(replies))
    }

    @Test("MOVED: the map is relearnt and the command resent to the node named, whatever the map says")
    func moved() throws {
        let map = try Self.map()
        let now = ContinuousClock.now
        var machine = RedisClusterCallStateMachine(
            slots: Self.slots(10, 20),
            deadline: now + .seconds(1),
            maxRedirects: 5
        )
        _ = machine.nextAction(map: map, now: now)
        machine.received(.error("MOVED 10 10.0.0.3:7003"), forCommand: 0, now: now)
        machine.received(.simpleString("OK"), forCommand: 1, now: now)
        #expect(machine.nextAction(map: map, now: now) == .learnSlotMap)
        #expect(
            machine.nextAction(map: map, now: now)
                == .send([.init(endpoint: Self.third, entries: [.init(index: 0, asking: false)])])
        )
        machine.received(.bulkString([1]), forCommand: 0, now: now)
        #expect(machine.nextAction(map: map, now: now) == .finish([.bulkString([1]), .simpleString("OK")]))
    }

    @Test("ASK: ASKING and the command go once to the node named; the map is left alone")
    func ask() throws {
        let map = try Self.map()
        let now = ContinuousClock.now
        var machine = RedisClusterCallStateMachine(
            slots: Self.slots(10, 11),
            deadline: now + .seconds(1),
            maxRedirects: 5
        )
        _ = machine.nextAction(map: map, now: now)
        machine.received(.error("ASK 10 10.0.0.2:7002"), forCommand: 0, now: now)
        machine.received(.bulkString([2]), forCommand: 1, now: now)
        #expect(
            machine.nextAction(map: map, now: now)
                == .send([.init(endpoint: Self.second, entries: [.init(index: 0, asking: true)])])
        )
        // Only that send was ASKING: a TRYAGAIN there starts again from the slot's master.
        machine.received(.error("TRYAGAIN Multiple keys request during rehashing of slot"), forCommand: 0, now: now)
        let later = now + .milliseconds(50)
        #expect(
            machine.nextAction(map: map, now: later)
                == .send([.init(endpoint: Self.first, entries: [.init(index: 0, asking: false)])])
        )
        machine.received(.bulkString([1]), forCommand: 0, now: later)
        #expect(machine.nextAction(map: map, now: later) == .finish([.bulkString([1]), .bulkString([2])]))
    }

    @Test("a command redirected more than maxRedirects times gets its last redirect as its result")
    func redirectLimit() throws {
        let map = try Self.map()
        let now = ContinuousClock.now
        var machine = RedisClusterCallStateMachine(slots: Self.slots(10), deadline: now + .seconds(1), maxRedirects: 2)
        for round in 0..<3 {
            var action = machine.nextAction(map: map, now: now)
            if action == .learnSlotMap {
                action = machine.nextAction(map: map, now: now)
            }
            guard case .send = action else {
                Issue.record("round \(round): expected a send, got \(action)")
                return
            }
            machine.received(.error("MOVED 10 10.0.0.\(round % 3 + 1):700\(round % 3 + 1)"), forCommand: 0, now: now)
        }
        #expect(machine.nextAction(map: map, now: now) == .finish([.error("MOVED 10 10.0.0.3:7003")]))
    }

    @Test("TRYAGAIN and CLUSTERDOWN back off and retry until the deadline, then are the result")
    func backOff() throws {
        let map = try Self.map()
        let start = ContinuousClock.now
        let deadline = start + .milliseconds(100)
        var machine = RedisClusterCallStateMachine(slots: Self.slots(10), deadline: deadline, maxRedirects: 5)
        var now = start
        var sends = 0
        var relearnings = 0
        var reply = RESPValue.error("TRYAGAIN Multiple keys request during rehashing of slot")
        loop: while true {
            switch machine.nextAction(map: map, now: now) {
            case .send(let dispatches):
                #expect(dispatches == [.init(endpoint: Self.first, entries: [.init(index: 0, asking: false)])])
                sends += 1
                // Alternate the two.
                reply = sends % 2 == 0 ? .error("CLUSTERDOWN The cluster is down") : .error("TRYAGAIN again")
                machine.received(reply, forCommand: 0, now: now)
            case .wait(let until):
                #expect(until > now)
                #expect(until < deadline)
                now = until
            case .learnSlotMap:
                relearnings += 1
            case .finish(let replies):
                #expect(replies == [reply])
                break loop
            }
        }
        // 10 + 20 + 40 ms of back-off fit before the deadline, the next 80 do not.
        #expect(sends == 4)
        #expect(relearnings == 1)
        #expect(now < deadline)
        #expect(RedisClusterCallStateMachine.backoff(afterRetries: 0) == .milliseconds(10))
        #expect(RedisClusterCallStateMachine.backoff(afterRetries: 3) == .milliseconds(80))
        #expect(RedisClusterCallStateMachine.backoff(afterRetries: 50) == .milliseconds(250))
    }

    @Test("a slot no master serves: relearn and back off until the deadline, then Redis' own CLUSTERDOWN reply")
    func slotNotServed() throws {
        let partial = try Self.map(servingAll: false)
        let start = ContinuousClock.now
        var machine = RedisClusterCallStateMachine(
            slots: Self.slots(16000, 1),
            deadline: start + .milliseconds(30),
            maxRedirects: 5
        )
        #expect(
            machine.nextAction(map: partial, now: start)
                == .send([.init(endpoint: Self.first, entries: [.init(index: 1, asking: false)])])
        )
        machine.received(.simpleString("OK"), forCommand: 1, now: start)
        #expect(machine.nextAction(map: partial, now: start) == .learnSlotMap)
        #expect(machine.nextAction(map: partial, now: start) == .wait(until: start + .milliseconds(10)))
        // The relearnt map serves it now.
        let full = try Self.map()
        let later = start + .milliseconds(10)
        #expect(
            machine.nextAction(map: full, now: later)
                == .send([.init(endpoint: Self.third, entries: [.init(index: 0, asking: false)])])
        )
        machine.received(.integer(7), forCommand: 0, now: later)
        #expect(machine.nextAction(map: full, now: later) == .finish([.integer(7), .simpleString("OK")]))

        var unserved = RedisClusterCallStateMachine(
            slots: Self.slots(16000),
            deadline: start + .milliseconds(30),
            maxRedirects: 5
        )
        var now = start
        var result: [RESPValue]?
        for _ in 0..<20 where result == nil {
            switch unserved.nextAction(map: partial, now: now) {
            case .wait(let until): now = until
            case .learnSlotMap: continue
            case .send: Issue.record("nothing can be sent for an unserved slot")
            case .finish(let replies): result = replies
            }
        }
        #expect(result == [RedisClusterCallStateMachine.slotNotServedReply])
    }

    /// One element of a `CLUSTER SLOTS` reply.
    private static func range(
        _ start: Int,
        _ end: Int,
        master: (String, Int, String),
        replicas: [(String, Int, String)]
    ) -> RESPValue {
        let node = { (host: String, port: Int, id: String) -> RESPValue in
            .array([.bulkString(Array(host.utf8)), .integer(Int64(port)), .bulkString(Array(id.utf8)), .array([])])
        }
        return .array(
            [.integer(Int64(start)), .integer(Int64(end)), node(master.0, master.1, master.2)] + replicas.map(node)
        )
    }
}
