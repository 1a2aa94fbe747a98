import LocalServers
import RedisClient
import Testing

/// The hash slot function: the specification's examples, and agreement with `CLUSTER KEYSLOT` on a real cluster.
@Suite(.serialized)
struct RedisClusterSlotTests {
    @Test("the specification's examples: CRC16 check value, hash tags")
    func specificationExamples() {
        #expect(RedisHashSlot(key: "123456789").value == 12739)
        // CRC16-XMODEM's check value is 0x31C3 = 12739, below 16384, so the slot is the CRC itself.
        #expect(RedisHashSlot(key: Array("123456789".utf8)).value == 0x31C3)

        let following = RedisHashSlot(key: "{user1000}.following")
        #expect(following == RedisHashSlot(key: "{user1000}.followers"))
        #expect(following == RedisHashSlot(key: "user1000"))
        // An empty tag is no tag: the whole key is hashed.
        #expect(RedisHashSlot(key: "foo{}{bar}") != RedisHashSlot(key: "bar"))
        #expect(RedisHashSlot(key: "foo{}{bar}") == RedisHashSlot(key: Array("foo{}{bar}".utf8)))
        // From the first '{' to the first '}' after it.
        #expect(RedisHashSlot(key: "foo{{bar}}zap") == RedisHashSlot(key: "{bar"))
        #expect(RedisHashSlot(key: "foo{bar}{zap}") == RedisHashSlot(key: "bar"))
        // No closing brace, or only one before the opening: the whole key.
        #expect(RedisHashSlot(key: "foo{bar") != RedisHashSlot(key: "bar"))
        #expect(RedisHashSlot(key: "}foo{bar}") == RedisHashSlot(key: "bar"))

        #expect(RedisHashSlot(key: "").value == 0)
        #expect(RedisHashSlot(16383)?.value == 16383)
        #expect(RedisHashSlot(16384) == nil)
        #expect(RedisHashSlot(-1) == nil)
    }

    @Test("every slot matches CLUSTER KEYSLOT for random ASCII, binary and UTF-8 keys")
    func matchesClusterKeyslot() async throws {
        var keys: [[UInt8]] = [
            [], Array("{}".utf8), Array("{a}".utf8), Array("a{b}c{d}".utf8), [0x7B, 0x00, 0x7D],
            [0xFF, 0x7B, 0xFE, 0x7D],
        ]
        var generator = SystemRandomNumberGenerator()
        let braces: [UInt8] = [0x7B, 0x7D]
        for index in 0..<400 {
            let length = Int.random(in: 1...40, using: &generator)
            switch index % 4 {
            case 0:
                keys.append((0..<length).map { _ in UInt8.random(in: 0x20...0x7E, using: &generator) })
            case 1:
                keys.append((0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) })
            case 2:
                let scalars = "aé日本語🙂{}ß∑x".unicodeScalars.map(Character.init)
                keys.append(Array(String((0..<length).map { _ in scalars.randomElement(using: &generator)! }).utf8))
            default:
                // Brace-heavy binary keys, to exercise the hash-tag rule.
                keys.append(
                    (0..<length).map { _ in
                        Bool.random(using: &generator)
                            ? braces.randomElement(using: &generator)! : UInt8.random(in: 0...255, using: &generator)
                    }
                )
            }
        }

        let cluster = try await RedisCluster.start()
        do {
            let node = try await RedisConnection.connect(
                RedisConfiguration(endpoint: .tcp(host: "127.0.0.1", port: cluster.nodes[0].port)),
                logger: testLogger()
            )
            defer { node.close() }
            let replies = try await node.pipeline(keys.map { ["CLUSTER", "KEYSLOT", RedisArgument($0)] })
            #expect(replies.count == keys.count)
            for (key, reply) in zip(keys, replies) {
                #expect(reply == .integer(Int64(RedisHashSlot(key: key).value)), "key \(key)")
                #expect(RedisHashSlot(key: RedisArgument(key)) == RedisHashSlot(key: key))
            }
        } catch {
            try? await cluster.destroy()
            throw error
        }
        try await cluster.destroy()
    }
}
