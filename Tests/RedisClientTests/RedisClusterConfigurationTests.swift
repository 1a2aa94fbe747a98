import RedisClient
import Testing

/// Cluster configurations: seeds from a URL with a comma-separated host list, and the database-0 rule.
@Suite
struct RedisClusterConfigurationTests {
    @Test("a comma-separated host list gives one seed per host, sharing credentials and defaults")
    func parsesSeedList() throws {
        let plain = try RedisClusterConfiguration(url: "redis://127.0.0.1:7001,127.0.0.1:7002")
        #expect(
            plain.seeds.map(\.endpoint) == [.tcp(host: "127.0.0.1", port: 7001), .tcp(host: "127.0.0.1", port: 7002)]
        )
        #expect(plain.seeds.allSatisfy { $0.username == nil && $0.password == nil && $0.database == 0 })
        #expect(plain.seeds.allSatisfy { $0.connectTimeout == .seconds(5) && $0.commandTimeout == .seconds(10) })
        #expect(plain.maxRedirects == 5)

        // An unencoded ',' and an encoded '@' in the password; the host list starts after the last '@'.
        let full = try RedisClusterConfiguration(
            url: "redis://historian:p%40ss,word@10.0.0.1:7001,[::1]:7002,redis-3.internal:7003/0",
            maxRedirects: 3
        )
        #expect(
            full.seeds.map(\.endpoint) == [
                .tcp(host: "10.0.0.1", port: 7001), .tcp(host: "::1", port: 7002),
                .tcp(host: "redis-3.internal", port: 7003),
            ]
        )
        #expect(full.seeds.allSatisfy { $0.username == "historian" && $0.password == "p@ss,word" && $0.database == 0 })
        #expect(full.maxRedirects == 3)
        #expect(!full.description.contains("p@ss"))

        let query = try RedisClusterConfiguration(url: "redis://:secret@h1:1,h2?db=0")
        #expect(query.seeds.map(\.endpoint) == [.tcp(host: "h1", port: 1), .tcp(host: "h2", port: 6379)])
        #expect(query.seeds.allSatisfy { $0.username == nil && $0.password == "secret" })

        let single = try RedisClusterConfiguration(url: "redis://127.0.0.1:7001")
        #expect(single.seeds.map(\.endpoint) == [.tcp(host: "127.0.0.1", port: 7001)])
    }

    @Test("a database other than 0 is refused, in a URL or a seed, without quoting the password")
    func refusesOtherDatabases() throws {
        for url in [
            "redis://h1:1,h2:2/1", "redis://user:hunter2@h1:1,h2:2/3", "redis://h1:1?db=2", "redis://:hunter2@h1:1/15",
        ] {
            let error = try #require(throws: RedisError.self, "\(url)") { try RedisClusterConfiguration(url: url) }
            #expect(error.code == .invalidURL)
            #expect(error.message.contains("database 0"))
            #expect(!error.message.contains("hunter2"))
        }

        let error = try #require(throws: RedisError.self) {
            try RedisClusterConfiguration(seeds: [RedisConfiguration(), RedisConfiguration(database: 2)])
        }
        #expect(error.code == .invalidConfiguration)
        #expect(error.message.contains("database 0"))
        #expect(throws: RedisError.self) { try RedisClusterConfiguration(seeds: []) }

        // Seeds edited after validation are checked again by the client.
        var configuration = try RedisClusterConfiguration(seeds: [RedisConfiguration()])
        configuration.seeds[0].database = 4
        let clientError = try #require(throws: RedisError.self) {
            try RedisClusterClient(configuration, logger: testLogger())
        }
        #expect(clientError.code == .invalidConfiguration)
    }

    @Test("malformed cluster URLs are refused with invalidURL")
    func refusesMalformedURLs() {
        for url in [
            "redis://h1:1,,h2:2", "redis://h1:1,", "unix:///tmp/redis.sock", "h1:1,h2:2",
            "redis://h1:1,h2:99999", "redis://h1:1,h2:2/x",
        ] {
            #expect(throws: RedisError.self, "\(url)") {
                do {
                    _ = try RedisClusterConfiguration(url: url)
                } catch let error as RedisError {
                    #expect(error.code == .invalidURL, "\(url)")
                    throw error
                }
            }
        }
    }
}
