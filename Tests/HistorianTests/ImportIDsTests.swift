import Testing

@testable import Historian

/// The IDs an import gives conversations and messages: UUIDv5 as RFC 9562 has it, checked
/// against Python's `uuid.uuid5`, and the same for the same row on every run.
struct ImportIDsTests {
    static let dns = CanonicalUUID("6ba7b810-9dad-11d1-80b4-00c04fd430c8")!
    static let url = CanonicalUUID("6ba7b811-9dad-11d1-80b4-00c04fd430c8")!

    /// `uuid.uuid5(namespace, name)`, computed with Python 3.
    @Test(arguments: [
        (dns, "python.org", "886313e1-3b8a-5372-9b90-0c9aee199e5d"),
        (url, "https://example.com/é", "20ecd233-a9e7-5067-a96f-fd6600ca3fda"),
        (url, "urn:historian:import:sqlite:conversation", "21432bf2-dfbf-5f51-98e1-7a7f2d9b3616"),
    ])
    func version5MatchesPython(namespace: CanonicalUUID, name: String, expected: String) {
        let uuid = CanonicalUUID.version5(namespace: namespace, name: name)
        #expect(uuid.text == expected)
        #expect(uuid.text[uuid.text.index(uuid.text.startIndex, offsetBy: 14)] == "5")
    }

    @Test func theNamespaceIsTheDocumentedOne() {
        #expect(
            ImportIDs.conversationNamespace
                == CanonicalUUID.version5(namespace: Self.url, name: "urn:historian:import:sqlite:conversation")
        )
    }

    @Test func conversationIDsThatAreUUIDsAreKept() {
        let (id, isUUID) = ImportIDs.conversation(Array("0193A1B2-0000-7000-8000-0000000000C1".utf8))
        #expect(isUUID)
        #expect(id.text == "0193a1b2-0000-7000-8000-0000000000c1")
    }

    /// Python: `uuid5(NS, "conv-1")`, `uuid5(NS, "")` with NS the namespace above.
    @Test(arguments: [("conv-1", "3ecfff80-6cf0-55f1-8159-60afce9738b5"), ("", "2a685509-43a3-51eb-be45-bd6e24734f87")])
    func otherConversationIDsMapToVersion5(sqliteID: String, expected: String) {
        let (id, isUUID) = ImportIDs.conversation(Array(sqliteID.utf8))
        #expect(!isUUID)
        #expect(id.text == expected)
    }

    /// Python: `uuid5(conversation, "42")`, `uuid5(conversation, "-3")`.
    @Test func messageIDsAreVersion5OfTheDecimalIDInTheConversation() {
        #expect(
            ImportIDs.message(42, in: CanonicalUUID("3ecfff80-6cf0-55f1-8159-60afce9738b5")!).text
                == "12b1a786-54c2-5392-95be-afb4c7c78925"
        )
        let conversation = CanonicalUUID("0193a1b2-0000-7000-8000-0000000000c1")!
        #expect(ImportIDs.message(7, in: conversation).text == "553e7ac0-cdd0-5589-9c5d-87be0a6ef836")
        #expect(ImportIDs.message(-3, in: conversation).text == "1f58842b-0185-5d13-a39b-1114c2d1c14d")
    }

    @Test func entryIDsCarryTheSQLiteID() {
        #expect(ImportIDs.entry(1234).description == "0-1234")
        #expect(ImportIDs.entry(-1).description == "0-18446744073709551615")
        #expect(ImportIDs.entry(1) != ImportIDs.entry(2))
    }
}
