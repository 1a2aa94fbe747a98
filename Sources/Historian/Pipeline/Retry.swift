import Logging
import PostgresClient
import RedisClient
import ServiceLifecycle

/// Capped exponential backoff with full jitter.
public struct Backoff: Sendable {
    public var base: Duration = .milliseconds(100)
    public var cap: Duration = .seconds(5)

    public init(base: Duration = .milliseconds(100), cap: Duration = .seconds(5)) {
        self.base = base
        self.cap = cap
    }

    /// The delay before retry number `attempt` (1-based): uniform in [0, min(cap, base·2^(attempt-1))].
    public func delay(attempt: Int) -> Duration {
        let ceiling = min(cap, base * (1 << min(max(attempt - 1, 0), 20)))
        let nanoseconds = Int64(ceiling.components.seconds) * 1_000_000_000
            + ceiling.components.attoseconds / 1_000_000_000
        return .nanoseconds(Int64.random(in: 0...max(nanoseconds, 1)))
    }
}

/// How a failure is treated. The one place that decides, for every error Historian meets.
enum FailureKind {
    /// Worth retrying as it is: an outage, a timeout, a serialization failure.
    case transient
    /// PostgreSQL refused the data itself (SQLSTATE classes 22, 23, 54): retrying the same rows
    /// cannot succeed, so the rows are isolated and dead-lettered.
    case rejectedData
    /// Anything else: a setup problem an operator must fix (missing table, permission, wrong
    /// key type). Retried with backoff and logged as an error; never turned into dead letters.
    case needsOperator

    init(_ error: any Error) {
        switch error {
        case let error as PostgresError:
            if error.isTransient {
                self = .transient
            } else if error.isRejectedData {
                self = .rejectedData
            } else {
                self = .needsOperator
            }
        case let error as RedisError:
            self = error.isTransient ? .transient : .needsOperator
        default:
            self = .needsOperator
        }
    }
}

extension FailureKind {
    /// Whether `error`, met while the daemon starts, ends the start instead of being retried: no
    /// wait can fix it, and the operator should hear of it at once rather than from a log of
    /// retries. A schema newer than this build; TLS to PostgreSQL that cannot be set up (a
    /// certificate that does not verify or does not name the host, a missing file); a Redis URL
    /// the client cannot use (`rediss://`). Met later, in a running daemon, the same failures
    /// are `needsOperator`: retried with backoff.
    static func endsStart(_ error: any Error) -> Bool {
        switch error {
        case let error as HistorianError: error.code == .schemaTooNew
        case let error as PostgresError: error.code == .tlsFailed
        case let error as RedisError: error.code == .invalidURL || error.code == .invalidConfiguration
        default: false
        }
    }

    /// Whether `error` means the server gave no answer at all: a call or a connection attempt
    /// that timed out. Any other failure, a refusal included, is an answer (see `LoopWatch`).
    static func isUnanswered(_ error: any Error) -> Bool {
        switch error {
        case let error as PostgresError: error.code == .timeout
        case let error as RedisError: error.code == .timeout
        default: false
        }
    }
}

/// The failures that end a daemon's start (`FailureKind.endsStart`), in words for its last log line.
public enum StartFailure {
    /// Why `error` ends the start, naming the problem and what to do; `nil` when it does not end it.
    /// Never holds a password: the errors' messages leave them out.
    public static func reason(_ error: any Error) -> String? {
        guard FailureKind.endsStart(error) else { return nil }
        switch error {
        case let error as PostgresError:
            return "PostgreSQL TLS: \(error.message) (see docs/tls.md)"
        case let error as RedisError:
            return "redis_url: \(error.message)"
        case let error as HistorianError where error.code == .schemaTooNew:
            return "\(error.message); upgrade Historian"
        default:
            return "\(error)"
        }
    }
}

/// Signals that the work was abandoned because the process is shutting down.
struct ShuttingDown: Error {}

/// What `retrying` retries: a fixed set, so that each names its retries in the metrics
/// (`historian_retries_total{operation=…}`).
enum RetriedOperation: String, CaseIterable, Sendable {
    case connect
    case read
    case claim
    case store
    case cache
    case acknowledge = "ack"
    case migrate
    case createGroup = "create_group"

    /// How the log names it: "storing a batch failed; retrying".
    var phrase: String {
        switch self {
        case .connect: "connecting"
        case .read: "reading the stream"
        case .claim: "claiming idle entries"
        case .store: "storing a batch"
        case .cache: "refreshing the cache"
        case .acknowledge: "acknowledging a batch"
        case .migrate: "preparing PostgreSQL"
        case .createGroup: "preparing the consumer group"
        }
    }
}

/// Runs `body` until it succeeds, retrying every failure but those `rethrowing` picks out.
///
/// Each attempt is reported to `loop`: waiting for an answer from its start until a server
/// answers, with a result or with an error other than a timeout.
///
/// Retries stop when the task is cancelled or, after a failed attempt, when a graceful shutdown
/// has begun: work that cannot finish now is left unacknowledged for the next run. Each retry
/// is counted in `metrics`, by operation and kind.
func retrying<T>(
    _ operation: RetriedOperation,
    logger: Logger,
    metrics: DaemonMetrics,
    loop: LoopWatch.Loop? = nil,
    backoff: Backoff = Backoff(),
    rethrowing: (any Error) -> Bool = { _ in false },
    _ body: () async throws -> T
) async throws -> T {
    var attempt = 0
    while true {
        loop?.awaiting()
        do {
            let result = try await body()
            loop?.answered()
            return result
        } catch {
            if !FailureKind.isUnanswered(error) { loop?.answered() }
            if rethrowing(error) { throw error }
            if error is CancellationError || Task.isCancelled { throw CancellationError() }
            attempt += 1
            let kind = FailureKind(error)
            var metadata: Logger.Metadata = ["attempt": "\(attempt)", "error": "\(error)"]
            if kind == .needsOperator { metadata["needs"] = "operator" }
            logger.log(level: kind == .transient ? .warning : .error, "\(operation.phrase) failed; retrying", metadata: metadata)
            if Task.isShuttingDownGracefully { throw ShuttingDown() }
            metrics.recordRetry(operation, kind)
            try await Task.sleep(for: backoff.delay(attempt: attempt))
        }
    }
}
