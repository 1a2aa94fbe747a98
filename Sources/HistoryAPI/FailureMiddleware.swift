import Foundation
import Hummingbird
import Logging

/// Turns whatever a request threw into openapi.yaml's error body, `{"error", "message"}`, with
/// the status `APIFailure` decides; a server-side failure is logged with its route pattern and
/// what an operator needs (`APIFailure.detail`), never with the request's path, body or headers.
struct FailureMiddleware<Context: RequestContext>: RouterMiddleware {
    let logger: Logger

    func handle(
        _ request: Request,
        context: Context,
        next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        do {
            return try await next(request, context)
        } catch {
            let failure = APIFailure(error)
            if failure.status.kind == .serverError {
                logger.error(
                    "api request failed",
                    metadata: [
                        "http.method": "\(request.method)", "http.route": "\(RouteLabel.of(context))",
                        "error.code": "\(failure.code.rawValue)", "error.detail": "\(failure.detail ?? "none")",
                    ]
                )
            }
            return Self.response(failure)
        }
    }

    static func response(_ failure: APIFailure) -> Response {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        // Two strings: encoding cannot fail.
        let data = (try? encoder.encode(failure.body)) ?? Data()
        var headers: HTTPFields = [.contentType: "application/json; charset=utf-8"]
        if failure.status == .unauthorized { headers[.wwwAuthenticate] = "Bearer" }
        return Response(
            status: failure.status,
            headers: headers,
            body: ResponseBody(byteBuffer: ByteBuffer(bytes: data))
        )
    }
}
