import {
  BeforeApplicationShutdown, Injectable, OnApplicationBootstrap,
} from '@nestjs/common';
import { HttpAdapterHost } from '@nestjs/core';
import type { Server, ServerResponse } from 'node:http';

/**
 * A graceful stop for keep-alive clients (a reverse proxy keeps its connections to the app
 * open). On SIGTERM Nest closes the listener (server.close) and waits for in-flight requests,
 * and Node closes the connections idle at that moment, but a connection busy at that moment
 * stays open after its response and keeps carrying the proxy's requests until its keep-alive
 * timeout: the process would not exit until the stop grace period kills it. Here, once the stop
 * begins, every response (those in flight included) says `Connection: close`, so each
 * connection closes after its last answer and the process exits when the last one is sent.
 *
 * SHUTDOWN_DELAY_MS (default 0): keep serving that long after SIGTERM before closing the
 * listener, for a load balancer that still routes to the task for a moment after the stop.
 */
@Injectable()
export class HttpDrain implements OnApplicationBootstrap, BeforeApplicationShutdown {
  private readonly inFlight = new Set<ServerResponse>();
  private draining = false;

  constructor(private readonly adapterHost: HttpAdapterHost) {}

  onApplicationBootstrap(): void {
    const server = this.adapterHost.httpAdapter.getHttpServer() as Server;
    server.on('request', (_req, res: ServerResponse) => {
      if (this.draining) {
        if (!res.headersSent) res.setHeader('Connection', 'close');
        return;
      }
      this.inFlight.add(res);
      res.once('close', () => this.inFlight.delete(res));
    });
  }

  async beforeApplicationShutdown(): Promise<void> {
    this.draining = true;
    for (const res of this.inFlight) {
      if (!res.headersSent) res.setHeader('Connection', 'close');
    }
    const delay = Number(process.env.SHUTDOWN_DELAY_MS ?? 0);
    if (delay > 0) await new Promise((resolve) => setTimeout(resolve, delay));
  }
}
