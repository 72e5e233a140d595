import { Injectable, OnApplicationShutdown } from '@nestjs/common';
import { PrismaPg } from '@prisma/adapter-pg';
import { PrismaClient } from './generated/prisma/client.js';

@Injectable()
export class PrismaService extends PrismaClient implements OnApplicationShutdown {
  constructor() {
    super({
      adapter: new PrismaPg({
        connectionString: process.env.DATABASE_URL,
        // per replica: (replicas + 1 during a rolling update) x this stays under
        // PostgreSQL's max_connections (20 in the runbook, shared by every env)
        max: Number(process.env.DATABASE_POOL_SIZE ?? 4),
        connectionTimeoutMillis: 5_000,
      }),
    });
  }

  // Not onModuleDestroy: Nest runs that hook BEFORE it closes the HTTP server, so requests
  // still in flight at SIGTERM would lose the database. onApplicationShutdown runs after the
  // server has closed and every in-flight request has answered.
  async onApplicationShutdown(): Promise<void> {
    await this.$disconnect();
  }
}
