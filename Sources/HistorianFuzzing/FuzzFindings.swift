/// The properties a target found not to hold for one input: bugs that do not crash.
struct FuzzFindings {
    private(set) var problems: [String] = []

    /// Records `problem` unless `condition` holds.
    mutating func expect(_ condition: Bool, _ problem: @autoclosure () -> String) {
        if !condition { problems.append(problem()) }
    }
}
