/// How a transaction run by `PostgresSession.transaction` ends when its body returns.
public enum TransactionEnd: Sendable {
    case commit
    /// The body decided that nothing it did should stay.
    case rollback
}

extension PostgresSession {
    /// Runs `body` in one transaction opened with `begin` (`BEGIN`, or e.g. `BEGIN ISOLATION
    /// LEVEL REPEATABLE READ READ ONLY`). When `body` returns, the transaction commits, or rolls
    /// back if `body` set `end` to `.rollback`; when it throws, it rolls back and the error goes
    /// on. The one place where Historian opens and closes transactions.
    public func transaction<T>(_ begin: String = "BEGIN", _ body: (inout TransactionEnd) throws -> T) throws -> T {
        try execute(begin)
        var end = TransactionEnd.commit
        let result: T
        do {
            result = try body(&end)
        } catch {
            _ = try? execute("ROLLBACK")
            throw error
        }
        do {
            try execute(end == .commit ? "COMMIT" : "ROLLBACK")
        } catch {
            _ = try? execute("ROLLBACK")
            throw error
        }
        return result
    }
}
