import Historian
import Hummingbird
import Logging
import Metrics
import Prometheus
import ServiceLifecycle

/// Serves `OperationsRouter`'s routes (`/metrics`, `/healthz`, `/readyz`) on `metrics_address`.
///
/// The metrics come from a `PrometheusCollectorRegistry` that `bootstrap()` made the process's
/// swift-metrics backend; the code that records them (`DaemonMetrics`) knows only swift-metrics.
public struct OperationsEndpoint: Service, CustomStringConvertible {
    let address: MetricsAddress
    let registry: PrometheusCollectorRegistry
    let health: DaemonHealth
    let logger: Logger
    let listening = ListeningEvent()

    public init(address: MetricsAddress, registry: PrometheusCollectorRegistry, health: DaemonHealth, logger: Logger) {
        self.address = address
        self.registry = registry
        self.health = health
        self.logger = logger
    }

    public var description: String { "OperationsEndpoint(address: \(address))" }

    /// The buckets of every duration histogram, in seconds: a batch takes a few milliseconds,
    /// so the finest is 1 ms (swift-prometheus starts at 5 ms).
    static let durationBuckets: [Duration] = [
        .milliseconds(1), .microseconds(2500), .milliseconds(5), .milliseconds(10), .milliseconds(25),
        .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1),
        .milliseconds(2500), .seconds(5), .seconds(10),
    ]

    /// Makes a new registry the process's metrics backend and returns it, to be served.
    ///
    /// swift-metrics allows one bootstrap per process: call this once, in `main`, before any
    /// metric is made (a metric made earlier records nothing, ever).
    public static func bootstrap() -> PrometheusCollectorRegistry {
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.defaultDurationHistogramBuckets = durationBuckets
        MetricsSystem.bootstrap(factory)
        return registry
    }

    public func run() async throws {
        let listening = listening
        let application = Application(
            router: OperationsRouter.build(registry: registry, health: health),
            configuration: ApplicationConfiguration(address: .hostname(address.host, port: address.port)),
            onServerRunning: { _ in listening.finish(.success(())) },
            logger: logger
        )
        do {
            try await application.run()
            // Ended by a graceful shutdown before it ever listened.
            listening.finish(.failure(CancellationError()))
        } catch {
            guard !listening.succeeded else { throw error }
            // The usual reason: the port is taken, by another historian or something else.
            let failure = HistorianError(
                .cannotListen,
                "metrics_address \(address): cannot listen there: \(error). "
                    + "Choose a free address, or an empty metrics_address to turn the endpoint off."
            )
            listening.finish(.failure(failure))
            throw failure
        }
    }

    /// Returns once the endpoint listens, or throws the error that kept it from listening: a
    /// service that must not start on a daemon whose endpoint will fail waits for this first.
    public func waitUntilListening() async throws {
        try await listening.wait()
    }
}
