// GET /version: `web <APP_VERSION>` as text, read at request time so that a test can tell which
// release answered.
export const dynamic = 'force-dynamic';

export function GET(): Response {
  return new Response(`web ${process.env.APP_VERSION ?? 'dev'}\n`, {
    headers: { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store' },
  });
}
