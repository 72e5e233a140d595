-- dropcolumn: users.name is gone (the code of this release no longer reads it). Destructive:
-- the data is lost, and a rollback of the code alone brings back a release that selects the
-- column; `rollback --restore-db` restores the backup taken before this migration.
-- AlterTable
ALTER TABLE "users" DROP COLUMN "name";
