import Foundation

/// What a process traced with `strace -f -y -s 512 -o FILE` did: its system calls, as they bear on
/// a systemd sandbox.
struct StraceLog {
    struct Call {
        var pid: Int
        var name: String
        /// The text between the call's parentheses (as strace prints it), and its result.
        var line: String
        var succeeded: Bool
    }

    let calls: [Call]

    init(path: String) throws {
        var calls: [Call] = []
        // A call interrupted by another thread's is printed in two parts; the second carries the result.
        var unfinished: [Int: String] = [:]
        for raw in try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n") {
            let line = String(raw)
            guard let space = line.firstIndex(of: " "), let pid = Int(line[..<space]) else { continue }
            var rest = line[space...].drop { $0 == " " }
            if rest.hasPrefix("+++") || rest.hasPrefix("---") { continue }
            if rest.hasSuffix("<unfinished ...>") {
                unfinished[pid] = String(rest.dropLast("<unfinished ...>".count))
                continue
            }
            if rest.hasPrefix("<... "), let resumed = rest.range(of: " resumed>") {
                rest = Substring((unfinished.removeValue(forKey: pid) ?? "") + rest[resumed.upperBound...])
            }
            guard let open = rest.firstIndex(of: "(") else { continue }
            let name = String(rest[..<open])
            guard !name.isEmpty, name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }) else { continue }
            // strace pads the result into a column: `)   = -1 EACCES (…)`.
            let result = rest.range(of: #"\)\s+= "#, options: [.regularExpression, .backwards]).map { rest[$0.upperBound...] } ?? ""
            calls.append(Call(pid: pid, name: name, line: String(rest), succeeded: !result.hasPrefix("-1") && !result.hasPrefix("?")))
        }
        self.calls = calls
    }

    var systemCalls: Set<String> { Set(calls.map(\.name)) }

    /// The address families of every `socket()` call: `AF_UNIX`, `AF_INET`, …
    var socketFamilies: Set<String> {
        Set(
            calls.filter { $0.name == "socket" }.compactMap { call in
                call.line.split(separator: "(").dropFirst().first?.split(separator: ",").first.map(String.init)
            }
        )
    }

    /// Calls that map memory writable and executable at once, or make memory executable
    /// afterwards: what `MemoryDenyWriteExecute=yes` refuses.
    var writableExecutableMappings: [String] {
        calls.filter { call in
            switch call.name {
            case "mmap", "mmap2": call.line.contains("PROT_WRITE") && call.line.contains("PROT_EXEC")
            case "mprotect", "pkey_mprotect": call.line.contains("PROT_EXEC")
            default: false
            }
        }.map(\.line)
    }

    /// The first quoted argument of each successful call named in `names`: a path, made
    /// absolute with the directory of a leading descriptor (`strace -y` prints `5</dir>`).
    func paths(of names: Set<String>, where condition: (Call) -> Bool = { _ in true }) -> [String] {
        calls.filter { names.contains($0.name) && $0.succeeded && condition($0) }.compactMap { call in
            guard let open = call.line.firstIndex(of: "("), let start = call.line.firstIndex(of: "\"") else { return nil }
            let after = call.line.index(after: start)
            guard let end = call.line[after...].firstIndex(of: "\"") else { return nil }
            let path = String(call.line[after..<end])
            guard !path.hasPrefix("/") else { return path }
            let arguments = call.line[call.line.index(after: open)...]
            guard let less = arguments.firstIndex(of: "<"), arguments[..<less].allSatisfy(\.isNumber), !arguments[..<less].isEmpty,
                let greater = arguments[less...].firstIndex(of: ">")
            else { return path }
            return String(arguments[arguments.index(after: less)..<greater]) + "/" + path
        }
    }

    /// Paths opened for writing, created, renamed, linked or removed.
    var writtenPaths: [String] {
        let opens = paths(of: ["open", "openat", "openat2", "creat"]) {
            $0.line.contains("O_WRONLY") || $0.line.contains("O_RDWR") || $0.line.contains("O_CREAT") || $0.name == "creat"
        }
        let changes = paths(of: [
            "mkdir", "mkdirat", "rename", "renameat", "renameat2", "unlink", "unlinkat", "rmdir", "link", "linkat",
            "symlink", "symlinkat", "chmod", "fchmodat", "chown", "fchownat", "truncate", "utimensat",
        ])
        return opens + changes
    }

    /// Every path a successful call opened or looked at.
    var touchedPaths: [String] {
        paths(of: [
            "open", "openat", "openat2", "stat", "lstat", "newfstatat", "statx", "access", "faccessat", "faccessat2",
            "readlink", "readlinkat", "execve", "opendir", "getdents64", "chdir",
        ])
    }

    /// The traced processes and threads.
    var pids: Set<Int> { Set(calls.map(\.pid)) }
}
