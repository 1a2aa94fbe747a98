import Historian

/// What the API's `DELETE`s call to erase a user's or a conversation's history everywhere
/// (contract §7). The daemon gives it `Erasure`; the API only maps its report to an answer.
public protocol HistoryEraser: Sendable {
    /// Erases `subject`, finishing an interrupted erasure of it if there is one.
    func erase(_ subject: ErasureSubject) async throws -> ErasureReport
}

/// The daemon's eraser: `historian forget`'s own erasure, journal, tombstones and all.
extension Erasure: HistoryEraser {
    public func erase(_ subject: ErasureSubject) async throws -> ErasureReport {
        try await run(subject)
    }
}
