import { Controller, Get, Header, NotFoundException, Query, Res } from '@nestjs/common';
import type { Response } from 'express';
import { PrismaService } from './prisma.service.js';
import { RedisService } from './redis.service.js';
import { within } from './timeout.js';

// Prisma's message is several lines ending in "... Message: `<the driver's words>`"
function reason(error: unknown): string {
  const lines = String((error as Error)?.message ?? error).split('\n').filter((l) => l.trim());
  const last = lines.at(-1) ?? 'unknown error';
  return /Message: `(.*)`$/.exec(last)?.[1] ?? last.trim();
}

const CHECK_MS = Number(process.env.HEALTH_CHECK_TIMEOUT_MS ?? 1_000);

@Controller()
export class HealthController {
  constructor(
    private readonly prisma: PrismaService,
    private readonly redis: RedisService,
  ) {}

  private async database(): Promise<void> {
    await within(CHECK_MS, this.prisma.$queryRaw`SELECT 1`, 'database');
  }

  private async cache(): Promise<void> {
    const pong = await within(CHECK_MS, this.redis.client.ping(), 'redis');
    if (pong !== 'PONG') throw new Error(`redis answered ${pong}`);
  }

  @Get('health')
  async health(@Res({ passthrough: true }) res: Response) {
    const [db, redis] = await Promise.allSettled([this.database(), this.cache()]);
    const body = {
      status: db.status === 'fulfilled' && redis.status === 'fulfilled' ? 'ok' : 'error',
      database: db.status === 'fulfilled' ? 'connected' : 'disconnected',
      redis: redis.status === 'fulfilled' ? 'connected' : 'disconnected',
    };
    res.status(body.status === 'ok' ? 200 : 503);
    return body;
  }

  @Get('auth/health')
  authHealth() {
    return { status: 'ok' };
  }

  @Get('debug/diagnostics/db-health')
  @Header('Content-Type', 'text/plain; charset=utf-8')
  async dbHealth(@Res({ passthrough: true }) res: Response): Promise<string> {
    try {
      await this.database();
      return 'Connection successful';
    } catch (error) {
      res.status(503);
      return `Connection failed: ${reason(error)}`;
    }
  }

  @Get('version')
  version() {
    return { app: 'api', version: process.env.APP_VERSION ?? 'dev' };
  }

  // For shutdown tests: a request that is still in flight when SIGTERM arrives; `db=1` holds a
  // database connection for that long (pg_sleep) instead of a timer. Only with
  // ENABLE_TEST_ENDPOINTS=1 (the sandbox): in production anyone could hold the pool.
  @Get('debug/slow')
  async slow(@Query('ms') ms?: string, @Query('db') db?: string) {
    if (process.env.ENABLE_TEST_ENDPOINTS !== '1') throw new NotFoundException();
    const wait = Math.min(Math.max(Number(ms) || 500, 0), 30_000);
    if (db === '1') await this.prisma.$queryRaw`SELECT 1 AS done FROM pg_sleep(${wait / 1000})`;
    else await new Promise((resolve) => setTimeout(resolve, wait));
    return { slept: wait, db: db === '1' };
  }
}
