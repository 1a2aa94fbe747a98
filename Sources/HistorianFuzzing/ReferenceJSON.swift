import Foundation

/// The shapes of `contexts` and `metadata` as the `JSONDecoder` reading that `JSONCheck` replaced
/// took them: the reference the single-pass checks are held to (they may be stricter, never
/// laxer), by `JSONCheckTests` and the `entry` target.
package enum ReferenceJSON {
    /// One `contexts` element.
    package struct Context: Decodable {
        var doc_id: String?
        var content: String?
        var score: Double?
        var metadata: Object?
    }

    /// Any JSON object.
    package struct Object: Decodable {
        private struct AnyKey: CodingKey {
            var stringValue: String
            var intValue: Int? { nil }
            init?(stringValue: String) { self.stringValue = stringValue }
            init?(intValue: Int) { nil }
        }

        package init(from decoder: any Decoder) throws {
            _ = try decoder.container(keyedBy: AnyKey.self)
        }
    }
}
