import Foundation
import HistorianFuzzing

// Built by scripts/fuzz with `-D FUZZING -sanitize=fuzzer,address`, this is a libFuzzer binary;
// built as usual, it replays inputs through the same targets. `historian-fuzz TARGET ARGUMENTS…`
// either way (`--list` names the targets).

#if FUZZING
/// libFuzzer's driver (`-sanitize=fuzzer` links it in).
@_silgen_name("LLVMFuzzerRunDriver")
private func runDriver(
    _ argc: UnsafeMutablePointer<Int32>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ testOneInput: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32
) -> Int32

/// The target being fuzzed. Set once before libFuzzer starts, which then calls
/// `LLVMFuzzerTestOneInput` on its one thread.
nonisolated(unsafe) private var fuzzedTarget = FuzzTarget.entry

/// libFuzzer's entry point: one input. A property that did not hold aborts, so that libFuzzer
/// keeps the input as it keeps a crash's.
///
/// The driver is handed this function; the symbol is there for the libFuzzer `main` that
/// `-sanitize=fuzzer` links as well, which refers to it but never runs (this `main` does).
@_cdecl("LLVMFuzzerTestOneInput")
func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let problems = fuzzedTarget.run(Array(UnsafeBufferPointer(start: data, count: size)))
    guard problems.isEmpty else {
        for problem in problems { FileHandle.standardError.write(Data("\(fuzzedTarget): \(problem)\n".utf8)) }
        abort()
    }
    return 0
}
#endif

@main
enum HistorianFuzz {
    /// Where the target's name can come from besides the first argument: libFuzzer's child
    /// processes (`-merge=1`, `-fork`) get the arguments without it.
    static let targetVariable = "HISTORIAN_FUZZ_TARGET"

    static func main() {
        let arguments = CommandLine.arguments
        if arguments.dropFirst().first == "--list" {
            for target in FuzzTarget.allCases { print("\(target.rawValue)\t\(target.summary)") }
            return
        }
        var named = false
        let target: FuzzTarget
        if arguments.count > 1, let first = FuzzTarget(rawValue: arguments[1]) {
            target = first
            named = true
        } else if let name = ProcessInfo.processInfo.environment[targetVariable],
            let inherited = FuzzTarget(rawValue: name)
        {
            target = inherited
        } else {
            fail(
                "usage: historian-fuzz TARGET [libFuzzer flags] [CORPUS|INPUT…]; targets: "
                    + FuzzTarget.allCases.map(\.rawValue).joined(separator: ", ")
            )
        }
        #if FUZZING
        setenv(targetVariable, target.rawValue, 1)
        fuzzedTarget = target
        var argc = CommandLine.argc
        var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
        if named {
            // libFuzzer reads the rest: the program's name stands where the target's was.
            argv![1] = argv![0]
            argv! += 1
            argc -= 1
        }
        exit(runDriver(&argc, &argv, testOneInput))
        #else
        replay(target, Array(arguments.dropFirst(named ? 2 : 1)))
        #endif
    }

    /// Runs every file named, and every file in every directory named, through `target`; flags
    /// (libFuzzer's, given to a fuzzing build) are skipped.
    static func replay(_ target: FuzzTarget, _ paths: [String]) {
        var files: [String] = []
        for path in paths where !path.hasPrefix("-") {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
                fail("no such file: \(path)")
            }
            if isDirectory.boolValue {
                let names = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
                files += names.sorted().map { "\(path)/\($0)" }
            } else {
                files.append(path)
            }
        }
        var failed = 0
        for file in files {
            guard let data = FileManager.default.contents(atPath: file) else { fail("cannot read \(file)") }
            let problems = target.run(Array(data))
            print("\(file): \(problems.isEmpty ? "ok" : problems.joined(separator: "; "))")
            if !problems.isEmpty { failed += 1 }
        }
        print("\(target): \(files.count) inputs, \(failed) with problems")
        exit(failed == 0 ? 0 : 1)
    }

    static func fail(_ message: String) -> Never {
        FileHandle.standardError.write(Data("historian-fuzz: \(message)\n".utf8))
        exit(2)
    }
}
