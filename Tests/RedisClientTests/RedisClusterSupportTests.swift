import Foundation
import LocalServers
import Testing

/// The test support's Redis Cluster: three masters with a replica each, and a replica that
/// takes over within seconds when its master is killed.
@Suite(.serialized)
struct RedisClusterSupportTests {
    @Test("three masters serve every slot; a killed master's replica takes over")
    func startsAndFailsOver() async throws {
        let cluster = try await RedisCluster.start()
        do {
            let nodes = try await cluster.clusterNodes()
            #expect(nodes.count == 6)
            let masters = try await cluster.masters()
            #expect(masters.count == 3)
            let served = nodes.filter { $0.flags.contains("master") }.flatMap(\.slots).reduce(0) { total, range in
                let bounds = range.split(separator: "-").compactMap { Int($0) }
                return total + ((bounds.last ?? 0) - (bounds.first ?? 0) + 1)
            }
            #expect(served == 16384)

            let victim = try await cluster.master(ofSlot: 0)
            try await cluster.kill(port: victim.port)
            try await cluster.waitForFailover(of: victim.port, timeout: .seconds(30))
            let successor = try await cluster.master(ofSlot: 0)
            #expect(successor.port != victim.port)
            #expect(try await cluster.masters().count == 3)
        } catch {
            try? await cluster.destroy()
            throw error
        }
        try await cluster.destroy()
    }
}
