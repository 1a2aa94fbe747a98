import HTTPTypes
import Historian
import Hummingbird
import OpenAPIRuntime
import PostgresClient
import RedisClient

/// A request the API answers with an error body `{"error": code, "message": text}`.
///
/// The code is one of the fixed set that openapi.yaml lists; the message is for people and
/// never holds SQL, a stack trace, message content, an ID from the request or a token.
struct APIFailure: Error, Sendable, Hashable, CustomStringConvertible {
    /// openapi.yaml's set of codes (`Error.error`), so that the document and the code agree.
    typealias Code = Components.Schemas._Error._ErrorPayload

    var code: Code
    var status: HTTPResponse.Status
    var message: String
    /// What an operator needs to know about a server-side failure, for the log only: error
    /// codes, SQLSTATEs, an archive file's path. Never content, never a token.
    var detail: String?

    var description: String { "\(code.rawValue): \(message)" }

    static let unauthorized = APIFailure(
        code: .unauthorized,
        status: .unauthorized,
        message: "a valid bearer token is required (Authorization: Bearer <api_token>)"
    )

    /// What an error becomes in an answer: decided here, in one place.
    init(_ error: any Error) {
        switch error {
        case let failure as APIFailure:
            self = failure
        case let error as ServerError:
            if let failure = error.underlyingError as? APIFailure {
                self = failure
            } else if error.httpStatus.kind == .clientError {
                // The generated code could not read the request (a parameter of the wrong type,
                // a missing one, an Accept it cannot answer). Its text quotes the request: not sent.
                self.init(
                    code: .invalidParameter,
                    status: error.httpStatus,
                    message: "a parameter is missing or not of its type (see /v1/openapi.yaml)"
                )
            } else {
                self.init(error.underlyingError)
            }
        case let error as HistorianError where error.code == .archiveUnreadable:
            // Its message names the file and what is wrong with it, never its content.
            self.init(
                code: .archiveUnreadable,
                status: .internalServerError,
                message: "the conversation's archive file could not be read and verified",
                detail: error.message
            )
        case let error as PostgresError:
            let detail = "postgres \(error.code)" + (error.sqlState.map { " SQLSTATE \($0)" } ?? "")
            self = Self.serverFailure(transient: error.isTransient || error.code == .closed, detail: detail)
        case let error as RedisError:
            self = Self.serverFailure(transient: error.isTransient, detail: "redis \(error.code)")
        case let error as any HTTPResponseError where error.status == .notFound:
            self.init(code: .notFound, status: .notFound, message: "no such endpoint")
        case let error as any HTTPResponseError where error.status.kind == .clientError:
            self.init(code: .invalidParameter, status: error.status, message: "the request cannot be served as sent")
        case let error as HistorianError:
            self.init(
                code: .internalError,
                status: .internalServerError,
                message: "the request failed",
                detail: "historian \(error.code)"
            )
        case is CancellationError:
            self.init(code: .unavailable, status: .serviceUnavailable, message: "the server is shutting down")
        default:
            self.init(
                code: .internalError,
                status: .internalServerError,
                message: "the request failed",
                detail: "\(type(of: error))"
            )
        }
    }

    init(code: Code, status: HTTPResponse.Status, message: String, detail: String? = nil) {
        self.code = code
        self.status = status
        self.message = message
        self.detail = detail
    }

    private static func serverFailure(transient: Bool, detail: String) -> APIFailure {
        transient
            ? APIFailure(
                code: .unavailable,
                status: .serviceUnavailable,
                message: "PostgreSQL or Redis does not answer; try again later",
                detail: detail
            )
            : APIFailure(
                code: .internalError,
                status: .internalServerError,
                message: "the request failed",
                detail: detail
            )
    }

    /// The error body, as openapi.yaml's `Error` schema has it.
    var body: Components.Schemas._Error {
        .init(error: code, message: message)
    }
}
