-- Counts of pending and dead-lettered events, and the oldest pending event's time,
-- read from the partial indexes only (claim, parked, dead), never from published
-- history. The oldest pending event is the first of some shard's claim index, so each
-- shard in {shards} (`VALUES (0), (1), ...`) is probed once, in `(shard, seq)` order so that
-- only the claim index can answer (see the claim in claim.rs), or a parked event: the
-- relay keeps a key's first pending event unparked, but the oldest parked event is
-- read too (from the parked index), so that a key stuck parked shows as an age that
-- grows, not as an empty backlog.
-- Written by hand: sea-query cannot name the columns of a VALUES list.
-- {outbox} is the outbox table's quoted name.
WITH "shards" ("shard") AS ({shards})
SELECT
    (SELECT COUNT(*) FROM {outbox}
     WHERE NOT "published" AND "dead_lettered_at" IS NULL AND NOT "parked")
  + (SELECT COUNT(*) FROM {outbox}
     WHERE "parked" AND NOT "published" AND "dead_lettered_at" IS NULL) AS "pending",
    (SELECT MIN("since") FROM (
        SELECT (SELECT o."created_at" FROM {outbox} o
                WHERE o."shard" BETWEEN s."shard" AND s."shard"
                  AND NOT o."published" AND o."dead_lettered_at" IS NULL AND NOT o."parked"
                ORDER BY o."shard", o."seq" LIMIT 1) AS "since"
        FROM "shards" s
        UNION ALL
        SELECT MIN(p."created_at") FROM {outbox} p
        WHERE p."parked" AND NOT p."published" AND p."dead_lettered_at" IS NULL
     ) AS "pending_since") AS "oldest",
    (SELECT COUNT(*) FROM {outbox}
     WHERE "dead_lettered_at" IS NOT NULL AND NOT "published") AS "dead"
