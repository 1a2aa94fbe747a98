import Foundation
import Testing

@testable import HistorianBenchmark

/// Reading `wrk --latency`'s report, as the api phase does.
struct WrkOutputTests {
    static let report = """
        Running 5s test @ http://127.0.0.1:8765
          2 threads and 16 connections
          Thread Stats   Avg      Stdev     Max   +/- Stdev
            Latency     7.46ms    2.90ms  32.89ms   92.75%
            Req/Sec     1.05k    90.75     1.56k    72.73%
          Latency Distribution
             50%  812.00us
             75%    1.69ms
             90%    2.08ms
             99%   14.00ms
          10476 requests in 5.10s, 7.49MB read
        Requests/sec:   2054.12
        Transfer/sec:      1.47MB

        """

    @Test("requests, rate, percentiles and the longest request, in milliseconds")
    func readsTheFigures() throws {
        let output = try WrkOutput(Self.report, route: "GET /x")
        #expect(output.requests == 10476)
        #expect(output.requestsPerSecond == 2054.12)
        #expect(abs(output.p50 - 0.812) < 1e-9)
        #expect(output.p99 == 14)
        #expect(output.max == 32.89)
        #expect(output.failures == 0)
    }

    @Test("responses other than 2xx or 3xx and socket errors count as failures")
    func countsFailures() throws {
        let failing = Self.report.replacingOccurrences(
            of: "Requests/sec:",
            with: "  Socket errors: connect 0, read 2, write 0, timeout 3\n  Non-2xx or 3xx responses: 7\nRequests/sec:"
        )
        #expect(try WrkOutput(failing, route: "GET /x").failures == 12)
    }

    @Test("a report without its figures is an error, not zeros")
    func refusesAnIncompleteReport() {
        #expect(throws: BenchmarkError.self) { try WrkOutput("unable to connect to 127.0.0.1:9 Connection refused", route: "GET /x") }
    }

    @Test("wrk's units: µs, ms, s, minutes")
    func readsUnits() {
        #expect(WrkOutput.milliseconds("250.00us") == 0.25)
        #expect(WrkOutput.milliseconds("1.50ms") == 1.5)
        #expect(WrkOutput.milliseconds("2.00s") == 2000)
        #expect(WrkOutput.milliseconds("1.00m") == 60000)
        #expect(WrkOutput.milliseconds("fast") == nil)
    }
}
