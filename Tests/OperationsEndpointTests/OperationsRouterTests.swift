import Foundation
import Hummingbird
import HummingbirdTesting
import Prometheus
import Testing

@testable import Historian
@testable import OperationsEndpoint

/// The operations routes, served in-process: no port, no daemon.
struct OperationsRouterTests {
    func application(_ health: DaemonHealth, registry: PrometheusCollectorRegistry = .init()) -> some ApplicationProtocol {
        Application(router: OperationsRouter.build(registry: registry, health: health))
    }

    func object(_ response: TestResponse) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(buffer: response.body)) as? [String: Any])
    }

    @Test func readyzIs503NamingWhatIsMissingThen200() async throws {
        let health = DaemonHealth()
        health.update(Readiness(postgres: .unreachable, redis: .reachable, schema: .unknown))
        try await application(health).test(.router) { client in
            try await client.execute(uri: "/readyz", method: .get) { response in
                #expect(response.status == .serviceUnavailable)
                #expect(response.headers[.contentType] == "application/json")
                let body = try object(response)
                #expect(body["ready"] as? Bool == false)
                #expect(body["missing"] as? [String] == ["postgres", "schema"])
            }
            health.update(Readiness(postgres: .reachable, redis: .reachable, schema: .behind(recorded: 1, needed: 2)))
            try await client.execute(uri: "/readyz", method: .get) { response in
                #expect(response.status == .serviceUnavailable)
                let body = try object(response)
                #expect((body["checks"] as? [String: String])?["schema"] == "version 1, this build needs 2")
            }
            health.update(Readiness(postgres: .reachable, redis: .reachable, schema: .current))
            try await client.execute(uri: "/readyz", method: .get) { response in
                let body = try object(response)
                #expect(response.status == .ok)
                #expect(body["missing"] as? [String] == [])
            }
        }
    }

    @Test func healthzIs200UntilALoopIsStuck() async throws {
        let health = DaemonHealth(stallLimit: .seconds(2))
        let worker = health.loops.register("worker-0")
        // Servers down do not make the process unhealthy: only a loop stuck without an answer does.
        health.update(Readiness(postgres: .unreachable, redis: .unreachable))
        try await application(health).test(.router) { client in
            try await client.execute(uri: "/healthz", method: .get) { response in
                let body = try object(response)
                #expect(response.status == .ok)
                #expect(body["status"] as? String == "alive")
            }
            worker.awaiting(at: .now - .seconds(3))
            try await client.execute(uri: "/healthz", method: .get) { response in
                #expect(response.status == .serviceUnavailable)
                let body = try object(response)
                #expect(body["status"] as? String == "stuck")
                let stuck = try #require(body["stuck"] as? [[String: Any]])
                #expect(stuck.first?["loop"] as? String == "worker-0")
                #expect((stuck.first?["waited_seconds"] as? Int ?? 0) >= 3)
            }
            worker.answered()
            try await client.execute(uri: "/healthz", method: .get) { response in
                #expect(response.status == .ok)
            }
        }
    }

    @Test func metricsServesTheRegistryAndOtherPathsAre404() async throws {
        let registry = PrometheusCollectorRegistry()
        registry.makeGauge(descriptor: MetricNameDescriptor(metricName: "historian_ready", unitName: "", helpText: "")).set(to: 1.0)
        try await application(DaemonHealth(), registry: registry).test(.router) { client in
            try await client.execute(uri: "/metrics", method: .get) { response in
                #expect(response.status == .ok)
                #expect(response.headers[.contentType] == "text/plain; version=0.0.4; charset=utf-8")
                #expect(String(buffer: response.body).contains("historian_ready 1"))
            }
            try await client.execute(uri: "/", method: .get) { response in
                #expect(response.status == .notFound)
            }
        }
    }
}
