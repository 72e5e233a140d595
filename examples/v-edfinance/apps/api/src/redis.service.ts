import { Injectable, Logger, OnApplicationShutdown, OnModuleInit } from '@nestjs/common';
import { Redis } from 'ioredis';
import { within } from './timeout.js';

@Injectable()
export class RedisService implements OnModuleInit, OnApplicationShutdown {
  private readonly logger = new Logger('Redis');
  private down = false;
  readonly client = new Redis(process.env.REDIS_URL ?? 'redis://localhost:6379', {
    lazyConnect: true,
    // fail commands at once while disconnected instead of queueing them: the health check
    // must answer "disconnected", not wait for a reconnect
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    connectTimeout: 2_000,
    retryStrategy: (times) => Math.min(times * 200, 2_000),
  });

  constructor() {
    // one line per outage, not one per retry
    this.client.on('error', (error: Error) => {
      if (!this.down) this.logger.warn(`connection lost: ${error.message}`);
      this.down = true;
    });
    this.client.on('ready', () => {
      if (this.down) this.logger.log('connection restored');
      this.down = false;
    });
  }

  async onModuleInit(): Promise<void> {
    // start without Redis if it is not there or does not answer (health says so); ioredis
    // keeps retrying
    await within(2_000, this.client.connect(), 'redis').catch(() => undefined);
  }

  async onApplicationShutdown(): Promise<void> {
    await this.client.quit().catch(() => this.client.disconnect());
  }
}
