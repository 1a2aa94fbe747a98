import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A plain HTTP/1.1 GET on 127.0.0.1 (`Connection: close`), for the daemon's operations
/// endpoint: the tests read `/metrics`, `/healthz` and `/readyz` with it, the benchmark
/// `/metrics`.
public enum LoopbackHTTP {
    public struct Response: Sendable {
        public var status: Int
        public var contentType: String
        public var body: String
    }

    public static func get(port: Int, path: String) throws -> Response {
        let fd = try Loopback.connectedSocket(port: port)
        defer { close(fd) }
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let request = Array("GET \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nConnection: close\r\n\r\n".utf8)
        guard send(fd, request, request.count, 0) == request.count else {
            throw LocalServerError("GET \(path) on port \(port): send failed, errno \(errno)")
        }
        var response: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while true {
            let count = recv(fd, &buffer, buffer.count, 0)
            guard count >= 0 else { throw LocalServerError("GET \(path) on port \(port): recv failed, errno \(errno)") }
            if count == 0 { break }
            response += buffer[0..<count]
        }
        let text = String(decoding: response, as: UTF8.self)
        guard let split = text.range(of: "\r\n\r\n") else {
            throw LocalServerError("GET \(path) on port \(port): no end of headers in \(text.prefix(200))")
        }
        let head = text[..<split.lowerBound].split(separator: "\r\n")
        let status = head.first.flatMap { $0.split(separator: " ").dropFirst().first }.flatMap { Int($0) } ?? -1
        let contentType =
            head.dropFirst().first { $0.lowercased().hasPrefix("content-type:") }
            .map { $0.dropFirst("content-type:".count).trimmingCharacters(in: .whitespaces) } ?? ""
        return Response(status: status, contentType: contentType, body: String(text[split.upperBound...]))
    }
}
