import RedisClient
import Testing

@Suite("RedisConfiguration")
struct RedisConfigurationTests {
    struct ValidURL: Sendable, CustomTestStringConvertible {
        var url: String
        var endpoint: RedisConfiguration.Endpoint
        var username: String? = nil
        var password: String? = nil
        var database: Int = 0

        var testDescription: String { url }
    }

    @Test(
        "parses valid URLs",
        arguments: [
            ValidURL(url: "redis://127.0.0.1:6390", endpoint: .tcp(host: "127.0.0.1", port: 6390)),
            ValidURL(url: "redis://cache.internal", endpoint: .tcp(host: "cache.internal", port: 6379)),
            ValidURL(url: "redis://", endpoint: .tcp(host: "127.0.0.1", port: 6379)),
            ValidURL(url: "redis://:7001/", endpoint: .tcp(host: "127.0.0.1", port: 7001)),
            ValidURL(url: "REDIS://host:1/0", endpoint: .tcp(host: "host", port: 1)),
            ValidURL(
                url: "redis://:s3cret@redis.internal:7000/2",
                endpoint: .tcp(host: "redis.internal", port: 7000),
                password: "s3cret",
                database: 2
            ),
            ValidURL(
                url: "redis://historian:p%40ss%3Aw%2Frd%20%25@10.0.0.5:6380/15",
                endpoint: .tcp(host: "10.0.0.5", port: 6380),
                username: "historian",
                password: "p@ss:w/rd %",
                database: 15
            ),
            ValidURL(url: "redis://reader@host", endpoint: .tcp(host: "host", port: 6379), username: "reader"),
            ValidURL(url: "redis://[::1]:6379/3", endpoint: .tcp(host: "::1", port: 6379), database: 3),
            ValidURL(url: "redis://host:6379?db=5", endpoint: .tcp(host: "host", port: 6379), database: 5),
            ValidURL(url: "unix:///var/run/redis/redis.sock", endpoint: .unix(path: "/var/run/redis/redis.sock")),
            ValidURL(url: "unix:///tmp/redis.sock?db=4", endpoint: .unix(path: "/tmp/redis.sock"), database: 4),
            ValidURL(
                url: "unix://app:pw%21@/tmp/my%20redis.sock?db=1",
                endpoint: .unix(path: "/tmp/my redis.sock"),
                username: "app",
                password: "pw!",
                database: 1
            ),
        ]
    )
    func parsesValidURL(_ expected: ValidURL) throws {
        let configuration = try RedisConfiguration(url: expected.url)
        #expect(configuration.endpoint == expected.endpoint)
        #expect(configuration.username == expected.username)
        #expect(configuration.password == expected.password)
        #expect(configuration.database == expected.database)
        #expect(configuration.connectTimeout == .seconds(5))
        #expect(configuration.commandTimeout == .seconds(10))
    }

    @Test(
        "rejects invalid URLs without quoting them",
        arguments: [
            "",
            "127.0.0.1:6379",
            "http://:topsecret@host:6379",
            "redis://:topsecret@host:0",
            "redis://:topsecret@host:65536",
            "redis://:topsecret@host:port",
            "redis://:topsecret@host:",
            "redis://user:topsecret",
            "redis://:topsecret@host/db1",
            "redis://:topsecret@host/1/2",
            "redis://:top%ZZsecret@host",
            "redis://:topsecret%C3@host",
            "redis://:topsecret@host?foo=bar",
            "redis://:topsecret@host/1?db=2",
            "redis://:topsecret@[::1",
            "redis://:top#secret@host",
            "redis://:topsecret@ho st",
            "unix://",
            "unix:///",
            "unix://:topsecret@host/tmp/redis.sock",
            "unix:///tmp/redis.sock?db=x&topsecret",
        ]
    )
    func rejectsInvalidURL(_ url: String) {
        let error = #expect(throws: RedisError.self) { try RedisConfiguration(url: url) }
        #expect(error?.code == .invalidURL)
        #expect(error?.isTransient == false)
        #expect(error?.description.contains("secret") == false)
        #expect(error?.message.contains("secret") == false)
    }

    @Test(
        "rediss:// URLs, single or cluster, are refused as TLS this build lacks, pointing at a tunnel",
        arguments: ["rediss://:topsecret@host:6379", "REDISS://host", "rediss://:topsecret@h1:1,h2:2"]
    )
    func refusesTLS(_ url: String) {
        let errors = [
            #expect(throws: RedisError.self) { try RedisConfiguration(url: url) },
            #expect(throws: RedisError.self) { try RedisClusterConfiguration(url: url) },
        ]
        for error in errors {
            #expect(error?.code == .invalidConfiguration)
            #expect(error?.isTransient == false)
            #expect(error?.message.contains("TLS (rediss://) is not supported by this build") == true)
            #expect(error?.message.contains("hiredis (0.14)") == true)
            #expect(error?.message.contains("stunnel") == true && error?.message.contains("docs/tls.md") == true)
            #expect(error?.description.contains("secret") == false)
        }
    }

    @Test("description, debugDescription and dump redact the password")
    func redactsPassword() throws {
        let configuration = try RedisConfiguration(url: "redis://historian:hunter2@127.0.0.1:6390/1")
        #expect(configuration.password == "hunter2")
        var dumped = ""
        dump(configuration, to: &dumped)
        for text in [
            configuration.description, configuration.debugDescription, String(describing: configuration),
            String(reflecting: configuration), "\(configuration)", dumped,
        ] {
            #expect(!text.contains("hunter2"))
            #expect(text.contains("***"))
        }
        #expect(configuration.description.contains("127.0.0.1:6390"))
        #expect(configuration.description.contains("historian"))
    }

    @Test("description shows no password marker when there is none")
    func descriptionWithoutPassword() {
        let configuration = RedisConfiguration(endpoint: .unix(path: "/tmp/r.sock"))
        #expect(configuration.description.contains("unix:/tmp/r.sock"))
        #expect(configuration.description.contains("password: nil"))
    }
}
