-- The claim: the next events of shard $1 that may be published at $2, at most $3,
-- oldest first, each with three flags about the earlier events of its key (see claim.rs).
-- Written by hand: sea-query cannot say a materialized CTE's column list, and the
-- shape of each part is chosen for the planner (the comments in claim.rs say why).
-- {outbox} is the outbox table's quoted name. The relay reads the columns by position
-- (`ClaimedRow` in message.rs): keep their order.
WITH "waiting" AS MATERIALIZED (
    SELECT COALESCE(b."partition_key", b."aggregate_id") AS "key", MIN(b."seq") AS "first"
    FROM {outbox} b
    WHERE b."shard" = $1 AND b."next_attempt_at" > $2
      AND NOT b."published" AND b."dead_lettered_at" IS NULL
    GROUP BY COALESCE(b."partition_key", b."aggregate_id")
),
"failing" AS MATERIALIZED (
    SELECT COALESCE(b."partition_key", b."aggregate_id") AS "key", MIN(b."seq") AS "first"
    FROM {outbox} b
    WHERE b."shard" = $1
      AND b."next_attempt_at" IS NOT NULL AND NOT b."published" AND b."dead_lettered_at" IS NULL
    GROUP BY COALESCE(b."partition_key", b."aggregate_id")
),
"next" AS MATERIALIZED (
    SELECT c."seq" FROM {outbox} c
    WHERE c."shard" BETWEEN $1 AND $1
      AND NOT c."published" AND c."dead_lettered_at" IS NULL AND NOT c."parked"
      AND (c."next_attempt_at" IS NULL OR c."next_attempt_at" <= $2)
    ORDER BY c."shard", c."seq" LIMIT $3
)
SELECT o."seq", o."id", o."event_type", o."event_version", o."aggregate_id",
       o."destination_topic", COALESCE(o."partition_key", o."aggregate_id") AS "key",
       CAST(o."event_data" AS TEXT) AS "payload", CAST(o."headers" AS TEXT) AS "headers",
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
