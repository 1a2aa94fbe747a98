import Foundation
import LocalServers

/// A running daemon's `GET /metrics` on a loopback port: plain HTTP/1.1, `Connection: close`.
enum MetricsScrape {
    static func get(port: Int) throws -> String {
        let response = try LoopbackHTTP.get(port: port, path: "/metrics")
        guard response.status == 200 else {
            throw BenchmarkError("metrics on port \(port): status \(response.status): \(response.body.prefix(100))")
        }
        return response.body
    }

    /// The last `--metrics-address` in `arguments` (one argument with `=`, or two), if any: the
    /// one the daemon takes.
    static func address(in arguments: [String]) -> String? {
        var address: String?
        for (index, argument) in arguments.enumerated() {
            if argument == "--metrics-address", index + 1 < arguments.count {
                address = arguments[index + 1]
            } else if argument.hasPrefix("--metrics-address=") {
                address = String(argument.dropFirst("--metrics-address=".count))
            }
        }
        return address
    }
}
