-- badmigration: written on a branch that did not have v2's column yet. PostgreSQL refuses it
-- (42701 duplicate_column), so `prisma migrate deploy` exits 1 with P3018; the migration runs
-- as one transaction, so the index is not created either and the database stays as v2 left it.
ALTER TABLE "lessons" ADD COLUMN "duration_minutes" INTEGER NOT NULL DEFAULT 0;
CREATE INDEX "lessons_duration_minutes_idx" ON "lessons"("duration_minutes");
