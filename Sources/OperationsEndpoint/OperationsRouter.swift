import Foundation
import Historian
import Hummingbird
import Prometheus

/// The routes of the operations endpoint, built in one place so that tests can serve them
/// in-process (HummingbirdTesting) without a port:
///
/// - `GET /metrics`: the registry, in Prometheus's text format.
/// - `GET /healthz`: 200 while every loop of the process gets answers from the servers it waits
///   on, or is idle; 503 naming the loops stuck for longer than the stall limit.
/// - `GET /readyz`: 200 when both servers answer and the schema is current, else 503 with a JSON
///   body naming what is missing.
///
/// Bodies hold fixed words, names and numbers: never an error's text, a URL or a secret.
public enum OperationsRouter {
    /// The Prometheus text exposition format, version 0.0.4.
    static let metricsContentType = "text/plain; version=0.0.4; charset=utf-8"

    public static func build(registry: PrometheusCollectorRegistry, health: DaemonHealth) -> Router<BasicRequestContext> {
        let router = Router()
        router.get("metrics") { _, _ in
            Response(
                status: .ok,
                headers: [.contentType: metricsContentType],
                body: ResponseBody(byteBuffer: ByteBuffer(bytes: registry.emitToBuffer()))
            )
        }
        router.get("healthz") { _, _ in
            let stuck = health.snapshot().stuck
            let body: [String: Any] = [
                "status": stuck.isEmpty ? "alive" : "stuck",
                "stuck": stuck.map { ["loop": $0.name, "waited_seconds": Int($0.waited.components.seconds)] },
            ]
            return json(body, status: stuck.isEmpty ? .ok : .serviceUnavailable)
        }
        router.get("readyz") { _, _ in
            let readiness = health.readiness
            return Response(
                status: readiness.isReady ? .ok : .serviceUnavailable,
                headers: [.contentType: "application/json"],
                body: ResponseBody(byteBuffer: ByteBuffer(bytes: readiness.json))
            )
        }
        return router
    }

    private static func json(_ body: [String: Any], status: HTTPResponse.Status) -> Response {
        // Strings, numbers and arrays of them: serialization cannot fail.
        let data = (try? JSONSerialization.data(withJSONObject: body, options: [.sortedKeys])) ?? Data()
        return Response(
            status: status,
            headers: [.contentType: "application/json"],
            body: ResponseBody(byteBuffer: ByteBuffer(bytes: data))
        )
    }
}
