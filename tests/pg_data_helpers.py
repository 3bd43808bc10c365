"""Shared helpers of the PostgreSQL data tests: adapters on fresh databases and a schema with types that bite."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from migrate.adapters.postgres import PostgresAdapter

SCHEMA = r"""
CREATE EXTENSION IF NOT EXISTS vector;
CREATE SCHEMA app;
CREATE TYPE app.mood AS ENUM ('calm', 'angry');
CREATE TABLE public.users (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email text NOT NULL UNIQUE,
    profile jsonb,
    tags text[],
    ip inet,
    created_at timestamptz NOT NULL DEFAULT '2024-01-01 00:00:00+00',
    avatar bytea,
    note text,
    mood app.mood,
    email_domain text GENERATED ALWAYS AS (split_part(email, '@', 2)) STORED
);
CREATE TABLE public.prompts (
    id uuid PRIMARY KEY,
    user_id bigint NOT NULL REFERENCES public.users (id),
    body text,
    scores float8[],
    embedding vector(768)
);
CREATE INDEX prompts_user_idx ON public.prompts (user_id);
CREATE TABLE app.events (
    id serial PRIMARY KEY,
    prompt_id uuid REFERENCES public.prompts (id),
    payload jsonb,
    at timestamptz
);
CREATE TABLE public.nokey (a int, b text);
CREATE FUNCTION app.touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.at := now(); RETURN NEW; END $$;
CREATE TRIGGER events_touch BEFORE INSERT ON app.events FOR EACH ROW WHEN (NEW.at IS NULL) EXECUTE FUNCTION app.touch();
CREATE SEQUENCE public.standalone_seq START 100;
"""


def seed_sql(users: int = 300, prompts: int = 600, events: int = 900) -> str:
    return rf"""
INSERT INTO public.users (email, profile, tags, ip, created_at, avatar, note, mood)
SELECT 'user' || g || '@' || (CASE WHEN g % 2 = 0 THEN 'example.com' ELSE 'corp.io' END),
       CASE WHEN g % 7 = 0 THEN NULL ELSE jsonb_build_object('n', g, 'nested', jsonb_build_array(g, 'x', NULL)) END,
       CASE WHEN g % 5 = 0 THEN NULL ELSE ARRAY['a' || g, E'quote"and\\back', NULL] END,
       ('10.0.' || (g % 256) || '.' || (g % 200))::inet,
       '2024-01-01 00:00:00+00'::timestamptz + g * interval '37 minutes 3.123456 seconds',
       CASE WHEN g % 3 = 0 THEN NULL ELSE decode(md5(g::text), 'hex') || '\x00ff'::bytea END,
       CASE WHEN g % 4 = 0 THEN NULL ELSE E'tab\there\nnew line\\backslash ' || g || E' \r end' END,
       CASE WHEN g % 2 = 0 THEN 'calm'::app.mood ELSE 'angry' END
FROM generate_series(1, {users}) g;
INSERT INTO public.prompts (id, user_id, body, scores, embedding)
SELECT md5('p' || g)::uuid, 1 + (g % {users}), 'prompt ' || g || E'\t\\N not null',
       ARRAY[g * 0.1, -1e-300, 'NaN'::float8, 'Infinity'],
       CASE WHEN g % 11 = 0 THEN NULL ELSE
         (SELECT array_agg(sin(g * 0.37 + i * 0.11)::float4 ORDER BY i) FROM generate_series(1, 768) i)::vector END
FROM generate_series(1, {prompts}) g;
INSERT INTO app.events (prompt_id, payload, at)
SELECT md5('p' || (1 + g % {prompts}))::uuid, jsonb_build_object('k', g, 's', E'a\tb'),
       CASE WHEN g % 2 = 0 THEN '2024-02-01 00:00:00+00'::timestamptz + g * interval '1 second' END
FROM generate_series(1, {events}) g;
INSERT INTO public.nokey SELECT g, CASE WHEN g % 3 = 0 THEN NULL ELSE 'row ' || g END FROM generate_series(1, 50) g;
SELECT setval('public.standalone_seq', 4242);
"""


def adapter(server: Any, dsn: str, role: str) -> PostgresAdapter:
    dbname = dsn.rsplit("/", 1)[1]
    return PostgresAdapter(
        role=role,
        host=server.host,
        port=server.port,
        dbname=dbname,
        user=server.user,
        password=None,
        sslmode=None,
        bin_dir=str(server.bin_dir),
    )


def make_pair(
    pg_source: Any, pg_target: Any, fresh_pg_db: Callable[[Any], str], *, seed: bool = True, **sizes: int
) -> tuple[PostgresAdapter, PostgresAdapter]:
    src = adapter(pg_source, fresh_pg_db(pg_source), "source")
    dst = adapter(pg_target, fresh_pg_db(pg_target), "target")
    if seed:
        with src.session() as conn:
            conn.execute(SCHEMA)  # type: ignore[arg-type]
            conn.execute(seed_sql(**sizes))  # type: ignore[arg-type]
            conn.execute("ANALYZE")
    return src, dst


def table_text(db: PostgresAdapter, rel: str, order: str = "1") -> list[str]:
    return [str(r[0]) for r in db.query(f"SELECT t::text FROM {rel} t ORDER BY {order}")]


TABLES = {
    "public.users": "id",
    "public.prompts": "id",
    "app.events": "id",
    "public.nokey": "a",
}
