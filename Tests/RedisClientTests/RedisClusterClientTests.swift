import Foundation
import LocalServers
import Logging
import RedisClient
import Synchronization
import Testing

/// `RedisClusterClient` against a real three-master cluster: routing, `MOVED` during a reshard, `ASK` during a
/// migration, and a master's death and its replica's takeover.
@Suite(.serialized)
struct RedisClusterClientTests {
    @Test("a pipeline over 2000 keys lands each key on the master serving its slot, and reads them back")
    func routesEveryKeyToItsMaster() async throws {
        try await withRedisCluster { cluster, client in
            let keys = (0..<2000).map { RedisArgument("routing:\($0)") }
            let values = (0..<2000).map { index in
                RedisArgument([UInt8(index % 256), 0x00, 0xFF] + Array("v\(index)".utf8))
            }
            let sets = try await client.pipeline(zip(keys, values).map { (key: $0, command: ["SET", $0, $1]) })
            #expect(sets == Array(repeating: .simpleString("OK"), count: keys.count))
            let gets = try await client.pipeline(keys.map { (key: $0, command: ["GET", $0]) })
            #expect(gets == values.map { .bulkString($0.bytes) })

            // The cluster's own view: CLUSTER KEYSLOT and CLUSTER NODES, asked without the client.
            let ownerOfSlot = try await slotOwners(cluster)
            let map = try await client.slotMap()
            let masterPorts = Set(try await cluster.masters().map(\.port))
            #expect(Set(map.masters.map { port(of: $0.endpoint) }) == masterPorts)
            let probe = try await connect(toNodeAt: cluster.nodes[0].port)
            defer { probe.close() }
            let slots = try await probe.pipeline(keys.map { ["CLUSTER", "KEYSLOT", $0] })

            var keysByPort: [Int: [Int]] = [:]
            for (index, key) in keys.enumerated() {
                let slot = RedisHashSlot(key: key)
                #expect(slots[index] == .integer(Int64(slot.value)))
                let owner = try #require(ownerOfSlot[slot.value])
                #expect(map.master(serving: slot).map { port(of: $0.endpoint) } == owner, "slot \(slot)")
                keysByPort[owner, default: []].append(index)
            }
            #expect(Set(keysByPort.keys) == masterPorts)
            // Each master holds its keys: read directly, no MOVED.
            for (port, indices) in keysByPort {
                let node = try await connect(toNodeAt: port)
                defer { node.close() }
                let replies = try await node.pipeline(indices.map { ["GET", keys[$0]] })
                #expect(replies == indices.map { .bulkString(values[$0].bytes) }, "master on \(port)")
            }

            let sizes = try await client.sendToMasters(["DBSIZE"])
            #expect(sizes.count == 3)
            #expect(sizes.map(\.reply.int).reduce(0) { $0 + ($1 ?? 0) } == 2000)
            var scanned = 0
            for master in try await client.masters() {
                let size = try await client.send(["DBSIZE"], to: master.endpoint)
                #expect(size.int == Int64(keysByPort[port(of: master.endpoint) ?? 0]?.count ?? -1))
                scanned += Int(size.int ?? 0)
            }
            #expect(scanned == 2000)
            // CLUSTER SLOTS lists a replica once the node asked has heard (by gossip) that it replicated something.
            for (node, reply) in try await client.sendToMasters(["WAIT", "1", "5000"]) {
                #expect(reply == .integer(1), "\(node)")
            }
            let deadline = ContinuousClock.now + .seconds(10)
            while try await client.refreshSlotMap().nodes.count < 6, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(client.nodes.count == 6)
            #expect(client.nodes.filter { $0.role == .replica }.count == 3)

            // Single commands route the same way, error replies throw as on a connection.
            #expect(try await client.send(["GET", "routing:7"], key: "routing:7") == .bulkString(values[7].bytes))
            let wrongType = try await #require(throws: RedisError.self) {
                try await client.send(["LPUSH", "routing:7", "x"], key: "routing:7")
            }
            #expect(wrongType.serverErrorPrefix == "WRONGTYPE")
            // In a pipeline an error reply is a value, and the others still run.
            let mixed = try await client.pipeline([
                (key: "routing:7", command: ["LPUSH", "routing:7", "x"]),
                (key: "routing:8", command: ["GET", "routing:8"]),
            ])
            #expect(mixed[0].isError)
            #expect(mixed[1] == .bulkString(values[8].bytes))
        }
    }

    @Test("during and after a reshard of 500 slots, reads and writes through the client follow the moved slots")
    func followsMovedDuringReshard() async throws {
        let log = LogSink()
        try await withRedisCluster(logger: testLogger(log)) { cluster, client in
            let keys = (0..<3000).map { RedisArgument("reshard:\($0)") }
            let values = keys.indices.map { RedisArgument("before \($0)") }
            let sets = try await client.pipeline(zip(keys, values).map { (key: $0, command: ["SET", $0, $1]) })
            #expect(sets.allSatisfy { $0 == .simpleString("OK") })

            let source = try await cluster.master(ofSlot: 0)
            let destination = try await cluster.masters().first { $0.port != source.port }!
            let ownersBefore = try await slotOwners(cluster)
            let sourceKeys = keys.indices.filter { ownersBefore[RedisHashSlot(key: keys[$0]).value] == source.port }
            #expect(sourceKeys.count > 500)

            // A reader goes on through the reshard, one pipeline after another.
            let done = Atomic(false)
            let reader = Task {
                var rounds = 0
                var failures: [String] = []
                while !done.load(ordering: .relaxed), rounds < 10_000 {
                    do {
                        let replies = try await client.pipeline(
                            sourceKeys.map { (key: keys[$0], command: ["GET", keys[$0]]) }
                        )
                        for (index, reply) in zip(sourceKeys, replies) where reply != .bulkString(values[index].bytes) {
                            failures.append("\(keys[index].bytes): \(reply)")
                        }
                    } catch {
                        failures.append("\(error)")
                    }
                    rounds += 1
                }
                return (rounds, failures)
            }
            do {
                try await cluster.reshard(slots: 500, from: source.id, to: destination.id)
            } catch {
                done.store(true, ordering: .relaxed)
                _ = await reader.value
                throw error
            }
            done.store(true, ordering: .relaxed)
            let (rounds, failures) = await reader.value
            #expect(rounds > 0)
            #expect(failures.isEmpty, "\(failures.prefix(5))")
            // The reader met moved slots on the way.
            #expect(log.all.contains { $0.contains("relearning the slot map") })

            let ownersAfter = try await slotOwners(cluster)
            let movedSlots = (0..<RedisHashSlot.count).filter {
                ownersBefore[$0] == source.port && ownersAfter[$0] == destination.port
            }
            #expect(movedSlots.count == 500)
            let movedKeys = sourceKeys.filter { movedSlots.contains(RedisHashSlot(key: keys[$0]).value) }
            #expect(!movedKeys.isEmpty)

            // Reads of every key, then writes to the moved ones, through the same client.
            let gets = try await client.pipeline(keys.map { (key: $0, command: ["GET", $0]) })
            #expect(gets == values.map { .bulkString($0.bytes) })
            for index in movedKeys.prefix(20) {
                #expect(try await client.send(["SET", keys[index], "after"], key: keys[index]) == .simpleString("OK"))
            }
            let writes = try await client.pipeline(
                movedKeys.dropFirst(20).map { (key: keys[$0], command: ["SET", keys[$0], "after"]) }
            )
            #expect(writes.allSatisfy { $0 == .simpleString("OK") })

            // The writes are on the destination; the source redirects; the client's map has caught up.
            let onDestination = try await connect(toNodeAt: destination.port)
            defer { onDestination.close() }
            #expect(
                try await onDestination.pipeline(movedKeys.map { ["GET", keys[$0]] }).allSatisfy {
                    $0 == .bulkString(Array("after".utf8))
                }
            )
            let onSource = try await connect(toNodeAt: source.port)
            defer { onSource.close() }
            let redirected = try await #require(throws: RedisError.self) {
                try await onSource.send(["GET", keys[movedKeys[0]]])
            }
            #expect(redirected.serverErrorPrefix == "MOVED")
            let map = try await client.slotMap()
            for slot in movedSlots {
                #expect(map.master(serving: RedisHashSlot(slot)!).map { port(of: $0.endpoint) } == destination.port)
            }
        }
    }

    @Test("during a slot's migration, GETs of migrated and unmigrated keys succeed via ASK; afterwards via MOVED")
    func followsAskDuringMigration() async throws {
        let traffic = TrafficCounter()
        try await withRedisCluster(traffic: traffic.observer) { cluster, client in
            let slot = RedisHashSlot(key: "{ask}")
            let keys = (0..<20).map { RedisArgument("{ask}:\($0)") }
            #expect(keys.allSatisfy { RedisHashSlot(key: $0) == slot })
            for (index, key) in keys.enumerated() {
                #expect(
                    try await client.send(["SET", key, RedisArgument("value \(index)")], key: key)
                        == .simpleString("OK")
                )
            }
            let source = try await cluster.master(ofSlot: slot.value)
            let destination = try await cluster.masters().first { $0.port != source.port }!
            let onSource = try await connect(toNodeAt: source.port)
            defer { onSource.close() }
            let onDestination = try await connect(toNodeAt: destination.port)
            defer { onDestination.close() }

            _ = try await onDestination.send([
                "CLUSTER", "SETSLOT", RedisArgument(slot.value), "IMPORTING", RedisArgument(source.id),
            ])
            _ = try await onSource.send([
                "CLUSTER", "SETSLOT", RedisArgument(slot.value), "MIGRATING", RedisArgument(destination.id),
            ])
            let migrated = Array(keys[..<10])
            let migrate: [RedisArgument] = [
                "MIGRATE", "127.0.0.1", RedisArgument(destination.port), "", "0", "5000", "KEYS",
            ]
            #expect(try await onSource.send(migrate + migrated) == .simpleString("OK"))
            // The setup holds: the source sends the migrated keys' readers to the destination.
            let asked = try await #require(throws: RedisError.self) { try await onSource.send(["GET", migrated[0]]) }
            #expect(asked.serverErrorPrefix == "ASK")

            // Decoded in place, the reply alone reaches the decoder, wherever the key was.
            for (index, key) in keys.enumerated() {
                let text = try await client.send(["GET", key], key: key) { view in
                    view.withBytes { String(decoding: $0, as: UTF8.self) }
                }
                #expect(text == "value \(index)")
            }
            let refused = try await #require(throws: RedisError.self) {
                try await client.send(["HGET", keys[0], "field"], key: keys[0]) { _ in 0 }
            }
            #expect(refused.serverErrorPrefix == "WRONGTYPE")
            for (index, key) in keys.enumerated() {
                let (reply, sent) = try await traffic.during { try await client.send(["GET", key], key: key) }
                #expect(reply == .bulkString(Array("value \(index)".utf8)))
                // A migrated key: GET to the source, then ASKING and GET to the destination in one round trip.
                let expected =
                    index < migrated.count
                    ? RedisTraffic(commands: 3, roundTrips: 2) : RedisTraffic(commands: 1, roundTrips: 1)
                #expect(sent == expected, "key \(index)")
            }
            let gets = try await client.pipeline(keys.map { (key: $0, command: ["GET", $0]) })
            #expect(gets == keys.indices.map { .bulkString(Array("value \($0)".utf8)) })
            // A new key of a migrating slot is created at the importing node.
            #expect(try await client.send(["SET", "{ask}:new", "fresh"], key: "{ask}:new") == .simpleString("OK"))
            #expect(
                try await onDestination.pipeline([["ASKING"], ["GET", "{ask}:new"]])[1]
                    == .bulkString(Array("fresh".utf8))
            )
            // ASK leaves the map alone: the slot is still the source's.
            #expect(try await client.slotMap().master(serving: slot).map { port(of: $0.endpoint) } == source.port)

            // Finish the migration: the other keys, then the slot, on every master.
            #expect(try await onSource.send(migrate + Array(keys[10...])) == .simpleString("OK"))
            _ = try await onDestination.send([
                "CLUSTER", "SETSLOT", RedisArgument(slot.value), "NODE", RedisArgument(destination.id),
            ])
            _ = try await onSource.send([
                "CLUSTER", "SETSLOT", RedisArgument(slot.value), "NODE", RedisArgument(destination.id),
            ])
            for master in try await cluster.masters()
            where master.port != source.port && master.port != destination.port {
                let other = try await connect(toNodeAt: master.port)
                defer { other.close() }
                _ = try await other.send([
                    "CLUSTER", "SETSLOT", RedisArgument(slot.value), "NODE", RedisArgument(destination.id),
                ])
            }
            let moved = try await #require(throws: RedisError.self) { try await onSource.send(["GET", keys[15]]) }
            #expect(moved.serverErrorPrefix == "MOVED")

            // The first GET meets MOVED: CLUSTER SLOTS, then the GET again at the destination; the next ones go
            // straight there.
            for (index, key) in keys.enumerated() {
                let (reply, sent) = try await traffic.during { try await client.send(["GET", key], key: key) }
                #expect(reply == .bulkString(Array("value \(index)".utf8)))
                let expected =
                    index == 0 ? RedisTraffic(commands: 3, roundTrips: 3) : RedisTraffic(commands: 1, roundTrips: 1)
                #expect(sent == expected, "key \(index)")
            }
            #expect(try await client.send(["GET", "{ask}:new"], key: "{ask}:new") == .bulkString(Array("fresh".utf8)))
            let decoded = try await client.send(["GET", keys[3]], key: keys[3]) { view in
                view.withBytes { String(decoding: $0, as: UTF8.self) }
            }
            #expect(decoded == "value 3")
            #expect(try await client.slotMap().master(serving: slot).map { port(of: $0.endpoint) } == destination.port)
            #expect(try await onDestination.send(["GET", keys[15]]) == .bulkString(Array("value 15".utf8)))
        }
    }

    @Test("a master killed and replaced by its replica: at most one call fails, then calls and pipelines succeed")
    func survivesFailover() async throws {
        try await withRedisCluster { cluster, client in
            let keys = (0..<1500).map { RedisArgument("failover:\($0)") }
            let sets = try await client.pipeline(keys.map { (key: $0, command: ["SET", $0, $0]) })
            #expect(sets.allSatisfy { $0 == .simpleString("OK") })
            // Every write reached the replica that is to take over.
            for (node, reply) in try await client.sendToMasters(["WAIT", "1", "5000"]) {
                #expect(reply == .integer(1), "\(node)")
            }

            let key = keys[0]
            let victim = try await cluster.master(ofSlot: RedisHashSlot(key: key).value)
            try await cluster.kill(port: victim.port)
            try await cluster.waitForFailover(of: victim.port, timeout: .seconds(60))

            var failures: [RedisError] = []
            var reply: RESPValue?
            for _ in 0..<2 where reply == nil {
                do {
                    reply = try await client.send(["GET", key], key: key)
                } catch let error as RedisError {
                    failures.append(error)
                }
            }
            #expect(reply == .bulkString(key.bytes))
            #expect(failures.count <= 1, "\(failures)")
            #expect(failures.allSatisfy { $0.isTransient && $0.code != .server }, "\(failures)")

            let successor = try await cluster.master(ofSlot: RedisHashSlot(key: key).value)
            #expect(successor.port != victim.port)
            let masters = try await client.masters()
            #expect(masters.count == 3)
            #expect(!masters.contains { port(of: $0.endpoint) == victim.port })

            let gets = try await client.pipeline(keys.map { (key: $0, command: ["GET", $0]) })
            #expect(gets == keys.map { .bulkString($0.bytes) })
            let writes = try await client.pipeline(keys.map { (key: $0, command: ["SET", $0, "after failover"]) })
            #expect(writes.allSatisfy { $0 == .simpleString("OK") })
            let onSuccessor = try await connect(toNodeAt: successor.port)
            defer { onSuccessor.close() }
            #expect(try await onSuccessor.send(["GET", key]) == .bulkString(Array("after failover".utf8)))
        }
    }
}

// MARK: - Support

/// Starts a cluster, makes a client from its URL (every node a seed), runs `body`, then closes the client and
/// destroys the cluster whether `body` succeeded or not.
func withRedisCluster<Result>(
    logger: Logger = testLogger(),
    traffic: RedisTrafficObserver? = nil,
    _ body: (RedisCluster, RedisClusterClient) async throws -> Result
) async throws -> Result {
    let cluster = try await RedisCluster.start()
    var client: RedisClusterClient?
    do {
        let made = try RedisClusterClient(RedisClusterConfiguration(url: cluster.url), logger: logger, traffic: traffic)
        client = made
        let result = try await body(cluster, made)
        made.close()
        try await cluster.destroy()
        return result
    } catch {
        client?.close()
        try? await cluster.destroy()
        throw error
    }
}

/// A plain connection to one node, to check what the cluster holds without the cluster client.
func connect(toNodeAt port: Int) async throws -> RedisConnection {
    try await RedisConnection.connect(
        RedisConfiguration(endpoint: .tcp(host: "127.0.0.1", port: port)),
        logger: testLogger()
    )
}

/// For each slot, the port of the master serving it, as `CLUSTER NODES` says.
func slotOwners(_ cluster: RedisCluster) async throws -> [Int: Int] {
    var owners: [Int: Int] = [:]
    for node in try await cluster.clusterNodes() where node.flags.contains("master") && !node.flags.contains("fail") {
        // Ranges such as "0-5460" or "5461"; migrating/importing entries ("[…]") are not ownership.
        for range in node.slots where !range.hasPrefix("[") {
            let bounds = range.split(separator: "-").compactMap { Int($0) }
            guard let low = bounds.first else { continue }
            for slot in low...(bounds.last ?? low) {
                owners[slot] = node.port
            }
        }
    }
    return owners
}

/// Adds up what the cluster client's connections send.
final class TrafficCounter: Sendable {
    private let total = Mutex(RedisTraffic())

    var value: RedisTraffic {
        total.withLock { $0 }
    }

    var observer: RedisTrafficObserver {
        { traffic in self.total.withLock { $0 += traffic } }
    }

    /// What `body` returned, and what it sent.
    func during<T>(_ body: () async throws -> T) async rethrows -> (T, RedisTraffic) {
        let before = value
        let result = try await body()
        let after = value
        return (
            result,
            RedisTraffic(commands: after.commands - before.commands, roundTrips: after.roundTrips - before.roundTrips)
        )
    }
}

func port(of endpoint: RedisConfiguration.Endpoint) -> Int? {
    if case .tcp(_, let port) = endpoint {
        return port
    }
    return nil
}

extension RESPValue {
    var isError: Bool {
        if case .error = self {
            return true
        }
        return false
    }
}
