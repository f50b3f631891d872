-- A KV entry's removal travels the outbox like its puts, in order after them (shared.outbox
-- purge_kv): 'PURGE' publishes a purge marker that drops the key's values, NULL a message as is.
ALTER TABLE outbox ADD COLUMN kv_operation text CHECK (kv_operation IN ('PURGE'));
