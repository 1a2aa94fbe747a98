import Crypto
import Hummingbird

/// Lets a request through only with `Authorization: Bearer <token>`; any other is answered 401
/// (`APIFailure.unauthorized`). The token is compared in constant time, by its SHA-256: the time
/// a comparison takes tells nothing of how much of a guess was right, nor of the token's length.
struct BearerAuthenticationMiddleware<Context: RequestContext>: RouterMiddleware {
    private let expected: [UInt8]

    init(token: String) {
        expected = Array(SHA256.hash(data: Array(token.utf8)))
    }

    func handle(
        _ request: Request,
        context: Context,
        next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        guard let header = request.headers[.authorization], accepts(header) else { throw APIFailure.unauthorized }
        return try await next(request, context)
    }

    /// Whether `header` is `Bearer <token>` (the scheme in any case, RFC 7235) with the token.
    func accepts(_ header: String) -> Bool {
        let scheme = "bearer "
        guard header.utf8.count > scheme.utf8.count, header.prefix(scheme.count).lowercased() == scheme else {
            return false
        }
        let given = SHA256.hash(data: Array(header.utf8.dropFirst(scheme.utf8.count)))
        var difference: UInt8 = 0
        for (a, b) in zip(given, expected) { difference |= a ^ b }
        return difference == 0
    }
}
