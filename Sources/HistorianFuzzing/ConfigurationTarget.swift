import Foundation
import Historian
import PostgresClient
import RedisClient

/// Configuration values, written as a flat config file is (`key: value` lines, `#` comments),
/// through what Historian makes of them: each key's parsing and the checks across keys, the
/// server endpoints, and the redacted lines `historian check` prints.
///
/// The lines are split here rather than read by the YAML provider: the target is Historian's
/// parsing, not the YAML library's. Values are as YAML hands them over, a quoted scalar unquoted.
enum ConfigurationTarget {
    static func run(_ input: [UInt8], _ findings: inout FuzzFindings) {
        let values = self.values(String(decoding: input, as: UTF8.self))
        let configuration: HistorianConfiguration
        do {
            configuration = try HistorianConfiguration(
                value: { name in values[name] ?? HistorianConfiguration.keys.first { $0.name == name }!.defaultValue },
                environment: [:]
            )
        } catch let error as HistorianError {
            findings.expect(error.code == .invalidConfiguration, "refused with \(error.code): \(error.message)")
            return
        } catch {
            findings.expect(false, "refused with an error of another type: \(error)")
            return
        }
        _ = try? ServerEndpoints(configuration)
        _ = configuration.redactedLines
        checkRedaction(ofRedis: configuration.redisURL, cluster: configuration.redisCluster, &findings)
        checkRedaction(ofPostgres: configuration.postgresURL, &findings)
    }

    /// The last value of each known key.
    static func values(_ text: String) -> [String: String] {
        var values: [String: String] = [:]
        for line in text.split(whereSeparator: \.isNewline) {
            guard !line.hasPrefix("#"), let colon = line.firstIndex(of: ":") else { continue }
            let key = line[..<colon].trimmingCharacters(in: .whitespaces)
            var value = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            if value.count >= 2, let quote = value.first, quote == "\"" || quote == "'", value.last == quote {
                value = String(value.dropFirst().dropLast())
            }
            if HistorianConfiguration.keys.contains(where: { $0.name == key }) { values[key] = value }
        }
        return values
    }

    /// A Redis URL with a password, redacted, still parses, with `***` for the password.
    static func checkRedaction(ofRedis url: String, cluster: Bool, _ findings: inout FuzzFindings) {
        func password(_ url: String) -> String?? {
            if cluster {
                return (try? RedisClusterConfiguration(url: url)).map { $0.seeds[0].password }
            }
            return (try? RedisConfiguration(url: url)).map(\.password)
        }
        guard case .some(.some) = password(url) else { return }
        let redacted = HistorianConfiguration.redactURL(url)
        findings.expect(
            password(redacted) == .some("***"),
            "redis_url \(url) redacted as \(redacted), whose password is \(String(describing: password(redacted)))"
        )
    }

    /// A PostgreSQL URL or conninfo with a password (or an `sslpassword`, which unlocks a client
    /// key), redacted, still reads (as libpq reads it), with `***` for each.
    static func checkRedaction(ofPostgres url: String, _ findings: inout FuzzFindings) {
        func options(_ url: String) -> [String: String]? {
            guard case .success(let options) = ConninfoOptions.parse(url) else { return nil }
            return options
        }
        // libpq reads a string without `=` or a URI scheme as a database name alone.
        guard url.contains("=") || url.hasPrefix("postgresql://") || url.hasPrefix("postgres://"),
            let original = options(url)
        else { return }
        let redacted = HistorianConfiguration.redactURL(url)
        let read = options(redacted)
        for keyword in ["password", "sslpassword"] {
            guard let secret = original[keyword], !secret.isEmpty else { continue }
            findings.expect(
                read?[keyword] == "***",
                "postgres_url \(url) redacted as \(redacted), whose \(keyword) is \(String(describing: read?[keyword]))"
            )
        }
    }
}
