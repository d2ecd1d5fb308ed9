-- Of the shards listed in {shards} (`VALUES (0), (1), ...`), those with an event the claim
-- would take at $1: one probe of the claim index per shard, so an idle relay polls
-- all its shards with one query.
-- Written by hand: sea-query cannot name the columns of a VALUES list.
-- {outbox} is the outbox table's quoted name.
WITH "shards" ("shard") AS ({shards})
SELECT s."shard" FROM "shards" s
WHERE EXISTS (
    SELECT 1 FROM {outbox} c
    WHERE c."shard" = s."shard"
      AND NOT c."published" AND c."dead_lettered_at" IS NULL AND NOT c."parked"
      AND (c."next_attempt_at" IS NULL OR c."next_attempt_at" <= $1)
)
