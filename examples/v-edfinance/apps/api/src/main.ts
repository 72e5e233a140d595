import 'reflect-metadata';
import { ConsoleLogger } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import type { NestExpressApplication } from '@nestjs/platform-express';
import type { Server } from 'node:http';
import { AppModule } from './app.module.js';

// CORS_ORIGINS="https://app.example.com,https://www.example.com": those origins, with
// credentials (cookies). Unset: any origin, but never with credentials, so a foreign page can
// read public answers only.
const corsOrigins = (process.env.CORS_ORIGINS ?? '').split(',').map((o) => o.trim())
  .filter(Boolean);

async function bootstrap(): Promise<void> {
  const app = await NestFactory.create<NestExpressApplication>(AppModule, {
    // warnings and errors only: one line per start (below), no per-route chatter; no colour
    // codes in the container's log
    logger: new ConsoleLogger({ logLevels: ['error', 'warn'], colors: false }),
  });
  app.disable('x-powered-by');
  app.setGlobalPrefix('api');
  app.enableCors(corsOrigins.length > 0 ? { origin: corsOrigins, credentials: true }
    : { origin: true, credentials: false });
  // SIGTERM/SIGINT: Nest stops accepting connections, lets in-flight requests finish
  // (server.close; Node closes idle keep-alive connections), then runs the shutdown hooks
  app.enableShutdownHooks();

  const server = app.getHttpServer() as Server;
  // Keep-alive longer than the reverse proxy's idle timeout (Caddy's default is 2 min), so the
  // app never closes a connection the proxy is about to reuse (a 502 under load).
  server.keepAliveTimeout = Number(process.env.HTTP_KEEPALIVE_TIMEOUT_MS ?? 125_000);
  server.headersTimeout = server.keepAliveTimeout + 1_000;

  const port = Number(process.env.PORT ?? 3000);
  await app.listen(port, '0.0.0.0');
  console.log(`api ${process.env.APP_VERSION ?? 'dev'} listening on ${port}`);
}

bootstrap().catch((error: unknown) => {
  console.error('api failed to start:', error);
  process.exit(1);
});
