import Foundation

/// A systemd unit file's `[Service]` settings, as systemd reads them: `Key=value` lines, each
/// key possibly repeated, comments and blank lines ignored.
struct SystemdUnit {
    let path: String
    /// Each key's values in order, from the `[Service]` section.
    let service: [String: [String]]

    init(path: String) throws {
        self.path = path
        var section = ""
        var service: [String: [String]] = [:]
        for raw in try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n") {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") || line.hasPrefix(";") { continue }
            if line.hasPrefix("[") {
                section = line
                continue
            }
            guard section == "[Service]", let equals = line.firstIndex(of: "=") else { continue }
            service[String(line[..<equals]), default: []].append(String(line[line.index(after: equals)...]))
        }
        self.service = service
    }

    /// The repository's `systemd/` directory.
    static let directory = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("systemd").path

    /// The words of every value of `key`, in order.
    func words(_ key: String) -> [String] {
        (service[key] ?? []).flatMap { $0.split(separator: " ").map(String.init) }
    }

    /// `Environment=` assignments, as a dictionary.
    var environment: [String: String] {
        var environment: [String: String] = [:]
        for word in words("Environment") {
            guard let equals = word.firstIndex(of: "=") else { continue }
            environment[String(word[..<equals])] = String(word[word.index(after: equals)...])
        }
        return environment
    }

    /// The directories the service may write below under `ProtectSystem=strict`: its
    /// `StateDirectory=` (below /var/lib), `ReadWritePaths=`, and /tmp and /var/tmp with
    /// `PrivateTmp=`.
    var writablePaths: [String] {
        var paths = words("StateDirectory").map { "/var/lib/" + $0 }
        paths += words("ReadWritePaths").map { $0.hasPrefix("-") ? String($0.dropFirst()) : $0 }
        if service["PrivateTmp"]?.last == "yes" { paths += ["/tmp", "/var/tmp"] }
        return paths
    }

    /// The system calls `SystemCallFilter=` lets through, as systemd applies it: the first
    /// assignment decides whether it is an allow list; later ones add to it or (`~`) take from it.
    /// An allow list always includes `@default`. Groups come from `systemd-analyze syscall-filter`.
    func allowedSystemCalls() throws -> Set<String> {
        let groups = try Self.syscallGroups()
        func expand(_ word: String, _ seen: Set<String> = []) -> Set<String> {
            let name = String(word.split(separator: ":").first ?? "")
            guard name.hasPrefix("@") else { return [name] }
            guard !seen.contains(name), let members = groups[name] else { return [] }
            return members.reduce(into: Set<String>()) { $0.formUnion(expand($1, seen.union([name]))) }
        }
        var allowed = expand("@default")
        for value in service["SystemCallFilter"] ?? [] {
            let deny = value.hasPrefix("~")
            let names = value.dropFirst(deny ? 1 : 0).split(separator: " ").map(String.init)
            let calls = names.reduce(into: Set<String>()) { $0.formUnion(expand($1)) }
            if deny { allowed.subtract(calls) } else { allowed.formUnion(calls) }
        }
        return allowed
    }

    /// Every group systemd knows, with its members (calls and other groups).
    static func syscallGroups() throws -> [String: [String]] {
        let result = try runProgram(["systemd-analyze", "syscall-filter"])
        guard result.status == 0 else {
            throw SandboxProblem("systemd-analyze syscall-filter failed: install Debian's systemd package")
        }
        var groups: [String: [String]] = [:]
        var current: String?
        for line in String(decoding: result.output, as: UTF8.self).split(separator: "\n") {
            if line.hasPrefix("@") {
                current = String(line)
            } else if let current, line.hasPrefix("    "), !line.contains("#") {
                groups[current, default: []].append(line.trimmingCharacters(in: .whitespaces))
            } else if !line.hasPrefix("    ") {
                current = nil
            }
        }
        return groups
    }
}

struct SandboxProblem: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
