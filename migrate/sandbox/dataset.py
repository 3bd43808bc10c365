"""A BetterPrompts-shaped dataset, generated deterministically from (scale, seed). Pure: no I/O.

PostgreSQL: schemas ``auth``, ``prompts`` and ``analytics`` with users, sessions, API keys, templates, prompt history
(long texts with tabs, newlines, backslashes, ``\\N``, quotes and non-ASCII), ``ml_embeddings`` (pgvector
``vector(768)`` + an ivfflat index), events and daily stats: jsonb, arrays, uuid, inet, timestamptz, bytea, numeric,
an enum, NULLs, a generated column, an identity column, serial/bigserial and a standalone sequence, foreign keys.

Redis: keys of every type (string, hash, list, set, zset, stream) in DB 0 (cache), 1 (sessions) and 2 (rate limits),
some with TTLs, some with binary (non-UTF-8) values.

Scale 1 (the default) is about 40 MB in PostgreSQL and seeds in seconds; row counts grow linearly with ``scale``
(``scale`` 50 is about 2 GB). Generation and loading live apart: :mod:`migrate.adapters.sandbox_seed` loads these
rows with binary COPY and Redis pipelines.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import random
import struct
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

EMBEDDING_DIM = 768
DEFAULT_SCALE = 1
DEFAULT_SEED = 42
SCHEMAS = ("auth", "prompts", "analytics")
EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
TECHNIQUES = (
    "chain_of_thought",
    "few_shot",
    "role_play",
    "step_by_step",
    "tree_of_thoughts",
    "self_consistency",
    "structured_output",
    "emotional_appeal",
    "constraints",
    "analogical",
)
INTENTS = ("question_answering", "creative_writing", "code_generation", "data_analysis", "reasoning", "summarization")
TIERS = ("free", "pro", "team", "enterprise")

# Tables are created, COPYed, then constrained and indexed (bulk load first, then foreign keys and indexes).
SCHEMA_SQL = """
CREATE EXTENSION IF NOT EXISTS vector;
CREATE SCHEMA auth;
CREATE SCHEMA prompts;
CREATE SCHEMA analytics;
CREATE TYPE auth.user_tier AS ENUM ('free', 'pro', 'team', 'enterprise');
CREATE SEQUENCE prompts.template_version_seq START 1000;

CREATE TABLE auth.users (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email text NOT NULL,
    username text NOT NULL,
    password_hash text NOT NULL,
    first_name text,
    last_name text,
    roles text[] NOT NULL DEFAULT '{user}',
    tier auth.user_tier NOT NULL DEFAULT 'free',
    is_active boolean NOT NULL DEFAULT true,
    email_verified boolean,
    preferences jsonb NOT NULL DEFAULT '{}',
    last_login_ip inet,
    last_login_at timestamptz,
    avatar bytea,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    email_domain text GENERATED ALWAYS AS (lower(split_part(email, '@', 2))) STORED
);

CREATE TABLE auth.sessions (
    id uuid PRIMARY KEY,
    user_id uuid NOT NULL,
    refresh_token_hash bytea NOT NULL,
    user_agent text,
    ip_address inet,
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz
);

CREATE TABLE auth.api_keys (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id uuid NOT NULL,
    name text NOT NULL,
    key_prefix text NOT NULL,
    key_hash bytea NOT NULL,
    scopes text[] NOT NULL,
    rate_limit integer,
    last_used_at timestamptz,
    expires_at timestamptz,
    created_at timestamptz NOT NULL
);

CREATE TABLE prompts.templates (
    id serial PRIMARY KEY,
    slug text NOT NULL,
    name text NOT NULL,
    technique text NOT NULL,
    body text NOT NULL,
    variables jsonb,
    tags text[],
    is_public boolean NOT NULL DEFAULT false,
    version integer NOT NULL DEFAULT nextval('prompts.template_version_seq'),
    created_by uuid,
    created_at timestamptz NOT NULL
);

CREATE TABLE prompts.history (
    id bigserial PRIMARY KEY,
    request_id uuid NOT NULL,
    user_id uuid,
    session_id uuid,
    template_id integer,
    original_input text NOT NULL,
    enhanced_output text,
    intent text,
    complexity text,
    techniques text[] NOT NULL,
    confidence real,
    processing_ms integer,
    token_usage jsonb,
    feedback_score smallint,
    client_ip inet,
    metadata jsonb,
    created_at timestamptz NOT NULL
);

CREATE TABLE prompts.ml_embeddings (
    id bigint PRIMARY KEY,
    history_id bigint NOT NULL,
    model text NOT NULL,
    embedding vector(768),
    norm double precision,
    created_at timestamptz NOT NULL
);

CREATE TABLE analytics.events (
    id bigserial PRIMARY KEY,
    user_id uuid,
    event_type text NOT NULL,
    properties jsonb,
    raw bytea,
    occurred_at timestamptz NOT NULL
);

CREATE TABLE analytics.daily_stats (
    day date NOT NULL,
    technique text NOT NULL,
    requests integer NOT NULL,
    unique_users integer NOT NULL,
    avg_latency_ms double precision,
    p95_latency_ms double precision,
    error_rate numeric(6, 5),
    extra jsonb,
    PRIMARY KEY (day, technique)
);
"""

POST_LOAD_SQL = """
ALTER TABLE auth.users ADD CONSTRAINT users_email_key UNIQUE (email);
ALTER TABLE auth.users ADD CONSTRAINT users_username_key UNIQUE (username);
ALTER TABLE auth.sessions ADD CONSTRAINT sessions_user_fk FOREIGN KEY (user_id) REFERENCES auth.users (id) ON DELETE CASCADE;
ALTER TABLE auth.api_keys ADD CONSTRAINT api_keys_user_fk FOREIGN KEY (user_id) REFERENCES auth.users (id) ON DELETE CASCADE;
ALTER TABLE prompts.templates ADD CONSTRAINT templates_slug_key UNIQUE (slug);
ALTER TABLE prompts.templates ADD CONSTRAINT templates_created_by_fk FOREIGN KEY (created_by) REFERENCES auth.users (id);
ALTER TABLE prompts.history ADD CONSTRAINT history_request_id_key UNIQUE (request_id);
ALTER TABLE prompts.history ADD CONSTRAINT history_user_fk FOREIGN KEY (user_id) REFERENCES auth.users (id) ON DELETE SET NULL;
ALTER TABLE prompts.history ADD CONSTRAINT history_session_fk FOREIGN KEY (session_id) REFERENCES auth.sessions (id) ON DELETE SET NULL;
ALTER TABLE prompts.history ADD CONSTRAINT history_template_fk FOREIGN KEY (template_id) REFERENCES prompts.templates (id);
ALTER TABLE prompts.ml_embeddings ADD CONSTRAINT ml_embeddings_history_fk FOREIGN KEY (history_id) REFERENCES prompts.history (id) ON DELETE CASCADE;
ALTER TABLE analytics.events ADD CONSTRAINT events_user_fk FOREIGN KEY (user_id) REFERENCES auth.users (id) ON DELETE SET NULL;
CREATE INDEX sessions_user_idx ON auth.sessions (user_id);
CREATE INDEX api_keys_user_idx ON auth.api_keys (user_id);
CREATE INDEX history_user_created_idx ON prompts.history (user_id, created_at DESC);
CREATE INDEX history_metadata_gin ON prompts.history USING gin (metadata jsonb_path_ops);
CREATE INDEX ml_embeddings_history_idx ON prompts.ml_embeddings (history_id);
CREATE INDEX ml_embeddings_ivfflat ON prompts.ml_embeddings USING ivfflat (embedding vector_cosine_ops) WITH (lists = 20);
CREATE INDEX events_type_time_idx ON analytics.events (event_type, occurred_at);
"""

# (schema, table, column list for COPY, psycopg type names for binary COPY)
TABLES: tuple[tuple[str, str, tuple[str, ...], tuple[str, ...]], ...] = (
    (
        "auth",
        "users",
        (
            "id",
            "email",
            "username",
            "password_hash",
            "first_name",
            "last_name",
            "roles",
            "tier",
            "is_active",
            "email_verified",
            "preferences",
            "last_login_ip",
            "last_login_at",
            "avatar",
            "created_at",
            "updated_at",
        ),
        (
            "uuid",
            "text",
            "text",
            "text",
            "text",
            "text",
            "text[]",
            "auth.user_tier",
            "bool",
            "bool",
            "jsonb",
            "inet",
            "timestamptz",
            "bytea",
            "timestamptz",
            "timestamptz",
        ),
    ),
    (
        "auth",
        "sessions",
        ("id", "user_id", "refresh_token_hash", "user_agent", "ip_address", "created_at", "expires_at", "revoked_at"),
        ("uuid", "uuid", "bytea", "text", "inet", "timestamptz", "timestamptz", "timestamptz"),
    ),
    (
        "auth",
        "api_keys",
        (
            "id",
            "user_id",
            "name",
            "key_prefix",
            "key_hash",
            "scopes",
            "rate_limit",
            "last_used_at",
            "expires_at",
            "created_at",
        ),
        ("int8", "uuid", "text", "text", "bytea", "text[]", "int4", "timestamptz", "timestamptz", "timestamptz"),
    ),
    (
        "prompts",
        "templates",
        (
            "id",
            "slug",
            "name",
            "technique",
            "body",
            "variables",
            "tags",
            "is_public",
            "version",
            "created_by",
            "created_at",
        ),
        ("int4", "text", "text", "text", "text", "jsonb", "text[]", "bool", "int4", "uuid", "timestamptz"),
    ),
    (
        "prompts",
        "history",
        (
            "id",
            "request_id",
            "user_id",
            "session_id",
            "template_id",
            "original_input",
            "enhanced_output",
            "intent",
            "complexity",
            "techniques",
            "confidence",
            "processing_ms",
            "token_usage",
            "feedback_score",
            "client_ip",
            "metadata",
            "created_at",
        ),
        (
            "int8",
            "uuid",
            "uuid",
            "uuid",
            "int4",
            "text",
            "text",
            "text",
            "text",
            "text[]",
            "float4",
            "int4",
            "jsonb",
            "int2",
            "inet",
            "jsonb",
            "timestamptz",
        ),
    ),
    (
        "prompts",
        "ml_embeddings",
        ("id", "history_id", "model", "embedding", "norm", "created_at"),
        ("int8", "int8", "text", "vector", "float8", "timestamptz"),
    ),
    (
        "analytics",
        "events",
        ("id", "user_id", "event_type", "properties", "raw", "occurred_at"),
        ("int8", "uuid", "text", "jsonb", "bytea", "timestamptz"),
    ),
    (
        "analytics",
        "daily_stats",
        (
            "day",
            "technique",
            "requests",
            "unique_users",
            "avg_latency_ms",
            "p95_latency_ms",
            "error_rate",
            "extra",
        ),
        ("date", "text", "int4", "int4", "float8", "float8", "numeric", "jsonb"),
    ),
)

# sequences set after the load: (sequence, table, column)
SEQUENCES = (
    ("auth.api_keys_id_seq", "auth.api_keys", "id"),
    ("prompts.templates_id_seq", "prompts.templates", "id"),
    ("prompts.history_id_seq", "prompts.history", "id"),
    ("analytics.events_id_seq", "analytics.events", "id"),
)

_WORDS = [
    "explain",
    "write",
    "summarize",
    "translate",
    "refactor",
    "analyze",
    "compare",
    "generate",
    "improve",
    "design",
    "classify",
    "list",
    "outline",
    "the",
    "a",
    "an",
    "of",
    "for",
    "with",
    "about",
    "into",
    "from",
    "using",
    "without",
    "between",
    "across",
    "step",
    "by",
    "careful",
    "concise",
    "detailed",
    "python",
    "golang",
    "sql",
    "kubernetes",
    "prompt",
    "model",
    "answer",
    "question",
    "essay",
    "story",
    "poem",
    "email",
    "report",
    "function",
    "test",
    "customer",
    "data",
    "pipeline",
    "latency",
    "budget",
    "migration",
    "database",
    "cache",
    "vector",
    "embedding",
    "token",
    "context",
    "example",
]
_SPICE = (
    "\t",
    "\n",
    "\\",
    "\\N",
    "\r\n",
    '"',
    "'",
    "é",
    "ü",
    "ß",
    "中文",
    "日本語",
    "🚀",
    "—",
    "…",
    "ℵ",
    "\u00a0",
    "{",
    "}",
    ",",
    "||",
    "%s",
    "$1",
)


@dataclass(frozen=True)
class Counts:
    users: int
    sessions: int
    api_keys: int
    templates: int
    history: int
    ml_embeddings: int
    events: int
    daily_stats_days: int

    def table_rows(self) -> dict[str, int]:
        return {
            "auth.users": self.users,
            "auth.sessions": self.sessions,
            "auth.api_keys": self.api_keys,
            "prompts.templates": self.templates,
            "prompts.history": self.history,
            "prompts.ml_embeddings": self.ml_embeddings,
            "analytics.events": self.events,
            "analytics.daily_stats": self.daily_stats_days * len(TECHNIQUES),
        }


def counts_for(scale: float) -> Counts:
    """Row counts for ``scale`` (1 = the default ~60 MB; fractions give tiny datasets for tests)."""
    if scale <= 0:
        raise ValueError("scale must be > 0")
    users = max(20, int(1000 * scale))
    return Counts(
        users=users,
        sessions=2 * users,
        api_keys=users // 2,
        templates=150,
        history=10 * users,
        ml_embeddings=3 * users,
        events=20 * users,
        daily_stats_days=365 + 30 * min(max(int(scale) - 1, 0), 20),
    )


def _rng(seed: int, name: str) -> random.Random:
    return random.Random(f"bpmigrate-sandbox:{seed}:{name}")


def _uuid(rng: random.Random) -> uuid.UUID:
    return uuid.UUID(int=rng.getrandbits(128), version=4)


def _ts(rng: random.Random, days: int = 700) -> datetime:
    return EPOCH + timedelta(seconds=rng.randrange(days * 86400), microseconds=rng.randrange(1_000_000))


@dataclass
class Corpus:
    """A deterministic ~256 KB text; long texts are slices of it (fast, and full of characters that bite)."""

    text: str

    @classmethod
    def build(cls, seed: int, size: int = 262_144) -> Corpus:
        rng = _rng(seed, "corpus")
        parts: list[str] = []
        total = 0
        while total < size:
            piece = rng.choice(_SPICE) if rng.random() < 0.06 else rng.choice(_WORDS)
            parts.append(piece)
            parts.append(" ")
            total += len(piece) + 1
        return cls("".join(parts))

    def slice(self, rng: random.Random, low: int, high: int) -> str:
        length = rng.randrange(low, high)
        if length >= len(self.text):
            return (self.text * (length // len(self.text) + 1))[:length]
        start = rng.randrange(len(self.text) - length)
        return self.text[start : start + length]


@dataclass
class Dataset:
    """Row generators for every table; the same (scale, seed) always yields the same rows."""

    scale: float = DEFAULT_SCALE
    seed: int = DEFAULT_SEED
    counts: Counts = field(init=False)
    corpus: Corpus = field(init=False)
    _user_ids: list[uuid.UUID] = field(init=False, default_factory=list)
    _session_ids: list[uuid.UUID] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self.counts = counts_for(self.scale)
        self.corpus = Corpus.build(self.seed)
        rng = _rng(self.seed, "ids")
        self._user_ids = [_uuid(rng) for _ in range(self.counts.users)]
        self._session_ids = [_uuid(rng) for _ in range(self.counts.sessions)]

    def rows(self, schema: str, table: str) -> Iterator[tuple[Any, ...]]:
        return getattr(self, f"_{schema}_{table}")()  # type: ignore[no-any-return]

    # -- auth ----------------------------------------------------------------------------------------------------
    def _auth_users(self) -> Iterator[tuple[Any, ...]]:
        rng = _rng(self.seed, "users")
        domains = ("example.com", "corp.io", "Mail.Example.ORG", "bp.dev", "xn--mnchen-3ya.de")
        first = ("Ana", "Bo", "Chen", "Dmitri", "Élodie", "Fatima", "Günter", "Hiro", "Ines", "José", "O'Brien", None)
        for i, uid in enumerate(self._user_ids):
            created = _ts(rng, 600)
            fname = rng.choice(first)
            roles = ["user"] + (["admin"] if i % 97 == 0 else []) + (["developer"] if i % 13 == 0 else [])
            prefs: dict[str, Any] = {
                "theme": rng.choice(("dark", "light", "system")),
                "default_techniques": rng.sample(TECHNIQUES, rng.randrange(0, 4)),
                "notifications": {"email": rng.random() < 0.5, "digest": rng.choice(("daily", "weekly", None))},
                "locale": rng.choice(("en-US", "de-DE", "ja-JP", "pt-BR")),
            }
            if i % 11 == 0:
                prefs["bio"] = self.corpus.slice(rng, 10, 200)
            yield (
                uid,
                f"user{i:07d}@{domains[i % len(domains)]}",
                f"user_{i:07d}",
                "$2a$10$" + hashlib.sha256(f"{self.seed}:{i}".encode()).hexdigest()[:53],
                fname,
                None if i % 7 == 0 else rng.choice(("Smith", "Müller", "Tanaka", "Silva", "Nguyen", "Kowalski")),
                roles,
                TIERS[rng.randrange(len(TIERS))],
                i % 50 != 0,
                None if i % 9 == 0 else rng.random() < 0.8,
                prefs,
                None if i % 5 == 0 else ipaddress.ip_address(rng.getrandbits(32)),
                None if i % 6 == 0 else created + timedelta(days=rng.randrange(1, 90)),
                None if i % 4 != 0 else rng.randbytes(rng.randrange(16, 512)),
                created,
                created + timedelta(seconds=rng.randrange(0, 10_000_000)),
            )

    def _auth_sessions(self) -> Iterator[tuple[Any, ...]]:
        rng = _rng(self.seed, "sessions")
        agents = (
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126.0",
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) Safari/605.1.15",
            "BetterPrompts-CLI/1.4 (+https://betterprompts.example.com)",
            'curl/8.5 "quoted" \\ agent',
        )
        for i, sid in enumerate(self._session_ids):
            created = _ts(rng)
            ip: Any = (
                ipaddress.ip_address(f"2001:db8::{rng.randrange(1, 0xFFFF):x}")
                if i % 10 == 0
                else ipaddress.ip_address(rng.getrandbits(32))
            )
            yield (
                sid,
                self._user_ids[rng.randrange(len(self._user_ids))],
                hashlib.sha256(sid.bytes).digest(),
                None if i % 8 == 0 else agents[i % len(agents)],
                ip,
                created,
                created + timedelta(days=7),
                None if i % 3 else created + timedelta(hours=rng.randrange(1, 100)),
            )

    def _auth_api_keys(self) -> Iterator[tuple[Any, ...]]:
        rng = _rng(self.seed, "api_keys")
        scopes = ("prompts:read", "prompts:write", "templates:read", "analytics:read", "admin")
        for i in range(self.counts.api_keys):
            created = _ts(rng)
            yield (
                i + 1,
                self._user_ids[rng.randrange(len(self._user_ids))],
                f"key {i} — {rng.choice(('ci', 'laptop', 'prod', 'zapier'))}",
                f"bp_{rng.getrandbits(32):08x}",
                rng.randbytes(32),
                rng.sample(scopes, rng.randrange(1, 4)),
                None if i % 4 == 0 else rng.choice((60, 600, 6000)),
                None if i % 3 == 0 else created + timedelta(days=rng.randrange(1, 200)),
                None if i % 2 == 0 else created + timedelta(days=365),
                created,
            )

    # -- prompts -------------------------------------------------------------------------------------------------
    def _prompts_templates(self) -> Iterator[tuple[Any, ...]]:
        rng = _rng(self.seed, "templates")
        for i in range(self.counts.templates):
            technique = TECHNIQUES[i % len(TECHNIQUES)]
            yield (
                i + 1,
                f"{technique.replace('_', '-')}-{i:04d}",
                f"{technique.replace('_', ' ').title()} #{i}",
                technique,
                "You are an expert.\n{{context}}\n\tTask: {{task}}\n" + self.corpus.slice(rng, 100, 3000),
                None if i % 10 == 0 else {"task": {"type": "string", "required": True}, "context": {"max": 4000}},
                None if i % 6 == 0 else rng.sample(("beginner", "advanced", "code", "writing", "math", "日本"), 2),
                i % 3 != 0,
                1000 + i,
                None if i % 5 == 0 else self._user_ids[rng.randrange(len(self._user_ids))],
                _ts(rng),
            )

    def _prompts_history(self) -> Iterator[tuple[Any, ...]]:
        rng = _rng(self.seed, "history")
        nusers, nsessions, ntemplates = len(self._user_ids), len(self._session_ids), self.counts.templates
        for i in range(self.counts.history):
            huge = i % 997 == 0
            out_len = (150_000, 300_000) if huge else (200, 6000)
            input_tokens = rng.randrange(10, 800)
            yield (
                i + 1,
                _uuid(rng),
                None if i % 40 == 0 else self._user_ids[rng.randrange(nusers)],
                None if i % 3 == 0 else self._session_ids[rng.randrange(nsessions)],
                None if i % 4 == 0 else rng.randrange(1, ntemplates + 1),
                self.corpus.slice(rng, 20, 2000),
                None if i % 25 == 0 else self.corpus.slice(rng, *out_len),
                INTENTS[rng.randrange(len(INTENTS))],
                rng.choice(("simple", "moderate", "complex")),
                rng.sample(TECHNIQUES, rng.randrange(1, 4)),
                None if i % 17 == 0 else round(rng.random(), 4),
                rng.randrange(30, 5000),
                {"input": input_tokens, "output": input_tokens * 3, "model": "gpt-4o-mini", "cached": i % 2 == 0},
                None if i % 5 else rng.randrange(1, 6),
                None if i % 7 == 0 else ipaddress.ip_address(rng.getrandbits(32)),
                None if i % 9 == 0 else {"source": rng.choice(("web", "api", "cli")), "ab": {"bucket": i % 4}},
                _ts(rng),
            )

    def _prompts_ml_embeddings(self) -> Iterator[tuple[Any, ...]]:
        rng = _rng(self.seed, "embeddings")
        pool = [encode_vector([rng.uniform(-1.0, 1.0) for _ in range(EMBEDDING_DIM)]) for _ in range(64)]
        head = struct.Struct(">4f")
        nhistory = self.counts.history
        for i in range(self.counts.ml_embeddings):
            base = pool[rng.randrange(len(pool))]
            first = head.pack(rng.uniform(-1, 1), rng.uniform(-1, 1), rng.uniform(-1, 1), rng.uniform(-1, 1))
            vec = None if i % 50 == 0 else VectorBytes(base[:4] + first + base[20:])
            yield (
                i + 1,
                1 + (i * 7919) % nhistory,
                rng.choice(("intent-classifier-v3", "all-MiniLM-L6-v2@768", "bge-base-en")),
                vec,
                None if vec is None else round(rng.uniform(0.5, 30.0), 6),
                _ts(rng),
            )

    # -- analytics -----------------------------------------------------------------------------------------------
    def _analytics_events(self) -> Iterator[tuple[Any, ...]]:
        rng = _rng(self.seed, "events")
        types = ("prompt.enhanced", "prompt.copied", "template.used", "feedback.given", "login", "api.call")
        nusers = len(self._user_ids)
        for i in range(self.counts.events):
            kind = types[rng.randrange(len(types))]
            yield (
                i + 1,
                None if i % 12 == 0 else self._user_ids[rng.randrange(nusers)],
                kind,
                None if i % 10 == 0 else {"k": kind, "n": i, "path": "/api/v1/enhance", "note": 'tab\there \\ "q"'},
                None if i % 3 else rng.randbytes(rng.randrange(1, 64)),
                _ts(rng),
            )

    def _analytics_daily_stats(self) -> Iterator[tuple[Any, ...]]:
        rng = _rng(self.seed, "daily_stats")
        start = date(2024, 1, 1)
        for d in range(self.counts.daily_stats_days):
            day = start + timedelta(days=d)
            for technique in TECHNIQUES:
                requests = rng.randrange(0, 50_000)
                avg = rng.uniform(40, 900)
                yield (
                    day,
                    technique,
                    requests,
                    min(requests, rng.randrange(0, 5000)),
                    None if requests == 0 else avg,
                    None if requests == 0 else avg * rng.uniform(1.5, 4.0),
                    Decimal(rng.randrange(0, 99999)) / Decimal(100000),
                    None if d % 30 else {"week": d // 7, "notes": ["launch" if d == 0 else "steady"]},
                )


class VectorBytes(bytes):
    """A pgvector value already in its binary wire format (see :func:`encode_vector`)."""


def encode_vector(values: list[float]) -> VectorBytes:
    """pgvector binary format: int16 dimensions, int16 unused, then big-endian float4 values."""
    return VectorBytes(struct.pack(f">hh{len(values)}f", len(values), 0, *values))


def decode_vector(raw: bytes) -> list[float]:
    dim = struct.unpack_from(">h", raw)[0]
    return list(struct.unpack_from(f">{dim}f", raw, 4))


# ---------------------------------------------------------------------------------------------------------------
# Redis
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RedisKey:
    db: int
    key: bytes
    kind: str  # string | hash | list | set | zset | stream
    value: Any  # bytes | dict[bytes, bytes] | list[bytes] | set[bytes] | dict[bytes, float] | list[(id, dict)]
    ttl_ms: int | None = None


REDIS_DBS = {0: "cache", 1: "sessions", 2: "rate limits"}
DEFAULT_REDIS_KEYS = 5000


def redis_keys(total: int = DEFAULT_REDIS_KEYS, seed: int = DEFAULT_SEED) -> Iterator[RedisKey]:
    """``total`` keys spread over DBs 0–2 with every Redis type; ~30% carry a TTL (hours, so tests never race it)."""
    rng = _rng(seed, "redis")
    corpus = Corpus.build(seed, 65_536)
    for i in range(total):
        slot = i % 10
        ttl = rng.randrange(3_600_000, 86_400_000) if rng.random() < 0.3 else None
        if slot in (0, 1, 2):  # DB 0 cache: JSON strings, hashes, lists, a stream
            if slot == 0:
                payload = {"enhanced": corpus.slice(rng, 20, 800), "techniques": rng.sample(TECHNIQUES, 2), "i": i}
                yield RedisKey(
                    0, f"cache:enhance:{rng.getrandbits(64):016x}".encode(), "string", json.dumps(payload).encode(), ttl
                )
            elif slot == 1:
                fields = {f"f{j}".encode(): corpus.slice(rng, 1, 60).encode() for j in range(rng.randrange(1, 12))}
                yield RedisKey(0, f"cache:technique:{i}".encode(), "hash", fields, ttl)
            elif i % 100 == 2:
                entries = [
                    (f"{1_700_000_000_000 + i * 1000 + j}-0".encode(), {b"event": b"enhance", b"n": str(j).encode()})
                    for j in range(rng.randrange(1, 30))
                ]
                yield RedisKey(0, f"stream:prompt_events:{i}".encode(), "stream", entries, None)
            else:
                items = [corpus.slice(rng, 1, 120).encode() for _ in range(rng.randrange(1, 20))]
                yield RedisKey(0, f"cache:recent:{i}".encode(), "list", items, ttl)
        elif slot in (3, 4, 5, 6):  # DB 1 sessions: hashes with TTLs, sets, binary strings
            if slot in (3, 4):
                sess = {
                    b"user_id": str(_uuid(rng)).encode(),
                    b"created": str(1_700_000_000 + rng.randrange(10**7)).encode(),
                    b"ua": "Mozilla/5.0 ✓".encode(),
                    b"blob": rng.randbytes(16),
                }
                yield RedisKey(1, f"session:{_uuid(rng)}".encode(), "hash", sess, rng.randrange(3_600_000, 604_800_000))
            elif slot == 5:
                members = {str(_uuid(rng)).encode() for _ in range(rng.randrange(1, 8))}
                yield RedisKey(1, f"user_sessions:{i}".encode(), "set", members, ttl)
            else:
                yield RedisKey(
                    1, b"csrf:" + rng.randbytes(12).hex().encode(), "string", rng.randbytes(32), 3_600_000 + i
                )
        else:  # DB 2 rate limits: counters with TTLs, sliding-window zsets, sets of blocked IPs
            if slot in (7, 8):
                yield RedisKey(
                    2,
                    f"ratelimit:{i}:{rng.randrange(10**6)}".encode(),
                    "string",
                    str(rng.randrange(1, 600)).encode(),
                    60_000 * 60 + i,
                )
            elif i % 20 == 9:
                members = {
                    f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}".encode() for _ in range(5)
                }
                yield RedisKey(2, f"blocked_ips:{i}".encode(), "set", members, None)
            else:
                zs = {
                    f"req:{rng.getrandbits(40):010x}".encode(): float(1_700_000_000 + rng.randrange(10**6))
                    for _ in range(rng.randrange(1, 25))
                }
                yield RedisKey(2, f"ratelimit:sw:{i}".encode(), "zset", zs, ttl)
