/// The view LangChain's `PostgresChatMessageHistory` (langchain-postgres) reads as its table
/// (contract §8): `SELECT message FROM langchain_chat_history WHERE session_id = $1 ORDER BY id`.
///
/// - `session_id` is the conversation's id.
/// - `id` is the message's position in its conversation, counted in the contract's order
///   (`created_at`, then arrival), so ordering by it orders as the contract does. It is not
///   unique across conversations; LangChain only compares it within one.
/// - `message` is what LangChain's `message_to_dict` makes of the message: `type` is `human`,
///   `ai`, `system` or `tool`, `data.id` the message's UUID, and a `tool` message's
///   `tool_call_id` its metadata's `tool_call_id` when that is a string, else empty. The recent
///   lists' LangChain twins in Redis hold the same dicts (`RecentCache.langchainScript`).
///
/// The condition on `session_id` is pushed below the window function (it filters on the
/// partition column), so a read is a scan of `messages_conversation_order_idx` for that one
/// conversation, in order.
enum LangchainView {
    static let migration = """
        CREATE VIEW langchain_chat_history AS
        SELECT
            row_number() OVER (PARTITION BY m.conversation_id ORDER BY m.created_at, m.arrival) AS id,
            m.conversation_id AS session_id,
            jsonb_build_object(
                'type', k.kind,
                'data', jsonb_build_object(
                    'content', m.content, 'additional_kwargs', '{}'::jsonb, 'response_metadata', '{}'::jsonb,
                    'type', k.kind, 'name', NULL, 'id', m.id::text
                ) || CASE k.kind
                    WHEN 'ai' THEN jsonb_build_object(
                        'tool_calls', '[]'::jsonb, 'invalid_tool_calls', '[]'::jsonb, 'usage_metadata', NULL
                    )
                    WHEN 'tool' THEN jsonb_build_object(
                        'tool_call_id', CASE WHEN jsonb_typeof(m.metadata -> 'tool_call_id') = 'string'
                            THEN m.metadata ->> 'tool_call_id' ELSE '' END,
                        'artifact', NULL, 'status', 'success'
                    )
                    ELSE '{}'::jsonb
                END
            ) AS message,
            m.created_at
        FROM messages AS m
        CROSS JOIN LATERAL (
            SELECT CASE m.role WHEN 'user' THEN 'human' WHEN 'assistant' THEN 'ai' ELSE m.role END AS kind
        ) AS k;
        COMMENT ON VIEW langchain_chat_history IS
            'Messages as LangChain''s PostgresChatMessageHistory reads them; id orders a session''s messages.';
        """
}
