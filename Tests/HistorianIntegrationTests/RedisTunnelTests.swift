import Foundation
import LocalServers
import RedisClient
import Testing

/// Redis over TLS, which this build's hiredis (0.14) cannot speak: `rediss://` is refused with a
/// message that points at the tunnel, and the documented tunnel (deploy/stunnel-redis.conf, run as
/// it is) carries a run to a Redis that speaks TLS only and checks its certificate.
@Suite(.serialized)
struct RedisTunnelTests {
    @Test("rediss:// is refused by check and run; through stunnel with the example config, a run stores everything")
    func throughStunnel() async throws {
        let certificates = try await TestCertificates.shared()
        try await TestEnvironment.with(redisTLS: certificates) { environment in
            #expect(environment.redisURL.hasPrefix("rediss://"))
            let direct = environment.historianEnvironment
            let check = try await HistorianProcess.run(["check"], environment: direct)
            #expect(check.status == 1)
            #expect(
                check.output.contains("problem: redis_url: TLS (rediss://) is not supported by this build"),
                "\(check.output)"
            )
            #expect(check.output.contains("stunnel") && check.output.contains("docs/tls.md"), "\(check.output)")
            // The rest is checked all the same.
            #expect(check.output.contains("ok: PostgreSQL reachable"), "\(check.output)")
            let refused = try await HistorianProcess.run(["run", "--once"], environment: direct)
            #expect(refused.status == 78, "\(refused.errors)")
            #expect(
                refused.errors.contains("cannot start: redis_url: TLS (rediss://) is not supported"),
                "\(refused.errors)"
            )

            let messages = Producer.workload(count: 300, conversations: 12, seed: 37)
            try await RedisTunnel.with(to: environment.redisServer, authority: certificates.authority) { tunnel in
                let redis = try await RedisConnection.connect(
                    RedisConfiguration(url: tunnel.url),
                    logger: environment.logger
                )
                defer { redis.close() }
                try await Producer.append(messages, redis: redis)
                var variables = environment.historianEnvironment
                variables["HISTORIAN_REDIS_URL"] = tunnel.url
                let run = try await HistorianProcess.run(["run", "--once"], environment: variables)
                #expect(run.status == 0, "\(run.errors)")
                try await expectStored(messages, in: environment)
                // Acknowledged through the tunnel too.
                let pending = try await redis.send("XPENDING", "chat:messages", "historian")
                #expect(pending.array?.first?.int == 0)
            }

            // A tunnel that trusts another CA refuses Redis's certificate: nothing passes.
            try await RedisTunnel.with(to: environment.redisServer, authority: certificates.otherAuthority) { tunnel in
                var variables = environment.historianEnvironment
                variables["HISTORIAN_REDIS_URL"] = tunnel.url
                let check = try await HistorianProcess.run(["check"], environment: variables)
                #expect(check.status == 1)
                #expect(check.output.contains("problem: Redis unreachable"), "\(check.output)")
                #expect(tunnel.log.contains("certificate verify failed"), "\(tunnel.log)")
            }
        }
    }
}
