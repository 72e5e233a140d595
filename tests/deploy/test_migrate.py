"""What a failed Prisma migration tells the operator: its own words, then the way on."""

from __future__ import annotations

from vedfin_ops.deploy.migrate import prisma_hint

# `npx prisma migrate deploy` (7.9.1) as the sandbox's real api printed them
P3018 = """Loaded Prisma config from prisma.config.ts.

Prisma schema loaded from prisma/schema.prisma.
Datasource "db": PostgreSQL database "vedfinance_prod", schema "public" at "postgres:5432"

3 migrations found in prisma/migrations

Error: P3018

A migration failed to apply. New migrations cannot be applied before the error is recovered from. Read more about how to resolve migration issues in a production database: https://pris.ly/d/migrate-resolve

Migration name: 20261208000000_lesson_duration_index

Database error code: 42701

Database error:
ERROR: column "duration_minutes" of relation "lessons" already exists
""".splitlines()  # noqa: E501 - Prisma's own line

P3009 = """3 migrations found in prisma/migrations

Error: P3009

migrate found failed migrations in the target database, new migrations will not be applied. Read more about how to resolve migration issues in a production database: https://pris.ly/d/migrate-resolve
The `20261208000000_lesson_duration_index` migration started at 2026-12-07 03:40:18.089 UTC failed
""".splitlines()  # noqa: E501 - Prisma's own line


def test_a_failed_prisma_migration_names_the_resolve_that_unblocks_the_next_deploy() -> None:
    for output in (P3018, P3009):
        hint = prisma_hint(output)
        assert hint is not None
        assert ("npx prisma migrate resolve --rolled-back 20261208000000_lesson_duration_index"
                in hint), hint


def test_other_migration_failures_get_no_prisma_hint() -> None:
    assert prisma_hint(["migration 20251223_add_vectors failed: column already exists"]) is None
    assert prisma_hint([]) is None
    assert prisma_hint(["Error: P1001", "Can't reach database server at `postgres:5432`"]) is None


def test_a_migration_name_from_the_app_s_output_is_used_only_when_it_is_one() -> None:
    """The name is outside text: a line that merely starts like Prisma's, or a name with
    spaces, quotes or escape sequences, gives the placeholder, never a command to paste."""
    before = ["The `url` property is deprecated", "Error: P3009",
              "The `20261208000000_ok` migration started at 2026-12-07 03:40:18.089 UTC failed"]
    hint = prisma_hint(before)
    assert hint is not None and "--rolled-back 20261208000000_ok`" in hint, hint
    for hostile in ("x; rm -rf /", "a`b", "\x1b[31mred", "$(id)", ""):
        hint = prisma_hint(["Error: P3018", f"Migration name: {hostile}"])
        assert hint is not None and "--rolled-back NAME`" in hint, (hostile, hint)
