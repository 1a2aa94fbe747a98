import Foundation
import LocalServers

/// The daemon's metrics endpoint, scraped and read as a test reads it.
enum Prometheus {
    /// `GET /metrics` over a plain socket (HTTP/1.1, `Connection: close`).
    static func scrape(port: Int) throws -> LoopbackHTTP.Response {
        try LoopbackHTTP.get(port: port, path: "/metrics")
    }

    /// The samples of a Prometheus text exposition, by name and labels; labels sorted by name,
    /// so that `name{a="1",b="2"}` does not depend on the order the server wrote them in.
    static func parse(_ body: String) throws -> [String: Double] {
        var samples: [String: Double] = [:]
        for line in body.split(separator: "\n") where !line.hasPrefix("#") {
            guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else {
                throw ScrapeError("not a sample: \(line)")
            }
            var series = String(line[..<space])
            if let open = series.firstIndex(of: "{"), series.hasSuffix("}") {
                let labels = series[series.index(after: open)..<series.index(before: series.endIndex)]
                    .split(separator: ",").map(String.init).sorted()
                series = series[..<open] + "{" + labels.joined(separator: ",") + "}"
            }
            samples[series] = value
        }
        return samples
    }

    /// Scrapes and parses in one go.
    static func samples(port: Int) throws -> [String: Double] {
        try parse(try scrape(port: port).body)
    }

    struct ScrapeError: Error, CustomStringConvertible {
        var description: String
        init(_ description: String) { self.description = description }
    }
}
