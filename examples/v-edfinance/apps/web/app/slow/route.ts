// GET /slow?ms=500: answers after `ms` milliseconds (at most 30000). A request held in flight,
// to measure what a stopping server does with it (SIGTERM during a deploy). Only with
// ENABLE_TEST_ENDPOINTS=1 (the sandbox): elsewhere anyone could hold the server's requests.
export const dynamic = 'force-dynamic';

export async function GET(request: Request): Promise<Response> {
  if (process.env.ENABLE_TEST_ENDPOINTS !== '1') return new Response('Not Found\n', { status: 404 });
  const asked = Number(new URL(request.url).searchParams.get('ms') ?? '500');
  const ms = Number.isFinite(asked) ? Math.min(Math.max(asked, 0), 30000) : 500;
  await new Promise((resolve) => setTimeout(resolve, ms));
  return new Response(`slow ${ms} web ${process.env.APP_VERSION ?? 'dev'}\n`, {
    headers: { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store' },
  });
}
