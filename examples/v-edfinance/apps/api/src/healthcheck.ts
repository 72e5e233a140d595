// The container's health probe without curl or wget (the slim Node image has neither):
//   healthcheck: test: ["CMD", "node", "dist/healthcheck.js"]
// Exit 0 when GET /api/health answers 200 within HEALTHCHECK_TIMEOUT_MS.
const port = process.env.PORT ?? '3000';
const path = process.env.HEALTHCHECK_PATH ?? '/api/health';
const timeout = Number(process.env.HEALTHCHECK_TIMEOUT_MS ?? 3_000);

try {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, {
    signal: AbortSignal.timeout(timeout),
  });
  if (!res.ok) console.log(`health: HTTP ${res.status} ${await res.text()}`);
  process.exit(res.ok ? 0 : 1);
} catch (error) {
  console.log(`health: ${(error as Error).message}`);
  process.exit(1);
}
