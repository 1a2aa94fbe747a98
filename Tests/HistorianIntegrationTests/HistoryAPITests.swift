import Foundation
import Historian
import LocalServers
import PostgresClient
import RedisClient
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The history API of `historian run` (contract §7), on `api_address`, over loopback: what the
/// pipeline stored, read back through every GET, an archived conversation in the same shape,
/// and a daemon that refuses to serve it to the network without a token.
@Suite(.serialized)
struct HistoryAPIDaemonTests {
    static let token = "integration-token-9c1"

    @Test("historian run serves every GET on api_address; an archived conversation answers in the same shape")
    func servesTheAPI() async throws {
        try await TestEnvironment.with { environment in
            let redis = try await environment.redis()
            defer { redis.close() }
            let messages = Producer.workload(count: 120, conversations: 6, seed: 71)
            try await Producer.append(messages, redis: redis)

            let port = try Loopback.freePort()
            let metricsPort = try Loopback.freePort()
            var settings = environment.historianEnvironment
            settings["HISTORIAN_API_ADDRESS"] = "127.0.0.1:\(port)"
            settings["HISTORIAN_API_TOKEN"] = Self.token
            settings["HISTORIAN_METRICS_ADDRESS"] = "127.0.0.1:\(metricsPort)"
            settings["HISTORIAN_LOG_LEVEL"] = "info"
            let daemon = try HistorianProcess(["run"], environment: settings)
            defer { daemon.signal(SIGKILL) }
            let api = APIClient(port: port, token: Self.token)

            try await eventually("every message stored and the API answering", timeout: .seconds(90)) {
                try await environment.scalar("SELECT count(*) FROM messages") == messages.count
                    && (try? api.get("/v1/users/u-0/conversations").status) == 200
            }

            // The document, behind the token like the rest.
            let document = try api.get("/v1/openapi.yaml")
            #expect(document.status == 200 && document.contentType == "application/yaml")
            #expect(document.body.hasPrefix("openapi: 3.1.0"))
            #expect(try api.get("/v1/openapi.yaml", anonymous: true).status == 401)
            #expect(try api.get("/v1/users/u-0/conversations", token: "wrong").status == 401)

            // u-1 holds one conversation; its messages in PostgreSQL's order, page by page.
            let list = try api.json("/v1/users/u-1/conversations")
            let summaries = try #require(list["conversations"] as? [[String: Any]])
            #expect(summaries.count == 1)
            let id = try #require(summaries.first?["id"] as? String)
            #expect(summaries.first?["message_count"] as? Int == 20 && summaries.first?["archived"] as? Bool == false)
            let stored = try await environment.rows(
                "SELECT id::text FROM messages WHERE conversation_id = '\(id)' ORDER BY created_at, arrival"
            ).map { $0[0] ?? "" }
            let live = try api.allMessages(id, limit: 6)
            #expect(live.messages.map { $0["id"] as? String ?? "" } == stored)
            #expect(live.pages == 4)

            // The recent list the pipeline keeps, then, once its key is gone, rebuilt.
            let cached = try api.json("/v1/conversations/\(id)/recent")
            #expect(cached["source"] as? String == "cache")
            #expect(
                (cached["messages"] as? [[String: Any]])?.map { $0["id"] as? String ?? "" } == Array(stored.suffix(10))
            )
            _ = try await redis.send(
                "DEL",
                RedisArgument("history:\(id):recent"),
                RedisArgument("history:\(id):recent:version")
            )
            let rebuilt = try api.json("/v1/conversations/\(id)/recent")
            #expect(rebuilt["source"] as? String == "rebuilt")
            #expect(try APIClient.canonical(rebuilt["messages"]!) == APIClient.canonical(cached["messages"]!))
            #expect(try await redis.send("EXISTS", RedisArgument("history:\(id):recent")).int == 1)

            let window = try api.json("/v1/conversations/\(id)/context?max_tokens=1500")
            let counted = try #require(window["messages"] as? [[String: Any]])
            #expect((window["tokens"] as? Int ?? .max) <= 1500 && !counted.isEmpty)
            #expect(counted.map { $0["id"] as? String ?? "" } == Array(stored.suffix(counted.count)))

            #expect(try api.get("/v1/conversations/not-a-uuid").status == 400)
            #expect(try api.get("/v1/conversations/\(Producer.uuid(0x0f, 1))").status == 404)

            // Archived as a pass archives it: answered from the file, the same JSON.
            let postgres = try await environment.postgres()
            defer { postgres.close() }
            let outcome = try await postgres.withSession { session in
                try Archiver.prepare(session)
                return try Archiver(layout: ArchiveLayout(root: environment.archiveDir)).archive(
                    CanonicalUUID(id)!,
                    in: session
                )
            }
            guard case .archived = outcome else { throw APIClient.Failure("not archived: \(outcome)") }
            #expect(try await environment.scalar("SELECT count(*) FROM messages WHERE conversation_id = '\(id)'") == 0)
            let archived = try api.allMessages(id, limit: 6)
            #expect(archived.conversation["archived"] as? Bool == true)
            var conversation = archived.conversation
            conversation["archived"] = false
            #expect(try APIClient.canonical(conversation) == APIClient.canonical(live.conversation))
            #expect(try APIClient.canonical(archived.messages) == APIClient.canonical(live.messages))
            let relisted = try api.json("/v1/users/u-1/conversations")
            #expect((relisted["conversations"] as? [[String: Any]])?.first?["archived"] as? Bool == true)

            // Metrics by route pattern and status; log lines with the pattern, never the IDs or the token.
            let samples = try Prometheus.samples(port: metricsPort)
            #expect(
                (samples[#"historian_api_requests_total{method="GET",route="/v1/conversations/{id}",status="200"}"#]
                    ?? 0) >= 8
            )
            #expect(samples[#"historian_api_requests_total{method="GET",route="/v1/openapi.yaml",status="401"}"#] == 1)
            daemon.signal(SIGTERM)
            #expect(try await daemon.wait(timeout: .seconds(30)) == 0)
            let lines = daemon.errorOutput.split(separator: "\n").filter { $0.contains("api request") }
            #expect(lines.contains { $0.contains("http.route=/v1/conversations/{id}/recent") }, "\(lines.prefix(3))")
            #expect(lines.allSatisfy { !$0.contains(id) && !$0.contains("u-1") }, "\(lines.filter { $0.contains(id) })")
            #expect(!daemon.errorOutput.contains(Self.token))
        }
    }

    @Test("a non-loopback api_address without a token stops the daemon at start, saying why; with one it serves")
    func refusesTheNetworkWithoutAToken() async throws {
        try await TestEnvironment.with { environment in
            let port = try Loopback.freePort()
            var settings = environment.historianEnvironment
            settings["HISTORIAN_API_ADDRESS"] = "0.0.0.0:\(port)"
            let refused = try await HistorianProcess.run(["run"], environment: settings, timeout: .seconds(30))
            #expect(refused.status == 78, "\(refused.errors)")
            #expect(
                refused.errors.contains("api_address 0.0.0.0:\(port) is not a loopback address and no api_token is set")
            )
            #expect(try await environment.scalar("SELECT count(*) FROM pg_tables WHERE tablename = 'messages'") == 0)

            // The token from the credential file, as systemd's LoadCredential= gives it.
            let credentials = FileManager.default.temporaryDirectory.appendingPathComponent(
                "historian-cred-\(UUID().uuidString)"
            )
            try FileManager.default.createDirectory(at: credentials, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: credentials) }
            try "from-credential-file\n".write(
                to: credentials.appendingPathComponent("api-token"),
                atomically: true,
                encoding: .utf8
            )
            settings["CREDENTIALS_DIRECTORY"] = credentials.path
            let daemon = try HistorianProcess(["run"], environment: settings)
            defer { daemon.signal(SIGKILL) }
            let api = APIClient(port: port, token: "from-credential-file")
            try await eventually("the API answering", timeout: .seconds(60)) {
                (try? api.get("/v1/users/nobody/conversations").status) == 200
            }
            #expect(try api.get("/v1/users/nobody/conversations", anonymous: true).status == 401)
            #expect(try api.get("/v1/users/nobody/conversations", token: "from-credential").status == 401)
            daemon.signal(SIGTERM)
            #expect(try await daemon.wait(timeout: .seconds(30)) == 0)
        }
    }

    @Test("schemathesis, with the daemon's own openapi.yaml: no 5xx, every answer as documented, the token enforced")
    func schemathesis() async throws {
        try await TestEnvironment.with { environment in
            let redis = try await environment.redis()
            defer { redis.close() }
            try await Producer.append(Producer.workload(count: 200, conversations: 10, seed: 72), redis: redis)
            let port = try Loopback.freePort()
            var settings = environment.historianEnvironment
            settings["HISTORIAN_API_ADDRESS"] = "127.0.0.1:\(port)"
            settings["HISTORIAN_API_TOKEN"] = Self.token
            let daemon = try HistorianProcess(["run"], environment: settings)
            defer { daemon.signal(SIGKILL) }
            let api = APIClient(port: port, token: Self.token)
            try await eventually("the API answering", timeout: .seconds(90)) {
                (try? api.get("/v1/users/u-0/conversations").status) == 200
            }

            // The DELETEs too: these servers hold nothing anyone needs.
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = [
                "bash", LangchainWorkload.packageRoot + "/scripts/check-api", "--with-delete", "--max-examples", "25",
                "http://127.0.0.1:\(port)",
            ]
            process.environment = ChildEnvironment.clean(["HISTORIAN_API_TOKEN": Self.token])
            process.currentDirectoryURL = URL(fileURLWithPath: LangchainWorkload.packageRoot)
            let output = Pipe()
            process.standardOutput = output
            process.standardError = output
            try process.run()
            let report = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            #expect(process.terminationStatus == 0, "\(report.suffix(6000))")
            #expect(report.contains("passed") || report.contains("No issues found"), "\(report.suffix(3000))")
        }
    }
}

/// HTTP/1.1 requests to the daemon's API on 127.0.0.1, with the bearer token, over a plain
/// socket (`Connection: close`).
struct APIClient {
    let port: Int
    let token: String

    struct Response {
        var status: Int
        var contentType: String
        var body: String
    }

    struct Failure: Error, CustomStringConvertible {
        var description: String
        init(_ description: String) { self.description = description }
    }

    /// `token`: another token than the client's; `anonymous`: none at all.
    func get(_ path: String, token other: String? = nil, anonymous: Bool = false) throws -> Response {
        let token = anonymous ? nil : other ?? token
        let fd = try Loopback.connectedSocket(port: port)
        defer { close(fd) }
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var head = "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nConnection: close\r\n"
        if let token { head += "Authorization: Bearer \(token)\r\n" }
        let request = Array((head + "\r\n").utf8)
        guard send(fd, request, request.count, 0) == request.count else { throw Failure("GET \(path): send failed") }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while true {
            let count = recv(fd, &buffer, buffer.count, 0)
            guard count >= 0 else { throw Failure("GET \(path): recv failed, errno \(errno)") }
            if count == 0 { break }
            bytes += buffer[0..<count]
        }
        guard let split = bytes.firstRange(of: Array("\r\n\r\n".utf8)) else {
            throw Failure("GET \(path): no end of headers")
        }
        let lines = String(decoding: bytes[..<split.lowerBound], as: UTF8.self).split(separator: "\r\n")
        let status = lines.first.flatMap { $0.split(separator: " ").dropFirst().first }.flatMap { Int($0) } ?? -1
        func header(_ name: String) -> String? {
            lines.dropFirst().first { $0.lowercased().hasPrefix(name + ":") }
                .map { $0.dropFirst(name.count + 1).trimmingCharacters(in: .whitespaces) }
        }
        var body = Array(bytes[split.upperBound...])
        if header("transfer-encoding")?.lowercased() == "chunked" { body = try Self.dechunk(body) }
        return Response(
            status: status,
            contentType: header("content-type") ?? "",
            body: String(decoding: body, as: UTF8.self)
        )
    }

    /// A 200's body as a JSON object.
    func json(_ path: String) throws -> [String: Any] {
        let response = try get(path)
        guard response.status == 200,
            let object = try JSONSerialization.jsonObject(with: Data(response.body.utf8)) as? [String: Any]
        else { throw Failure("GET \(path): \(response.status) \(response.body.prefix(300))") }
        return object
    }

    /// Every page of a conversation, following `next_after`.
    func allMessages(
        _ id: String,
        limit: Int
    ) throws -> (conversation: [String: Any], messages: [[String: Any]], pages: Int) {
        var conversation: [String: Any] = [:]
        var messages: [[String: Any]] = []
        var after: String?
        var pages = 0
        repeat {
            let page = try json("/v1/conversations/\(id)?limit=\(limit)" + (after.map { "&after=\($0)" } ?? ""))
            if pages == 0 { conversation = page["conversation"] as? [String: Any] ?? [:] }
            messages += page["messages"] as? [[String: Any]] ?? []
            after = page["next_after"] as? String
            pages += 1
        } while after != nil && pages < 100
        return (conversation, messages, pages)
    }

    static func canonical(_ value: Any) throws -> String {
        String(
            decoding: try JSONSerialization.data(withJSONObject: value, options: [.sortedKeys, .fragmentsAllowed]),
            as: UTF8.self
        )
    }

    private static func dechunk(_ bytes: [UInt8]) throws -> [UInt8] {
        var out: [UInt8] = []
        var index = 0
        while let end = bytes[index...].firstRange(of: Array("\r\n".utf8)) {
            guard let size = Int(String(decoding: bytes[index..<end.lowerBound], as: UTF8.self), radix: 16) else {
                throw Failure("a chunk has no size")
            }
            if size == 0 { break }
            out += bytes[end.upperBound..<(end.upperBound + size)]
            index = end.upperBound + size + 2
        }
        return out
    }
}
