'use client';

import { useEffect, useState } from 'react';

type Status =
  | { state: 'checking' }
  | { state: 'ok'; body: string; ms: number }
  | { state: 'down'; reason: string };

// Inlined by `next build` (NEXT_PUBLIC_*): fixed when the image is built.
const API_URL = process.env.NEXT_PUBLIC_API_URL ?? '';

/**
 * Calls the API's health endpoint from the browser (the runbook's Step 6: DevTools → Network
 * shows the call to the API's origin). The page itself renders whether or not the API is up.
 */
export default function ApiStatus() {
  const [status, setStatus] = useState<Status>({ state: 'checking' });
  const url = `${API_URL}/api/health`;

  useEffect(() => {
    const controller = new AbortController();
    const started = performance.now();
    fetch(url, { signal: controller.signal, cache: 'no-store' })
      .then(async (response) => {
        const body = await response.text();
        const ms = Math.round(performance.now() - started);
        setStatus(
          response.ok
            ? { state: 'ok', body, ms }
            : { state: 'down', reason: `HTTP ${response.status}: ${body.slice(0, 200)}` },
        );
      })
      .catch((reason: unknown) => {
        if (!controller.signal.aborted) {
          setStatus({ state: 'down', reason: String(reason) });
        }
      });
    return () => controller.abort();
  }, [url]);

  return (
    <section aria-live="polite">
      <h2>API</h2>
      <p>
        <code>GET {url}</code>
      </p>
      {status.state === 'checking' && <p id="api-status">checking…</p>}
      {status.state === 'ok' && (
        <p id="api-status" className="ok">
          reachable ({status.ms} ms): <code>{status.body}</code>
        </p>
      )}
      {status.state === 'down' && (
        <p id="api-status" className="down">
          unreachable: {status.reason}
        </p>
      )}
    </section>
  );
}
