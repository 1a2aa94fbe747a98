import Testing

@testable import Historian

struct ReadBudgetTests {
    @Test("the first read assumes entries as large as the validator accepts")
    func firstReadIsCautious() {
        let budget = ReadBudget(batchSize: 500, batchBytes: 4 << 20, firstEntryBytes: 1 << 20)
        #expect(budget.count() == 4)
    }

    @Test("an entry larger than the whole budget is still read, alone")
    func alwaysAtLeastOne() {
        var budget = ReadBudget(batchSize: 500, batchBytes: 64 << 10, firstEntryBytes: 1 << 20)
        #expect(budget.count() == 1)
        budget.observe(largestEntryBytes: 900 << 10)
        #expect(budget.count() == 1)
        // …but a batch that already holds an entry takes no more once it is over.
        #expect(budget.count(entries: 1, bytes: 900 << 10) == 0)
    }

    @Test("after small entries the next read asks for a whole batch_size")
    func growsBackAtOnce() {
        var budget = ReadBudget(batchSize: 500, batchBytes: 4 << 20, firstEntryBytes: 1 << 20)
        #expect(budget.count() == 4)
        budget.observe(largestEntryBytes: 2_000)
        #expect(budget.count() == 500)
        // With room for fewer than batch_size of them, as many as fit.
        budget.observe(largestEntryBytes: 10_000)
        #expect(budget.count() == 419)
    }

    @Test("one large entry shrinks the next read at once")
    func largeEntryShrinksAtOnce() {
        var budget = ReadBudget(batchSize: 500, batchBytes: 4 << 20, firstEntryBytes: 2_000)
        #expect(budget.count() == 500)
        budget.observe(largestEntryBytes: 512 << 10)
        #expect(budget.count() == 8)
    }

    @Test("a read that returned nothing leaves the estimate alone")
    func emptyReadSaysNothing() {
        var budget = ReadBudget(batchSize: 500, batchBytes: 4 << 20, firstEntryBytes: 1 << 20)
        budget.observe(largestEntryBytes: 0)
        #expect(budget.entryBytes == 1 << 20)
    }

    @Test("a partly filled batch asks for what fits in its bytes and its count")
    func restOfABatch() {
        let budget = ReadBudget(batchSize: 500, batchBytes: 1 << 20, firstEntryBytes: 1_024)
        #expect(budget.count(entries: 100, bytes: 100 << 10) == 400)
        #expect(budget.count(entries: 100, bytes: 800 << 10) == 224)
        #expect(budget.count(entries: 500, bytes: 0) == 0)
        #expect(budget.count(entries: 10, bytes: 2 << 20) == 0)
    }

    @Test("tiny entries do not make the estimate zero")
    func tinyEntries() {
        var budget = ReadBudget(batchSize: 100_000, batchBytes: 1 << 20, firstEntryBytes: 0)
        budget.observe(largestEntryBytes: 1)
        #expect(budget.entryBytes == ReadBudget.smallestEntryBytes)
        #expect(budget.count() == (1 << 20) / ReadBudget.smallestEntryBytes)
    }
}
