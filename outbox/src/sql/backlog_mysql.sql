-- The backlog gauges on MySQL and MariaDB: the same figures as backlog.sql. The
-- oldest pending event of each shard in {shards} is probed with `shard = s.shard` in
-- `seq` order, which the claim index (shard, published, parked, dead_lettered_at, seq)
-- answers with its first entry; PostgreSQL's `BETWEEN` form made MariaDB sort every
-- pending event of the shard. (The counts scan the claim and dead indexes: InnoDB has
-- no partial index, so they read past published history too.)
-- Written by hand, with ANSI quotes (the dialect respells them); {outbox} is the
-- outbox table's quoted name.
WITH "shards" ("shard") AS ({shards})
SELECT
    (SELECT COUNT(*) FROM {outbox}
     WHERE NOT "published" AND "dead_lettered_at" IS NULL AND NOT "parked")
  + (SELECT COUNT(*) FROM {outbox}
     WHERE "parked" AND NOT "published" AND "dead_lettered_at" IS NULL) AS "pending",
    (SELECT MIN((SELECT o."created_at" FROM {outbox} o
                 WHERE o."shard" = s."shard"
                   AND NOT o."published" AND NOT o."parked" AND o."dead_lettered_at" IS NULL
                 ORDER BY o."seq" LIMIT 1))
     FROM "shards" s) AS "oldest",
    (SELECT COUNT(*) FROM {outbox}
     WHERE "dead_lettered_at" IS NOT NULL AND NOT "published") AS "dead"
