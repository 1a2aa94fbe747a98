import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The archive part of an erasure: the files of the erased conversations, removed without
/// reading them (archived conversations are never restored to be erased).
///
/// Two sources, because a file can outlive its row: the paths `archived_conversations`
/// recorded (wherever `archive_dir` was then), and every file below `archive_dir` named after
/// an erased conversation (`<id>.jsonl.gz`, its `.sha256`, and the temporary names they are
/// written under), such as the file of a restore that died before removing it, or of an archive
/// pass that died before recording it. The walk reads the names of the whole archive once per
/// erasure. A file that is already gone is fine: removing is idempotent. Blocking file-system
/// work: run it on a thread that may block.
enum ErasureFiles {
    /// The names the archive gives a conversation's files (see `ArchiveLayout`, `ArchiveWriter`
    /// and `Durable.write`).
    static func names(of conversation: String) -> [String] {
        let archive = "\(conversation).jsonl.gz"
        return [archive, "\(archive).sha256", ".\(archive).tmp", ".\(archive).sha256.tmp"]
    }

    /// The files there are now: the recorded ones with their `.sha256` and temporary names,
    /// and those below `root` named after the plan's conversations.
    static func present(_ plan: ErasurePlan, root: String) -> [String] {
        var paths = Set<String>()
        for recorded in plan.files {
            let directory = (recorded as NSString).deletingLastPathComponent
            let name = (recorded as NSString).lastPathComponent
            for path in [
                recorded, "\(recorded).sha256", "\(directory)/.\(name).tmp", "\(directory)/.\(name).sha256.tmp",
            ] {
                paths.insert(path)
            }
        }
        let wanted = Set(plan.conversations.flatMap(names(of:)))
        if !wanted.isEmpty, let walk = FileManager.default.enumerator(atPath: root) {
            while let relative = walk.nextObject() as? String {
                if wanted.contains((relative as NSString).lastPathComponent) { paths.insert("\(root)/\(relative)") }
            }
        }
        return paths.filter { path in
            var status = stat()
            return lstat(path, &status) == 0 && (status.st_mode & S_IFMT) == S_IFREG
        }.sorted()
    }

    /// Removes the files and syncs their directories, so the removal survives a power loss.
    /// - Returns: how many files were removed.
    static func remove(_ plan: ErasurePlan, root: String) throws -> Int {
        var removed = 0
        var directories = Set<String>()
        for path in present(plan, root: root) {
            if unlink(path) == 0 {
                removed += 1
                directories.insert((path as NSString).deletingLastPathComponent)
            } else if errno != ENOENT {
                throw Durable.failure(path, "cannot remove")
            }
        }
        for directory in directories.sorted() { try Durable.syncDirectory(directory) }
        return removed
    }
}
