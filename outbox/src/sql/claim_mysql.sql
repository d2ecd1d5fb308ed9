-- The claim on MySQL and MariaDB: the same rows and flags as claim.sql, in the same
-- column order (the relay reads them by position), shaped for
-- InnoDB, which has no partial index. The claim index there is
-- (shard, published, parked, dead_lettered_at, seq, next_attempt_at): with the shard
-- and the three states compared to constants, `seq` order comes from the index and
-- the scan starts at the shard's oldest claimable event, past no history. (With
-- PostgreSQL's `BETWEEN` form, MariaDB sorts every pending row of the shard.)
-- The keys waiting for a retry and the failing keys are found through the `retry`
-- index (shard, next_attempt_at), which holds a handful of non-NULL rows.
-- Written by hand, with ANSI quotes and numbered parameters (the dialect respells
-- them); {outbox} is the outbox table's quoted name.
WITH "waiting" AS (
    SELECT COALESCE(b."partition_key", b."aggregate_id") AS "key", MIN(b."seq") AS "first"
    FROM {outbox} b
    WHERE b."shard" = $1 AND b."next_attempt_at" > $2
      AND NOT b."published" AND b."dead_lettered_at" IS NULL
    GROUP BY COALESCE(b."partition_key", b."aggregate_id")
),
"failing" AS (
    SELECT COALESCE(b."partition_key", b."aggregate_id") AS "key", MIN(b."seq") AS "first"
    FROM {outbox} b
    WHERE b."shard" = $1
      AND b."next_attempt_at" IS NOT NULL AND NOT b."published" AND b."dead_lettered_at" IS NULL
    GROUP BY COALESCE(b."partition_key", b."aggregate_id")
),
"next" AS (
    SELECT c."seq" FROM {outbox} c
    WHERE c."shard" = $1
      AND NOT c."published" AND NOT c."parked" AND c."dead_lettered_at" IS NULL
      AND (c."next_attempt_at" IS NULL OR c."next_attempt_at" <= $2)
    ORDER BY c."seq" LIMIT $3
)
SELECT o."seq", o."id", o."event_type", o."event_version", o."aggregate_id",
       o."destination_topic", COALESCE(o."partition_key", o."aggregate_id") AS "key",
       CAST(o."event_data" AS CHAR) AS "payload", CAST(o."headers" AS CHAR) AS "headers",
       o."trace_id", o."user_id", o."created_at", o."attempts", o."tombstone",
       o."next_attempt_at" IS NOT NULL AS "retried",
       EXISTS (SELECT 1 FROM "waiting" w
               WHERE w."key" = COALESCE(o."partition_key", o."aggregate_id")
                 AND w."first" < o."seq") AS "waiting",
       EXISTS (SELECT 1 FROM "failing" f
               WHERE f."key" = COALESCE(o."partition_key", o."aggregate_id")
                 AND f."first" < o."seq") AS "failing",
       EXISTS (SELECT 1 FROM {outbox} p
               WHERE p."parked" AND p."shard" = o."shard"
                 AND COALESCE(p."partition_key", p."aggregate_id") = COALESCE(o."partition_key", o."aggregate_id")
                 AND p."seq" < o."seq") AS "after_parked"
FROM "next" n JOIN {outbox} o ON o."seq" = n."seq"
ORDER BY o."seq"
