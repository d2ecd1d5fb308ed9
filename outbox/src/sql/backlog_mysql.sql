-- The backlog gauges on MySQL and MariaDB: the same figures as backlog.sql (parked
-- events counted in the oldest pending one too). The
-- oldest pending event of each shard in {shards} is probed with `shard = s.shard` in
-- `seq` order, which the claim index (shard, published, parked, dead_lettered_at, seq)
-- answers with its first entry; PostgreSQL's `BETWEEN` form made MariaDB sort every
-- pending event of the shard. The pending events are counted shard by shard through
-- the same index (shard, then `published` compared to a constant), so the count reads
-- no published history; events outside 0..=$1 (the last shard) are counted by a range
-- that holds none unless the shard count was lowered.
-- Written by hand, with ANSI quotes and numbered parameters (the dialect respells
-- them); {outbox} is the outbox table's quoted name.
WITH "shards" ("shard") AS ({shards})
SELECT
    (SELECT COUNT(*) FROM {outbox} c
     WHERE c."shard" IN (SELECT "shard" FROM "shards")
       AND NOT c."published" AND c."dead_lettered_at" IS NULL)
  + (SELECT COUNT(*) FROM {outbox} c
     WHERE (c."shard" < 0 OR c."shard" > $1)
       AND NOT c."published" AND c."dead_lettered_at" IS NULL) AS "pending",
    (SELECT MIN("since") FROM (
        SELECT (SELECT o."created_at" FROM {outbox} o
                WHERE o."shard" = s."shard"
                  AND NOT o."published" AND NOT o."parked" AND o."dead_lettered_at" IS NULL
                ORDER BY o."seq" LIMIT 1) AS "since"
        FROM "shards" s
        UNION ALL
        SELECT MIN(p."created_at") FROM {outbox} p
        WHERE p."parked" AND NOT p."published" AND p."dead_lettered_at" IS NULL
     ) AS "pending_since") AS "oldest",
    (SELECT COUNT(*) FROM {outbox}
     WHERE "dead_lettered_at" IS NOT NULL AND NOT "published") AS "dead"
