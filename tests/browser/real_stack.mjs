// real_stack.mjs - the TAILGATE_STACK module for the real stack:
// PostgreSQL + tailgated + tailgate-loadgen + tailgate-fcgi + nginx, started
// by real_stack.py (beside this file) with the project's harness in
// tests/lib/.  Needs a build (TAILGATE_BUILDDIR, default build/).
//
//   TAILGATE_STACK=tests/browser/real_stack.mjs tests/browser/run.sh
//
// start({ tls: true }): nginx serves it over TLS and HTTP/2 with a
// self-signed certificate made for the run (real_stack.py --tls); the
// stack's url is https:// and its `cert` the certificate's PEM text, for
// clients that verify it (tests/browser/h2.test.mjs).

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));

export async function start({ tls = false } = {}) {
  const child = spawn('python3', [path.join(here, 'real_stack.py'), ...(tls ? ['--tls'] : [])], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = readline.createInterface({ input: child.stdout });
  const waiting = [];
  lines.on('line', (l) => {
    let msg;
    try {
      msg = JSON.parse(l);
    } catch {
      return; // not ours
    }
    waiting.shift()?.(msg);
  });
  const exited = new Promise((r) => child.on('exit', (code) => r(code)));
  const next = () =>
    Promise.race([
      new Promise((r) => waiting.push(r)),
      exited.then((code) => ({ error: `real_stack.py exited (${code})` })),
    ]);
  const call = async (cmd) => {
    const p = next();
    child.stdin.write(cmd + '\n');
    const r = await p;
    if (r.error) throw new Error(`${cmd}: ${r.error}`);
    return r;
  };
  const up = await next();
  if (up.error) throw new Error(`real stack: ${up.error}`);
  return {
    name: 'real',
    url: up.url,
    cert: up.cert ? fs.readFileSync(up.cert, 'utf8') : undefined,
    apiPath: '/feeds',
    restartResponder: () => call('restart-responder'),
    restartDaemon: () => call('restart-daemon'),
    stopResponder: () => call('stop-responder'),
    startResponder: () => call('start-responder'),
    pauseLoad: () => call('pause-load'),
    resumeLoad: () => call('resume-load'),
    dbRows: async (feed) => (await call(`db-rows ${feed}`)).rows,
    // One commit: the newest winning_bids row's item set to word.
    setItem: async (word) => (await call(`set-item ${word}`)).auction_id,
    stop: async () => {
      await call('stop').catch(() => {});
      child.stdin.end();
      await exited;
    },
  };
}
