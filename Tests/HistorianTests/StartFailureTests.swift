import PostgresClient
import RedisClient
import Testing

@testable import Historian

/// Which failures end the daemon's start, at the first attempt, and what its last log line says.
struct StartFailureTests {
    static let tls = PostgresError(
        code: .tlsFailed,
        message: "connection to server at \"db\" failed: SSL error: certificate verify failed (sslrootcert=/etc/ca.crt)"
    )

    @Test func tlsFailuresNeedAnOperatorAndEndTheStart() {
        #expect(FailureKind(Self.tls) == .needsOperator)
        #expect(FailureKind.endsStart(Self.tls))
        #expect(StartFailure.reason(Self.tls) == "PostgreSQL TLS: \(Self.tls.message) (see docs/tls.md)")
        #expect(FailureKind.endsStart(RedisError.tlsNotSupportedForTests))
        #expect(
            StartFailure.reason(RedisError.tlsNotSupportedForTests)?.hasPrefix(
                "redis_url: TLS (rediss://) is not supported"
            ) == true
        )
        let tooNew = HistorianError(.schemaTooNew, "schema version 9 is newer than this build's 2")
        #expect(StartFailure.reason(tooNew) == "schema version 9 is newer than this build's 2; upgrade Historian")
    }

    @Test(arguments: [
        PostgresError(code: .connectionFailed, message: "connection refused"),
        PostgresError(code: .timeout, message: "could not connect within 10 seconds"),
        PostgresError(code: .server, sqlState: "42501", message: "permission denied for schema public"),
    ])
    func outagesAndOtherSetupProblemsAreRetried(_ error: PostgresError) {
        #expect(!FailureKind.endsStart(error))
        #expect(StartFailure.reason(error) == nil)
    }

    @Test func aStartThatMeetsATLSFailureTriesOnce() async {
        var attempts = 0
        do {
            _ = try await retrying(
                .migrate,
                logger: .init(label: "test"),
                metrics: .disabled,
                rethrowing: FailureKind.endsStart
            ) {
                () async throws -> Int in
                attempts += 1
                throw Self.tls
            }
            Issue.record("retrying returned")
        } catch {
            #expect((error as? PostgresError)?.code == .tlsFailed)
        }
        #expect(attempts == 1)
    }
}

extension RedisError {
    /// What `RedisConfiguration(url:)` throws for `rediss://`.
    static var tlsNotSupportedForTests: RedisError {
        do {
            _ = try RedisConfiguration(url: "rediss://127.0.0.1:6380")
        } catch let error as RedisError {
            return error
        } catch {}
        return RedisError(code: .server, message: "rediss:// was accepted")
    }
}
