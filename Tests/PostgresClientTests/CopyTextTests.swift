import PostgresClient
import Testing

struct CopyTextTests {
    @Test func escapesTheCopyTextFormat() {
        var out: [UInt8] = []
        CopyText.append("a\tb\nc\\d\re", to: &out)
        CopyText.tab(&out)
        CopyText.append(nil, to: &out)
        #expect(String(decoding: out, as: UTF8.self) == #"a\tb\nc\\d\re"# + "\t" + #"\N"#)
    }
}
