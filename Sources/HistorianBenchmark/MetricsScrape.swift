import Foundation
import LocalServers

#if canImport(Glibc)
import Glibc
#endif

/// A running daemon's `GET /metrics` on a loopback port: plain HTTP/1.1, `Connection: close`.
enum MetricsScrape {
    static func get(port: Int) throws -> String {
        let fd = try Loopback.connectedSocket(port: port)
        defer { close(fd) }
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let request = Array("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nConnection: close\r\n\r\n".utf8)
        guard send(fd, request, request.count, 0) == request.count else {
            throw BenchmarkError("metrics on port \(port): send failed, errno \(errno)")
        }
        var response: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while true {
            let count = recv(fd, &buffer, buffer.count, 0)
            guard count >= 0 else { throw BenchmarkError("metrics on port \(port): recv failed, errno \(errno)") }
            if count == 0 { break }
            response += buffer[0..<count]
        }
        let text = String(decoding: response, as: UTF8.self)
        guard text.hasPrefix("HTTP/1.1 200"), let split = text.range(of: "\r\n\r\n") else {
            throw BenchmarkError("metrics on port \(port): no 200 response: \(text.prefix(100))")
        }
        return String(text[split.upperBound...])
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
