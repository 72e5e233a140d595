import ApiStatus from './api-status';

// Rendered on the server for each request (SSR), as the runbook's sizes assume: the version is
// the running image's (APP_VERSION, set at run time), not the one at build time.
export const dynamic = 'force-dynamic';

export default function Home() {
  const version = process.env.APP_VERSION ?? 'dev';
  return (
    <main>
      <h1>V-EdFinance</h1>
      <p>Financial education for everyone.</p>
      <p id="whats-new">New: lessons can be searched by topic.</p>
      <p>
        Version: <code id="version">{version}</code>
      </p>
      <ApiStatus />
    </main>
  );
}
