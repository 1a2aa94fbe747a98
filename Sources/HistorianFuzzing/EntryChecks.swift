import Foundation
import Historian

/// What ingest does with an entry it read (validation, the title it would derive), and what must
/// hold of the outcome.
enum EntryChecks {
    static let validator = EntryValidator()
    static let earliest = Timestamp(rfc3339: "0001-01-01T00:00:00Z")!
    static let latest = Timestamp(rfc3339: "9999-12-31T23:59:59.999999Z")!

    static func check(_ entry: StreamEntry, _ findings: inout FuzzFindings) {
        let message: IncomingMessage
        switch validator.validate(entry) {
        case .failure(let rejection):
            findings.expect(!rejection.detail.isEmpty, "a \(rejection.reason) rejection without a detail")
            return
        case .success(let accepted):
            message = accepted
        }
        _ = message.derivedTitle

        // IDs are kept in their canonical form: the text given, in lowercase.
        for (name, id) in [("message_id", message.id), ("conversation_id", message.conversationID)] {
            let given = entry[name].map { String(decoding: $0, as: UTF8.self).lowercased() }
            findings.expect(id.text == given, "\(name) \(given ?? "nil") stored as \(id.text)")
        }

        // Every time stored can be written in RFC 3339 and read back: the archive, the cache and
        // the API write it so.
        let createdAt = message.createdAt
        findings.expect(
            createdAt >= earliest && createdAt <= latest && Timestamp(rfc3339: createdAt.rfc3339) == createdAt,
            "created_at accepted as \(createdAt.microseconds) µs, outside years 1 to 9999 or not round-tripping"
        )

        // What the single-pass JSON checks accept, the parsers they replaced accepted too
        // (JSONCheckTests: those were laxer, never stricter).
        if let metadata = message.metadata {
            let parsed = try? JSONSerialization.jsonObject(with: Data(metadata.utf8))
            findings.expect(parsed is [String: Any], "metadata accepted that JSONSerialization refuses: \(metadata)")
        }
        if let contexts = message.contexts {
            let decoded = try? JSONDecoder().decode([ReferenceJSON.Context].self, from: Data(contexts.utf8))
            findings.expect(decoded != nil, "contexts accepted that JSONDecoder refuses: \(contexts)")
        }
    }
}
