/// Migration 5: the `erasures` journal and audit table (see docs/erasure.md).
///
/// One row per run of `historian forget` (or of the API's `DELETE`s) that removed something or
/// was interrupted: what was erased (`scope`, and the subject only as the SHA-256 of its id),
/// when, how far it got and what it removed. Never content, never the user id in clear.
///
/// While a row is open (`finished_at` NULL), `pending` holds what the steps after the rows need
/// to find the rest: the conversation ids, the recorded archive paths and the session ids. Those
/// are identifiers, not content, and they go when the row is closed (the CHECK holds it to that).
/// At most one row per subject is open: a rerun finds it and finishes it.
enum ErasureSchema {
    static let migration = """
        CREATE TABLE erasures (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            scope text NOT NULL CHECK (scope IN ('user', 'conversation')),
            subject_sha256 text NOT NULL CHECK (subject_sha256 ~ '^[0-9a-f]{64}$'),
            started_at timestamptz NOT NULL DEFAULT now(),
            finished_at timestamptz,
            -- The last step done (ErasureStep), for a rerun to go on from.
            step text NOT NULL DEFAULT 'opened',
            -- When, and by which transaction, the rows were deleted: rows of the subject whose
            -- xmin is newer were stored after the erasure, as new data.
            rows_deleted_at timestamptz,
            rows_deleted_xid xid8,
            pending jsonb,
            conversations bigint NOT NULL DEFAULT 0,
            messages bigint NOT NULL DEFAULT 0,
            contexts bigint NOT NULL DEFAULT 0,
            archived_conversations bigint NOT NULL DEFAULT 0,
            archive_files bigint NOT NULL DEFAULT 0,
            redis_keys bigint NOT NULL DEFAULT 0,
            dead_letters bigint NOT NULL DEFAULT 0,
            CHECK (finished_at IS NULL OR pending IS NULL)
        );
        CREATE UNIQUE INDEX erasures_open_subject_idx ON erasures (scope, subject_sha256) WHERE finished_at IS NULL;
        -- An erasure finds a user's archived conversations by owner.
        CREATE INDEX IF NOT EXISTS archived_conversations_user_id_idx ON archived_conversations (user_id);
        """
}
