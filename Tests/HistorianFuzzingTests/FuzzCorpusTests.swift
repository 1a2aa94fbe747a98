import Foundation
import HistorianFuzzing
import Testing

/// Every committed input of every fuzz target, the seeds and the inputs of bugs fixed, runs
/// through its target without a crash and with every property holding.
struct FuzzCorpusTests {
    static let fuzz = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("fuzz")

    static func files(_ kind: String, _ target: FuzzTarget) -> [URL] {
        let directory = fuzz.appendingPathComponent(kind).appendingPathComponent(target.rawValue)
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        return names.sorted().map { directory.appendingPathComponent($0) }
    }

    @Test(arguments: FuzzTarget.allCases)
    func seedsAndRegressionsPass(_ target: FuzzTarget) throws {
        let seeds = Self.files("corpus", target)
        #expect(seeds.count >= 5, "fuzz/corpus/\(target) holds \(seeds.count) seeds")
        for file in seeds + Self.files("regressions", target) {
            let problems = target.run(Array(try Data(contentsOf: file)))
            #expect(problems.isEmpty, "\(file.lastPathComponent): \(problems)")
        }
    }
}
