import Hummingbird
import Logging
import Metrics
import Synchronization

/// One log line and the metrics of every request: method, route pattern
/// (`/v1/conversations/{id}`, never the path with its IDs), status and duration. Nothing of the
/// request's path, query, headers or body, nor of the answer's body.
struct RequestRecordingMiddleware<Context: RequestContext>: RouterMiddleware {
    let logger: Logger
    let metrics: APIMetrics

    func handle(
        _ request: Request,
        context: Context,
        next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        let started = ContinuousClock.now
        let status: HTTPResponse.Status
        let response: Response
        do {
            response = try await next(request, context)
            status = response.status
        } catch {
            // FailureMiddleware answers every error; whatever gets past it is a 500.
            record(request, context, status: .internalServerError, since: started)
            throw error
        }
        record(request, context, status: status, since: started)
        return response
    }

    private func record(
        _ request: Request,
        _ context: Context,
        status: HTTPResponse.Status,
        since started: ContinuousClock.Instant
    ) {
        let elapsed = ContinuousClock.now - started
        let route = RouteLabel.of(context)
        metrics.record(method: request.method.rawValue, route: route, status: status.code, duration: elapsed)
        let milliseconds = Double(elapsed.components.seconds) * 1000 + Double(elapsed.components.attoseconds) / 1e15
        logger.info(
            "api request",
            metadata: [
                "http.method": "\(request.method)", "http.route": "\(route)", "http.status": "\(status.code)",
                "duration_ms": "\((milliseconds * 1000).rounded() / 1000)",
            ]
        )
    }
}

/// A request's route as labels and logs give it: the pattern it matched, or `unmatched`.
enum RouteLabel {
    static func of(_ context: some RequestContext) -> String {
        // Hummingbird names a request that matched no route "NotFound".
        guard let path = context.endpointPath, path != "NotFound" else { return "unmatched" }
        return path
    }
}

/// The API's metrics: `historian_api_requests_total{method,route,status}` and
/// `historian_api_request_duration_seconds{method,route}`. Routes are patterns and statuses a
/// few codes, so every label has a small, fixed set of values.
public final class APIMetrics: Sendable {
    private struct Key: Hashable {
        var method: String
        var route: String
        var status: Int
    }

    private let factory: any MetricsFactory
    private let counters = Mutex<[Key: Counter]>([:])
    private let timers = Mutex<[Key: Timer]>([:])

    /// - Parameter factory: the process's bootstrapped factory by default.
    public init(factory: any MetricsFactory = MetricsSystem.factory) {
        self.factory = factory
    }

    func record(method: String, route: String, status: Int, duration: Duration) {
        let key = Key(method: method, route: route, status: status)
        let counter = counters.withLock { counters in
            if let counter = counters[key] { return counter }
            let counter = Counter(
                label: "historian_api_requests_total",
                dimensions: [("method", method), ("route", route), ("status", String(status))],
                factory: factory
            )
            counters[key] = counter
            return counter
        }
        counter.increment()
        let timerKey = Key(method: method, route: route, status: 0)
        let timer = timers.withLock { timers in
            if let timer = timers[timerKey] { return timer }
            let timer = Timer(
                label: "historian_api_request_duration_seconds",
                dimensions: [("method", method), ("route", route)],
                preferredDisplayUnit: .seconds,
                factory: factory
            )
            timers[timerKey] = timer
            return timer
        }
        timer.record(duration: duration)
    }
}
