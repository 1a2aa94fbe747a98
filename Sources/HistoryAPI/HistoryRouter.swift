import Historian
import Hummingbird
import Logging
import OpenAPIHummingbird

/// The history API's routes, built in one place so that tests serve them in-process
/// (HummingbirdTesting) without a port or a daemon.
///
/// The routes are openapi.yaml's operations, registered by the code the generator wrote from it
/// (`HistoryHandler`), behind three middlewares, outermost first: the request's log line and
/// metrics, the error bodies, and the bearer token.
public enum HistoryRouter {
    /// - Parameters:
    ///   - token: the bearer token every request must carry; `nil` asks for none (only allowed
    ///     on loopback: `HistoryAPIService` checks).
    ///   - eraser: what the `DELETE`s call; `nil` answers them 501.
    public static func build(
        reader: HistoryReader,
        eraser: (any HistoryEraser)?,
        token: String?,
        metrics: APIMetrics = APIMetrics(),
        logger: Logger
    ) throws -> Router<BasicRequestContext> {
        let router = Router()
        // Middlewares apply to the routes added after them, and to unmatched paths.
        router.add(middleware: RequestRecordingMiddleware(logger: logger, metrics: metrics))
        router.add(middleware: FailureMiddleware(logger: logger))
        if let token { router.add(middleware: BearerAuthenticationMiddleware(token: token)) }
        // Compact JSON, keys sorted (the runtime's default also pretty-prints).
        try HistoryHandler(reader: reader, eraser: eraser)
            .registerHandlers(on: router, configuration: .init(jsonEncodingOptions: [.sortedKeys]))
        return router
    }
}
