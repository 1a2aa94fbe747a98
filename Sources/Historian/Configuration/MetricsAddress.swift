/// The address of the metrics endpoint: `host:port`, with an IPv6 address in brackets
/// (`[::1]:9464`).
///
/// Checked when the configuration loads, so that a typo stops every command at once with a
/// message that says what is wrong, rather than `run` failing to listen later.
public struct MetricsAddress: Sendable, Hashable, CustomStringConvertible {
    /// A host name, an IPv4 address or an IPv6 address (without brackets).
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Parses `host:port` or `[IPv6]:port`; the port is 1 to 65535.
    /// - Throws: `HistorianError` (`invalid_configuration`) naming `metrics_address` and the problem.
    public init(parsing text: String) throws {
        func refuse(_ problem: String) -> HistorianError {
            HistorianError(
                .invalidConfiguration,
                "metrics_address: \"\(text)\" is not host:port: \(problem) "
                    + "(for example 127.0.0.1:9464 or [::1]:9464; empty turns the endpoint off)"
            )
        }
        if text.contains("://") || text.contains("/") { throw refuse("write only host:port, no scheme or path") }
        let host: Substring
        let port: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { throw refuse("no ] after the IPv6 address") }
            host = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            guard rest.hasPrefix(":") else { throw refuse("no :port after the ]") }
            port = rest.dropFirst()
            guard host.contains(":"), host.allSatisfy({ $0.isHexDigit || $0 == ":" || $0 == "." }) else {
                throw refuse("\"\(host)\" in brackets is not an IPv6 address")
            }
        } else {
            guard let colon = text.lastIndex(of: ":") else { throw refuse("no port") }
            host = text[..<colon]
            port = text[text.index(after: colon)...]
            if host.contains(":") { throw refuse("an IPv6 address goes in brackets, like [::1]:9464") }
            guard !host.isEmpty else { throw refuse("no host (0.0.0.0 listens on every interface)") }
            guard host.allSatisfy({ ($0.isASCII && ($0.isLetter || $0.isNumber)) || $0 == "." || $0 == "-" }) else {
                throw refuse("\"\(host)\" is not a host name or an IP address")
            }
        }
        guard !port.isEmpty, port.allSatisfy({ $0.isASCII && $0.isNumber }), let number = Int(port),
            (1...65535).contains(number)
        else { throw refuse("the port must be a number from 1 to 65535") }
        self.init(host: String(host), port: number)
    }

    /// `127.0.0.1:9464`, `[::1]:9464`: as written in the configuration.
    public var description: String {
        host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }
}
