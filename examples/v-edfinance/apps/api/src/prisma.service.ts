import { Injectable, OnApplicationShutdown } from '@nestjs/common';
import { PrismaPg } from '@prisma/adapter-pg';
import { PrismaClient } from './generated/prisma/client.js';

@Injectable()
export class PrismaService extends PrismaClient implements OnApplicationShutdown {
  constructor() {
    super({
      adapter: new PrismaPg({
        connectionString: process.env.DATABASE_URL,
        max: Number(process.env.DATABASE_POOL_SIZE ?? 10),
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
