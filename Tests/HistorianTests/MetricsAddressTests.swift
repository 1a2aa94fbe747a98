import Testing

@testable import Historian

struct MetricsAddressTests {
    @Test(arguments: [
        ("127.0.0.1:9464", "127.0.0.1", 9464), ("0.0.0.0:1", "0.0.0.0", 1), ("localhost:65535", "localhost", 65535),
        ("metrics-1.internal.example:9100", "metrics-1.internal.example", 9100), ("[::1]:9464", "::1", 9464),
        ("[::]:9464", "::", 9464), ("[fe80::1:2]:80", "fe80::1:2", 80),
    ])
    func parsesHostAndPort(_ text: String, _ host: String, _ port: Int) throws {
        let address = try MetricsAddress(parsing: text)
        #expect(address == MetricsAddress(host: host, port: port))
        #expect(address.description == text)
    }

    @Test(arguments: [
        ("127.0.0.1", "no port"), (":9464", "no host"), ("127.0.0.1:", "port must be a number"),
        ("127.0.0.1:0", "from 1 to 65535"), ("127.0.0.1:65536", "from 1 to 65535"), ("127.0.0.1:-1", "from 1 to 65535"),
        ("127.0.0.1:http", "port must be"), ("127.0.0.1:99999999999999999999999", "from 1 to 65535"),
        ("::1:9464", "IPv6 address goes in brackets"), ("[::1]9464", "no :port after the ]"), ("[::1:9464", "no ]"),
        ("[localhost]:9464", "not an IPv6 address"), ("local host:9464", "not a host name"),
        ("http://127.0.0.1:9464", "no scheme or path"), ("127.0.0.1:9464/metrics", "no scheme or path"),
    ])
    func refusesWhatIsNotHostAndPort(_ text: String, _ problem: String) {
        do {
            let address = try MetricsAddress(parsing: text)
            Issue.record("\"\(text)\" parsed as \(address)")
        } catch let error as HistorianError {
            #expect(error.code == .invalidConfiguration)
            #expect(error.message.hasPrefix("metrics_address: \"\(text)\" is not host:port"), "\(error.message)")
            #expect(error.message.contains(problem), "\(error.message)")
        } catch {
            Issue.record("unexpected error \(error)")
        }
    }

    @Test func emptyTurnsTheEndpointOffAndABadOneStopsTheLoad() async throws {
        let defaults = try await HistorianConfiguration.load(flags: [:], configFile: nil, environment: [:])
        #expect(defaults.metricsAddress == MetricsAddress(host: "127.0.0.1", port: 9464))
        #expect(defaults.redactedLines.contains("metrics_address = 127.0.0.1:9464"))

        let off = try await HistorianConfiguration.load(
            flags: [:],
            configFile: nil,
            environment: ["HISTORIAN_METRICS_ADDRESS": ""]
        )
        #expect(off.metricsAddress == nil)
        #expect(off.redactedLines.contains("metrics_address = (off)"))

        let flag = try await HistorianConfiguration.load(
            flags: ["metrics_address": "[::1]:9100"],
            configFile: nil,
            environment: ["HISTORIAN_METRICS_ADDRESS": ""]
        )
        #expect(flag.metricsAddress == MetricsAddress(host: "::1", port: 9100))

        await #expect(throws: HistorianError.self) {
            _ = try await HistorianConfiguration.load(
                flags: ["metrics_address": "9464"],
                configFile: nil,
                environment: [:]
            )
        }
    }
}
