-- v2: lessons say how long they take. Additive (a default, no rewrite of existing rows beyond
-- the catalog on PostgreSQL 11+): v1 keeps working against this schema during the rollout.
-- AlterTable
ALTER TABLE "lessons" ADD COLUMN "duration_minutes" INTEGER NOT NULL DEFAULT 0;
