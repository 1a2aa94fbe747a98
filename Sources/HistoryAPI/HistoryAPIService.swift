import Historian
import Hummingbird
import Logging
import ServiceLifecycle

/// Serves `HistoryRouter`'s routes on `api_address` (contract §7).
///
/// Refuses to be made for an address other than loopback without a token: the API serves every
/// user's conversations to whoever can reach it.
public struct HistoryAPIService: Service, CustomStringConvertible {
    let address: MetricsAddress
    let token: String?
    let reader: HistoryReader
    let eraser: (any HistoryEraser)?
    let metrics: APIMetrics
    let logger: Logger

    /// - Throws: `HistorianError` (`invalid_configuration`) for an address other than loopback
    ///   without a token.
    public init(
        address: MetricsAddress,
        token: String?,
        reader: HistoryReader,
        eraser: (any HistoryEraser)?,
        metrics: APIMetrics = APIMetrics(),
        logger: Logger
    ) throws {
        if token == nil, !Self.isLoopback(address.host) {
            throw HistorianError(
                .invalidConfiguration,
                "api_address \(address) is not a loopback address and no api_token is set: the history API "
                    + "would serve every conversation to anyone who can reach it. Set api_token (or the credential "
                    + "api-token), or listen on 127.0.0.1 or [::1]."
            )
        }
        self.address = address
        self.token = token
        self.reader = reader
        self.eraser = eraser
        self.metrics = metrics
        self.logger = logger
    }

    /// The service for `configuration`'s `api_address` and `api_token`, reading through
    /// connections of its own; `nil` when `api_address` is empty.
    public init?(configuration: HistorianConfiguration, eraser: (any HistoryEraser)?, logger: Logger) throws {
        guard let address = configuration.apiAddress else { return nil }
        try configuration.requireSingleNode(for: "the history API (api_address)")
        let connections = HistoryConnections(endpoints: try ServerEndpoints(configuration), logger: logger)
        try self.init(
            address: address,
            token: configuration.apiToken,
            reader: HistoryReader(connections: connections, cache: CacheSettings(configuration), logger: logger),
            eraser: eraser,
            logger: logger
        )
    }

    // ServiceLifecycle logs its services; no token here.
    public var description: String { "HistoryAPIService(address: \(address), token: \(token == nil ? "none" : "***"))" }

    /// `localhost`, 127.0.0.0/8 or `::1`: addresses only this machine reaches.
    static func isLoopback(_ host: String) -> Bool {
        if host == "localhost" || host == "::1" || host == "0:0:0:0:0:0:0:1" { return true }
        let octets = host.split(separator: ".", omittingEmptySubsequences: false)
        return octets.count == 4 && octets[0] == "127" && octets.allSatisfy { UInt8($0) != nil }
    }

    public func run() async throws {
        defer { reader.connections.close() }
        if token == nil {
            logger.notice(
                "history API without a token: it listens on loopback only",
                metadata: ["api.address": "\(address)"]
            )
        }
        let application = Application(
            router: try HistoryRouter.build(
                reader: reader,
                eraser: eraser,
                token: token,
                metrics: metrics,
                logger: logger
            ),
            configuration: ApplicationConfiguration(
                address: .hostname(address.host, port: address.port),
                serverName: nil
            ),
            logger: logger
        )
        do {
            try await application.run()
        } catch {
            throw HistorianError(
                .cannotListen,
                "api_address \(address): cannot serve the history API there: \(error). "
                    + "Choose a free address, or an empty api_address to turn the API off."
            )
        }
    }
}
