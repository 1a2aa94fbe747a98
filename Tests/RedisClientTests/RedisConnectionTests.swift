import BlockingThread
import LocalServers
import RedisClient
import Testing

@Suite("RedisConnection against a real redis-server")
struct RedisConnectionTests {
    @Test("SET/GET round-trips arbitrary non-UTF-8 bytes exactly")
    func binaryRoundTrip() async throws {
        try await withRedis { _, redis in
            let value: [UInt8] = Array(0...255) + [0xFF, 0xFE, 0xC0, 0x80, 0x00, 0x0D, 0x0A, 0x24, 0x2A]
            let key: [UInt8] = [0x6B, 0x00, 0xFF, 0x0D, 0x0A]
            #expect(String(validating: value, as: UTF8.self) == nil)

            #expect(try await redis.send("SET", RedisArgument(key), RedisArgument(value)) == .simpleString("OK"))
            let reply = try await redis.send("GET", RedisArgument(key))
            #expect(reply == .bulkString(value))
            #expect(reply.bytes == value)
            #expect(reply.string == nil)
            #expect(try await redis.send("STRLEN", RedisArgument(key)) == .integer(Int64(value.count)))

            #expect(try await redis.send("SET", "empty", RedisArgument([])) == .simpleString("OK"))
            #expect(try await redis.send("GET", "empty") == .bulkString([]))
            #expect(try await redis.send("GET", "missing") == .null)

            // Strings are sent as their UTF-8 bytes; an argument equals and hashes like its bytes.
            let text = "héllo ✓ 日本"
            #expect(try await redis.send("SET", "text", RedisArgument(text)) == .simpleString("OK"))
            #expect(try await redis.send("GET", "text") == .bulkString(Array(text.utf8)))
            #expect(try await redis.send("SET", "empty text", RedisArgument("")) == .simpleString("OK"))
            #expect(try await redis.send("GET", "empty text") == .bulkString([]))
            #expect(RedisArgument(text) == RedisArgument(Array(text.utf8)))
            #expect(Set([RedisArgument(text), RedisArgument(Array(text.utf8)), RedisArgument(12), "12"]).count == 2)
        }
    }

    @Test("a pipeline of 1000 commands returns 1000 replies in order, an error reply as a value")
    func pipeline() async throws {
        try await withRedis { _, redis in
            _ = try await redis.send("SET", "text", "not a number")
            var commands: [[RedisArgument]] = []
            for index in 0..<1000 {
                commands.append(index == 500 ? ["INCR", "text"] : ["RPUSH", "list", RedisArgument(index)])
            }
            let replies = try await redis.pipeline(commands)

            #expect(replies.count == 1000)
            for (index, reply) in replies.enumerated() where index != 500 {
                // RPUSH returns the new length; one command (the error) pushed nothing.
                #expect(reply == .integer(Int64(index < 500 ? index + 1 : index)), "reply \(index)")
            }
            guard case .error(let text) = replies[500] else {
                Issue.record("expected an error reply at 500, got \(replies[500])")
                return
            }
            #expect(text.hasPrefix("ERR value is not an integer"))
            #expect(RedisError(serverReply: text).serverErrorPrefix == "ERR")

            #expect(!redis.isBroken)
            let stored = try await redis.send("LRANGE", "list", "0", "-1")
            #expect(stored.array?.compactMap(\.int) == (0..<1000).filter { $0 != 500 }.map(Int64.init))
            #expect(try await redis.pipeline([]) == [])
        }
    }

    @Test("XADD/XRANGE replies decode as nested arrays")
    func streams() async throws {
        try await withRedis { _, redis in
            let body: [UInt8] = [0x7B, 0x00, 0xFF, 0x7D]
            #expect(
                try await redis.send("XADD", "events", "1-1", "kind", "message", "body", RedisArgument(body))
                    == .bulkString(Array("1-1".utf8))
            )
            #expect(try await redis.send("XADD", "events", "2-0", "kind", "edit") == .bulkString(Array("2-0".utf8)))

            let range = try await redis.send("XRANGE", "events", "-", "+")
            #expect(
                range
                    == .array([
                        .array([
                            .bulkString(Array("1-1".utf8)),
                            .array([
                                .bulkString(Array("kind".utf8)), .bulkString(Array("message".utf8)),
                                .bulkString(Array("body".utf8)), .bulkString(body),
                            ]),
                        ]),
                        .array([
                            .bulkString(Array("2-0".utf8)),
                            .array([.bulkString(Array("kind".utf8)), .bulkString(Array("edit".utf8))]),
                        ]),
                    ])
            )
            #expect(range.array?.first?.array?.first?.string == "1-1")
            #expect(try await redis.send("XLEN", "events").int == 2)
            #expect(try await redis.send("XRANGE", "nothing", "-", "+") == .array([]))
        }
    }

    @Test("a reply read in place matches its copy; error replies and decode errors leave the connection usable")
    func replyView() async throws {
        struct Unreadable: Error {}
        try await withRedis { _, redis in
            let body: [UInt8] = [0x7B, 0x00, 0xFF, 0x7D]
            _ = try await redis.send("XADD", "events", "1-1", "kind", "message", "body", RedisArgument(body))
            _ = try await redis.send("XADD", "events", "2-0", "kind", "edit")
            let copied = try await redis.send("XRANGE", "events", "-", "+")
            let viewed = try await redis.send(["XRANGE", "events", "-", "+"]) { try $0.value }
            #expect(viewed == copied)
            let shape = try await redis.send(["XRANGE", "events", "-", "+"]) { reply in
                (reply.kind, reply.count, reply[0]?[1]?.count, reply[0]?[1]?[3]?.bytes, reply[2] == nil, reply[0]?[0]?.kind)
            }
            #expect(shape.0 == .array && shape.1 == 2 && shape.2 == 4 && shape.3 == body && shape.4 && shape.5 == .bulkString)
            #expect(try await redis.send(["XLEN", "events"]) { ($0.kind, try $0.value) } == (.integer, .integer(2)))
            #expect(try await redis.send(["GET", "missing"]) { $0.kind } == .null)

            let unknown = await #expect(throws: RedisError.self) {
                try await redis.send(["NOSUCHCOMMAND"]) { _ in Issue.record("decode called for an error reply") }
            }
            #expect(unknown?.code == .server && unknown?.serverErrorPrefix == "ERR")
            await #expect(throws: Unreadable.self) {
                try await redis.send(["PING"]) { _ -> Int in throw Unreadable() }
            }
            #expect(!redis.isBroken)

            let kinds = try await redis.pipeline([["PING"], ["NOSUCHCOMMAND"], ["XLEN", "events"]]) { reply in
                (reply.kind, reply.withBytes { String(decoding: $0, as: UTF8.self) })
            }
            #expect(kinds.map(\.0) == [.simpleString, .error, .integer])
            #expect(kinds[0].1 == "PONG" && kinds[1].1.hasPrefix("ERR") && kinds[2].1 == "")
            #expect(try await redis.send("PING") == .simpleString("PONG"))
        }
    }

    @Test("an error reply throws .server with its prefix and leaves the connection usable")
    func serverError() async throws {
        try await withRedis { _, redis in
            _ = try await redis.send("XADD", "events", "*", "kind", "message")
            let missingGroup = await #expect(throws: RedisError.self) {
                try await redis.send(
                    "XREADGROUP",
                    "GROUP",
                    "historian",
                    "worker-1",
                    "COUNT",
                    "1",
                    "STREAMS",
                    "events",
                    ">"
                )
            }
            #expect(missingGroup?.code == .server)
            #expect(missingGroup?.serverErrorPrefix == "NOGROUP")
            #expect(missingGroup?.message.hasPrefix("NOGROUP") == true)
            #expect(missingGroup?.isTransient == false)

            #expect(try await redis.send("XGROUP", "CREATE", "events", "historian", "0") == .simpleString("OK"))
            let duplicate = await #expect(throws: RedisError.self) {
                try await redis.send("XGROUP", "CREATE", "events", "historian", "0")
            }
            #expect(duplicate?.serverErrorPrefix == "BUSYGROUP")
            #expect(duplicate?.isTransient == false)

            let unknown = await #expect(throws: RedisError.self) {
                try await redis.send("NOSUCHCOMMAND", "secret payload")
            }
            #expect(unknown?.serverErrorPrefix == "ERR")
            #expect(unknown?.description.contains("secret") == false)

            #expect(!redis.isBroken)
            #expect(try await redis.send("PING") == .simpleString("PONG"))
        }
    }

    @Test("a command that outlasts its timeout throws .timeout quickly and breaks the connection")
    func commandTimeout() async throws {
        try await withRedis { _, redis in
            let clock = ContinuousClock()
            let start = clock.now
            let error = await #expect(throws: RedisError.self) {
                try await redis.send("BLPOP", "nokey", "10", timeout: .milliseconds(200))
            }
            let elapsed = clock.now - start
            #expect(error?.code == .timeout)
            #expect(error?.isTransient == true)
            // Far below the 10 s the server would block; generous for a loaded 2-core machine.
            #expect(elapsed < .seconds(5), "took \(elapsed)")
            #expect(redis.isBroken)

            let after = await #expect(throws: RedisError.self) { try await redis.send("PING") }
            #expect(after?.code == .connectionClosed)
            let afterPipeline = await #expect(throws: RedisError.self) { try await redis.pipeline([["PING"]]) }
            #expect(afterPipeline?.code == .connectionClosed)
        }
    }

    @Test("a per-call timeout applies to that call only")
    func perCallTimeoutIsRestored() async throws {
        try await withRedis(commandTimeout: .milliseconds(300)) { _, redis in
            // Longer than the command timeout, but within the per-call one.
            let popped = try await redis.send("BLPOP", "nokey", "1", timeout: .seconds(5))
            #expect(popped == .null)
            #expect(!redis.isBroken)
            // Back to the 300 ms command timeout.
            let error = await #expect(throws: RedisError.self) { try await redis.send("BLPOP", "nokey", "2") }
            #expect(error?.code == .timeout)
        }
    }

    @Test("connecting to a port nobody listens on throws a transient connectionFailed")
    func connectionRefused() async throws {
        let server = try await RedisServer.start()
        let url = server.url
        await shutDown(server)
        try await server.destroy()

        let error = await #expect(throws: RedisError.self) {
            try await RedisConnection.connect(RedisConfiguration(url: url), logger: testLogger())
        }
        #expect(error?.code == .connectionFailed)
        #expect(error?.isTransient == true)
    }

    @Test("AUTH with the right password works; a wrong one is a permanent authenticationFailed")
    func authentication() async throws {
        let password = "c0rrect h0rse:b@ttery/st%ple"
        let encoded = "c0rrect%20h0rse%3Ab%40ttery%2Fst%25ple"
        try await withRedis { server, admin in
            _ = try await admin.send(
                "ACL",
                "SETUSER",
                "historian",
                "on",
                RedisArgument(">" + password),
                "~*",
                "+@all"
            )
            #expect(
                try await admin.send("CONFIG", "SET", "requirepass", RedisArgument(password)) == .simpleString("OK")
            )

            let sink = LogSink()
            let logger = testLogger(sink)
            let base = "127.0.0.1:\(server.port)"
            let defaultUser = try await RedisConnection.connect(
                RedisConfiguration(url: "redis://:\(encoded)@\(base)/2"),
                logger: logger
            )
            #expect(try await defaultUser.send("SET", "k", "v") == .simpleString("OK"))
            #expect(try await defaultUser.send("CLIENT", "INFO").string?.contains("db=2") == true)
            defaultUser.close()

            let namedUser = try await RedisConnection.connect(
                RedisConfiguration(url: "redis://historian:\(encoded)@\(base)"),
                logger: logger
            )
            #expect(try await namedUser.send("ACL", "WHOAMI") == .bulkString(Array("historian".utf8)))
            namedUser.close()

            let wrongPassword = "wr0ng-Passw0rd"
            let wrong = await #expect(throws: RedisError.self) {
                try await RedisConnection.connect(
                    RedisConfiguration(url: "redis://:\(wrongPassword)@\(base)"),
                    logger: logger
                )
            }
            #expect(wrong?.code == .authenticationFailed)
            #expect(wrong?.isTransient == false)
            #expect(wrong?.description.contains(wrongPassword) == false)
            #expect(wrong?.message.contains(wrongPassword) == false)

            // No password at all, but a database to select: the server's NOAUTH is an authentication failure too.
            let missing = await #expect(throws: RedisError.self) {
                try await RedisConnection.connect(RedisConfiguration(url: "redis://\(base)/1"), logger: logger)
            }
            #expect(missing?.code == .authenticationFailed)

            #expect(sink.all.contains { $0.contains("Connected to Redis") && $0.contains(base) })
            #expect(!sink.all.contains { $0.contains(password) || $0.contains(encoded) || $0.contains(wrongPassword) })
        }
    }

    @Test("close is idempotent and later calls throw connectionClosed")
    func close() async throws {
        try await withRedis { _, redis in
            let pong = try await redis.send("PING")
            #expect(pong == .simpleString("PONG"))
            redis.close()
            redis.close()
            #expect(redis.isBroken)
            let error = await #expect(throws: RedisError.self) { try await redis.send("PING") }
            #expect(error?.code == .connectionClosed)
        }
    }

    @Test("a server that goes away breaks the connection with a transient error; a new one works after restart")
    func serverRestart() async throws {
        try await withRedis { server, redis in
            _ = try await redis.send("SET", "k", "v")
            await shutDown(server)
            try await server.stop()

            // Large enough that writing it after the peer is gone hits EPIPE, which must not kill the process.
            let payload = RedisArgument([UInt8](repeating: 0x61, count: 256 * 1024))
            let error = await #expect(throws: RedisError.self) {
                _ = try await redis.pipeline(Array(repeating: ["SET", "k", payload], count: 64))
                _ = try await redis.pipeline(Array(repeating: ["SET", "k", payload], count: 64))
            }
            #expect(error?.isTransient == true)
            #expect(redis.isBroken)

            try await server.start()
            let fresh = try await RedisConnection.connect(RedisConfiguration(url: server.url), logger: testLogger())
            defer { fresh.close() }
            #expect(try await fresh.send("PING") == .simpleString("PONG"))
        }
    }

    @Test("from a blocking thread commands run in place; callers there and on the pool still get their own replies")
    func commandsOnABlockingThread() async throws {
        try await withRedis { _, redis in
            let executor = BlockingThreadExecutor(name: "test-worker")
            defer { executor.shutdown() }

            // Each caller sends its own counter's INCR and checks the reply it gets: a reply read by the
            // wrong caller would show as a gap or a repeat.
            @Sendable func count(_ key: String) async throws -> (inPlace: [Bool], replies: [Int64]) {
                var inPlace: [Bool] = []
                var replies: [Int64] = []
                for _ in 0..<200 {
                    let (reply, onBlockingThread) = try await redis.send(["INCR", RedisArgument(key)]) { view in
                        (try view.value.int ?? -1, BlockingThread.isCurrent)
                    }
                    replies.append(reply)
                    inPlace.append(onBlockingThread)
                }
                return (inPlace, replies)
            }
            async let fromThread = Task(executorPreference: executor) { try await count("thread") }.value
            async let fromPool = Task.detached { try await count("pool") }.value
            let (thread, pool) = try await (fromThread, fromPool)

            #expect(thread.inPlace.allSatisfy { $0 }, "the executor's commands ran on its thread")
            #expect(pool.inPlace.allSatisfy { !$0 }, "the pool's commands ran on the queue")
            #expect(thread.replies == Array(1...200))
            #expect(pool.replies == Array(1...200))
        }
    }
}
