import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PHASE_PRODUCTION_BUILD } from 'next/constants.js';

// This app is its own root (its own lock file): standalone output puts server.js at the top of
// .next/standalone whatever lock files lie in the folders above.
const root = dirname(fileURLToPath(import.meta.url));

/**
 * V-EdFinance web.
 *
 * `output: 'standalone'` makes `next build` write .next/standalone: a server.js and only the
 * node_modules files it needs, which is all the runtime image copies (with .next/static and
 * public/).
 *
 * NEXT_PUBLIC_API_URL is inlined into the browser bundle by `next build`: an image serves the
 * API origin it was built with, whatever its environment says at run time. A production build
 * without it would ship a page calling "undefined/api/health", so it stops here.
 *
 * @param {string} phase
 * @returns {import('next').NextConfig}
 */
export default function config(phase) {
  if (phase === PHASE_PRODUCTION_BUILD && !process.env.NEXT_PUBLIC_API_URL) {
    throw new Error(
      'NEXT_PUBLIC_API_URL is not set: next build inlines it into the browser bundle, ' +
        'so set it for the build (docker build --build-arg NEXT_PUBLIC_API_URL=https://api.example.com)',
    );
  }
  return {
    output: 'standalone',
    outputFileTracingRoot: root,
    turbopack: { root },
    reactStrictMode: true,
    poweredByHeader: false,
  };
}
