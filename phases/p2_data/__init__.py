"""Phase 2 — data: PostgreSQL → RDS and Redis → ElastiCache, fast, resumable and verified independently.

Order: rds → pgvector → (pg-backup) → rds-restore → data-validate;  elasticache → redis-migrate → redis-verify.
``pgvector`` runs BEFORE ``rds-restore`` (rds-restore depends on it): the vector type must exist on the target
before the schema that uses it is restored. The source is only ever read.
"""

NUMBER = 2
TITLE = "data"
# step modules in definition order (the graph orders by phase, then depends_on, then this order)
ORDER = (
    "rds",
    "elasticache",
    "pg_backup",
    "pgvector",
    "rds_restore",
    "data_validate",
    "redis_migrate",
    "redis_verify",
    "pg_sync",
    "redis_sync",
)
