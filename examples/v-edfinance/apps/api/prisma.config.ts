// Prisma 7 config: the CLI (migrate deploy/status, generate) reads the database URL from here.
// process.env, not prisma's env(): `prisma generate` runs in the image build, where there is no
// database; migrate commands stop with "datasource.url is required" when DATABASE_URL is unset.
import { defineConfig } from 'prisma/config';

export default defineConfig({
  schema: 'prisma/schema.prisma',
  migrations: { path: 'prisma/migrations' },
  datasource: { url: process.env.DATABASE_URL },
});
