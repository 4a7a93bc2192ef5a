// chromium.mjs - Debian's chromium, headless, driven by playwright-core
// (never a browser download: `npx playwright install` is not used).

import fs from 'node:fs';
import { chromium } from 'playwright-core';

export const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--no-first-run',
  '--disable-component-update',
  '--disable-sync',
];

export function chromiumPath() {
  const cands = [process.env.TAILGATE_CHROMIUM, '/usr/bin/chromium', '/usr/bin/chromium-browser'].filter(Boolean);
  for (const p of cands) if (fs.existsSync(p)) return p;
  throw new Error('chromium not found: apt-get install -y chromium (or set TAILGATE_CHROMIUM)');
}

/**
 * Launch Chromium.  playwright's launch() gives every run a fresh temporary
 * profile (user-data-dir), removed on close; each page gets its own context.
 * bfcache: true leaves the back/forward cache on (playwright turns it off).
 * Returns {browser, newPage(opts), close()}.
 * newPage opts: {viewport, mobile} -> a page in its own context, with the
 * page's console errors and uncaught exceptions collected in page.errors.
 */
export async function launch({ bfcache = false } = {}) {
  // playwright turns the back/forward cache off; bfcache: true keeps it on.
  const browser = await chromium.launch({
    executablePath: chromiumPath(),
    headless: true,
    args: ARGS,
    ignoreDefaultArgs: bfcache ? ['--disable-back-forward-cache'] : undefined,
  });
  const contexts = new Set();
  return {
    browser,
    async newPage({ viewport = { width: 1280, height: 900 }, mobile = false } = {}) {
      const context = await browser.newContext({
        viewport,
        deviceScaleFactor: 1,
        isMobile: mobile,
        hasTouch: mobile,
        userAgent: mobile
          ? 'Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0 Mobile Safari/537.36'
          : undefined,
      });
      contexts.add(context);
      const page = await context.newPage();
      page.errors = [];
      page.on('console', (m) => {
        if (m.type() === 'error') page.errors.push(`console: ${m.text()}`);
      });
      page.on('pageerror', (e) => page.errors.push(`pageerror: ${e.message}`));
      page.closeAll = async () => {
        contexts.delete(context);
        await context.close().catch(() => {});
      };
      return page;
    },
    async close() {
      for (const c of contexts) await c.close().catch(() => {});
      await browser.close().catch(() => {});
    },
  };
}
