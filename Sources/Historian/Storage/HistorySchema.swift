/// Schema 6: what the history API's listing of a user's conversations needs (contract §7).
///
/// - `archived_conversations` gets the conversation's `title`, `created_at` and `updated_at`,
///   which the archiver records from then on. Rows archived before are left as they are: a
///   listing reads `archived_at` in place of their times until the API first reads the
///   conversation's file, which records its own (`ArchivedConversation.recordListingColumns`).
/// - Both tables get an index by user and recency, so that each page of a listing is one range
///   of each index, whatever its depth: `(user_id, coalesce(updated_at, archived_at) DESC, id
///   DESC)` on archived rows, `(user_id, updated_at DESC)` on `conversations` (replacing the
///   index on `user_id` alone, which it covers). Not `id` in the latter: with the `id` in it,
///   the planner reads that index, as an index-only scan with a filter, in place of the primary
///   key for the store function's lookups by `id` once their generic plans were made on a
///   small table (`MessageStoreTests` holds those plans to key lookups). Ties of `updated_at`
///   are ordered by `id` after the range is read.
///
/// The price: migration 2 left `updated_at` unindexed so that the update every stored batch
/// makes to its conversations (`updated_at`, `cache_version`) is a HOT update, with no index
/// entries written. With `updated_at` in an index, each of those updates writes a new entry in
/// every index of `conversations` (this one and the primary key). docs/api.md has more.
///
/// `CREATE INDEX` holds off writes to the table while it builds, for a large table a while:
/// upgrade with the daemons stopped, or build the indexes `CONCURRENTLY` by hand first (under
/// these names) and the migration then finds them there.
enum HistorySchema {
    static let migration = """
        ALTER TABLE archived_conversations
            ADD COLUMN IF NOT EXISTS title text,
            ADD COLUMN IF NOT EXISTS created_at timestamptz,
            ADD COLUMN IF NOT EXISTS updated_at timestamptz;
        CREATE INDEX IF NOT EXISTS archived_conversations_user_order_idx
            ON archived_conversations (user_id, (coalesce(updated_at, archived_at)) DESC, id DESC);
        CREATE INDEX IF NOT EXISTS conversations_user_order_idx
            ON conversations (user_id, updated_at DESC);
        DROP INDEX IF EXISTS conversations_user_id_idx;
        """
}
