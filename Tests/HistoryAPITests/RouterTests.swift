import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import MetricsTestKit
import Testing

@testable import Historian
@testable import HistoryAPI

/// The router in-process against real servers: the token, the error answers, the document, and
/// what requests leave in logs and metrics.
@Suite(.serialized)
struct RouterTests {
    @Test("401 without a token, with a wrong one or another scheme; 200 with it, on every route")
    func bearerToken() async throws {
        try await APIServers.with { servers in
            let conversation = Seeds.detailed(1)
            try await conversation.insert(servers)
            let routes = [
                "/v1/users/user-a/conversations", "/v1/conversations/\(conversation.id)",
                "/v1/conversations/\(conversation.id)/recent",
                "/v1/conversations/\(conversation.id)/context?max_tokens=100",
                "/v1/openapi.yaml", "/v1/no-such-route",
            ]
            try await servers.serve { client in
                for route in routes {
                    for authorization in [
                        nil, "Bearer wrong-token", "Basic \(APIServers.token)", "Bearer", "Bearer  \(APIServers.token)",
                    ] {
                        let response = try await client.request(route, token: nil, authorization: authorization)
                        #expect(response.status == .unauthorized, "\(route) with \(authorization ?? "nothing")")
                        #expect(response.errorCode == "unauthorized")
                        #expect(response.headers[.wwwAuthenticate] == "Bearer")
                    }
                    let response = try await client.request(route, authorization: "bEaReR \(APIServers.token)")
                    #expect(response.status == (route.hasSuffix("no-such-route") ? .notFound : .ok), "\(route)")
                }
                let delete = try await client.request(
                    "/v1/conversations/\(conversation.id)",
                    method: .delete,
                    token: nil
                )
                #expect(delete.status == .unauthorized)
            }
        }
    }

    @Test("on loopback without a token the API asks for none; elsewhere it refuses to be made")
    func noToken() async throws {
        try await APIServers.with { servers in
            try await servers.serve(token: nil) { client in
                let response = try await client.request("/v1/users/nobody/conversations", token: nil)
                #expect(response.status == .ok)
            }
            let reader = try servers.reader()
            defer { reader.connections.close() }
            for host in ["127.0.0.1", "127.8.9.10", "localhost", "::1"] {
                #expect(throws: Never.self) {
                    try HistoryAPIService(
                        address: MetricsAddress(host: host, port: 8080),
                        token: nil,
                        reader: reader,
                        eraser: nil,
                        logger: servers.logger
                    )
                }
            }
            for host in ["0.0.0.0", "10.1.2.3", "::", "api.example.com", "127.0.0.1.nip.io"] {
                let error = #expect(throws: HistorianError.self) {
                    try HistoryAPIService(
                        address: MetricsAddress(host: host, port: 8080),
                        token: nil,
                        reader: reader,
                        eraser: nil,
                        logger: servers.logger
                    )
                }
                #expect(error?.code == .invalidConfiguration)
                #expect(error?.message.contains("no api_token is set") == true, "\(error?.message ?? "")")
            }
            #expect(throws: Never.self) {
                try HistoryAPIService(
                    address: MetricsAddress(host: "0.0.0.0", port: 8080),
                    token: "t",
                    reader: reader,
                    eraser: nil,
                    logger: servers.logger
                )
            }
        }
    }

    @Test("GET /v1/openapi.yaml serves the document the code was generated from, byte for byte")
    func document() async throws {
        let source = try Data(
            contentsOf: URL(fileURLWithPath: #filePath).deletingLastPathComponent()
                .appendingPathComponent("../../Sources/HistoryAPI/openapi.yaml").standardized
        )
        try await APIServers.with { servers in
            try await servers.serve { client in
                let response = try await client.request("/v1/openapi.yaml")
                #expect(response.status == .ok)
                #expect(response.headers[.contentType] == "application/yaml")
                #expect(Data(buffer: response.body) == source)
            }
        }
    }

    /// Each request, and the status and error code it must get.
    static let errorCases: [(String, Int, String)] = [
        ("/v1/conversations/not-a-uuid", 400, "invalid_id"),
        ("/v1/conversations/0193aaaa-0000-7000-8000-00000000000", 400, "invalid_id"),
        ("/v1/conversations/not-a-uuid/recent", 400, "invalid_id"),
        ("/v1/conversations/not-a-uuid/context?max_tokens=5", 400, "invalid_id"),
        ("/v1/conversations/{known}?limit=0", 400, "invalid_parameter"),
        ("/v1/conversations/{known}?limit=1001", 400, "invalid_parameter"),
        ("/v1/conversations/{known}?limit=ten", 400, "invalid_parameter"),
        ("/v1/conversations/{known}?after=bm90LWEtY3Vyc29y", 400, "invalid_cursor"),
        ("/v1/conversations/{known}?after={listCursor}", 400, "invalid_cursor"),
        ("/v1/conversations/{known}/context", 400, "invalid_parameter"),
        ("/v1/conversations/{known}/context?max_tokens=-1", 400, "invalid_parameter"),
        ("/v1/conversations/{known}/context?max_tokens=lots", 400, "invalid_parameter"),
        ("/v1/users/user-a/conversations?limit=201", 400, "invalid_parameter"),
        ("/v1/users/user-a/conversations?before=%21%21", 400, "invalid_cursor"),
        ("/v1/users/{longUser}/conversations", 400, "invalid_id"),
        ("/v1/conversations/{unknown}", 404, "not_found"),
        ("/v1/conversations/{unknown}/recent", 404, "not_found"),
        ("/v1/conversations/{unknown}/context?max_tokens=5", 404, "not_found"),
        ("/v1/conversations", 404, "not_found"),
        ("/v2/anything", 404, "not_found"),
        ("/v1/users/user-a", 404, "not_found"),
    ]

    @Test("400 for a malformed ID, cursor or parameter; 404 for an unknown conversation or route")
    func errorAnswers() async throws {
        try await APIServers.with { servers in
            let known = Seeds.detailed(1)
            try await known.insert(servers)
            let listCursor = HistoryCursorText.encode(
                ConversationCursor(updatedAt: Timestamp(microseconds: 0), id: CanonicalUUID(known.id)!)
            )
            try await servers.serve { client in
                for (route, status, code) in Self.errorCases {
                    let uri = route.replacingOccurrences(of: "{known}", with: known.id)
                        .replacingOccurrences(of: "{unknown}", with: testUUID(0xdead, 1))
                        .replacingOccurrences(of: "{listCursor}", with: listCursor)
                        .replacingOccurrences(of: "{longUser}", with: String(repeating: "u", count: 256))
                    let response = try await client.request(uri)
                    #expect(Int(response.status.code) == status, "\(uri): \(String(buffer: response.body))")
                    #expect(response.errorCode == code, "\(uri)")
                    #expect(response.headers[.contentType]?.hasPrefix("application/json") == true, "\(uri)")
                    let message = try #require(try response.object["message"] as? String)
                    #expect(!message.contains(known.id) && !message.lowercased().contains("select"), "\(message)")
                }
            }
        }
    }

    @Test("a request's log line and metrics name its route pattern, never its IDs, token or content")
    func logsAndMetrics() async throws {
        try await APIServers.with { servers in
            let conversation = Seeds.detailed(1, user: "user-private-77")
            try await conversation.insert(servers)
            let metrics = TestMetrics()
            let logs = LogRecorder()
            try await servers.serve(metrics: APIMetrics(factory: metrics), logger: logs.logger) {
                (client: any TestClientProtocol) async throws in
                #expect(try await client.request("/v1/conversations/\(conversation.id)").status == .ok)
                #expect(try await client.request("/v1/conversations/\(conversation.id)").status == .ok)
                #expect(try await client.request("/v1/conversations/\(testUUID(0xdead, 2))").status == .notFound)
                #expect(try await client.request("/v1/users/user-private-77/conversations").status == .ok)
                #expect(
                    try await client.request("/v1/conversations/\(conversation.id)/recent", token: "wrong").status
                        == .unauthorized
                )
                #expect(try await client.request("/v1/conversations/\(conversation.id)/nothing").status == .notFound)
            }
            let requests = logs.recorded.filter { $0.message == "api request" }
            #expect(requests.count == 6)
            #expect(
                requests.map { $0.metadata["http.route"] ?? "" } == [
                    "/v1/conversations/{id}", "/v1/conversations/{id}", "/v1/conversations/{id}",
                    "/v1/users/{user_id}/conversations", "/v1/conversations/{id}/recent", "unmatched",
                ]
            )
            #expect(requests.map { $0.metadata["http.status"] ?? "" } == ["200", "200", "404", "200", "401", "404"])
            #expect(
                requests.allSatisfy {
                    $0.metadata["http.method"] == "GET" && Double($0.metadata["duration_ms"] ?? "") != nil
                }
            )
            let secrets = [
                conversation.id, testUUID(0xdead, 2), "user-private-77", APIServers.token, "wrong", "naïve café",
            ]
            for line in logs.recorded {
                for secret in secrets { #expect(!line.text.contains(secret), "\(line.text)") }
            }

            func requestCount(_ route: String, _ status: String) throws -> Int64 {
                try metrics.expectCounter(
                    "historian_api_requests_total",
                    [("method", "GET"), ("route", route), ("status", status)]
                ).totalValue
            }
            #expect(try requestCount("/v1/conversations/{id}", "200") == 2)
            #expect(try requestCount("/v1/conversations/{id}", "404") == 1)
            #expect(try requestCount("/v1/users/{user_id}/conversations", "200") == 1)
            #expect(try requestCount("/v1/conversations/{id}/recent", "401") == 1)
            #expect(try requestCount("unmatched", "404") == 1)
            let timer = try metrics.expectTimer(
                "historian_api_request_duration_seconds",
                [("method", "GET"), ("route", "/v1/conversations/{id}")]
            )
            #expect(timer.values.count == 3)
        }
    }

    @Test("a server that does not answer is 503 `unavailable`, with nothing of the failure in the body")
    func serverDown() async throws {
        try await APIServers.with { servers in
            let conversation = Seeds.detailed(1)
            try await conversation.insert(servers)
            let logs = LogRecorder()
            let reader = try servers.reader()
            try await servers.serve(reader: reader, logger: logs.logger) { client in
                #expect(try await client.request("/v1/conversations/\(conversation.id)").status == .ok)
                try await servers.postgresServer.stop()
                let response = try await client.request("/v1/conversations/\(conversation.id)")
                #expect(response.status == .serviceUnavailable, "\(String(buffer: response.body))")
                #expect(response.errorCode == "unavailable")
                try await servers.postgresServer.start()
                try await Task.sleep(for: .milliseconds(200))
                #expect(try await client.request("/v1/conversations/\(conversation.id)").status == .ok)
            }
            let failure = try #require(logs.recorded.first { $0.message == "api request failed" })
            #expect(failure.metadata["error.code"] == "unavailable")
            #expect(failure.metadata["http.route"] == "/v1/conversations/{id}")
        }
    }
}
