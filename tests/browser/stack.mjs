// stack.mjs - which server the browser tests run against.  Pluggable:
//
// 1. TAILGATE_STACK=/path/to/module.mjs  (how the real harness plugs in)
//    The module exports `async function start()` returning a stack object:
//      {
//        name: 'real',                 // shown in test output
//        url: 'http://127.0.0.1:PORT/', // pages at /, the API at apiPath
//        apiPath: '/feeds',            // optional, default /feeds
//        stop(),                       // stop what start() started
//        // optional hooks; tests that need a missing hook are skipped:
//        restartResponder(),           // kill and restart tailgate-fcgi
//        restartDaemon(),              // kill and restart tailgated
//        stopResponder(), startResponder(), // tailgate-fcgi down (nginx: 502), up
//        pauseLoad(), resumeLoad(),    // stop/start the load generator
//        dbRows(feed),                 // the rows as the database has them now,
//                                      // arrays in column order, values encoded
//                                      // as the daemon encodes them
//      }
// 2. TAILGATE_URL=http://host:port/   (a stack someone already started)
//    Hooks from shell commands, each optional: TAILGATE_RESTART_RESPONDER_CMD,
//    TAILGATE_RESTART_DAEMON_CMD, TAILGATE_STOP_RESPONDER_CMD,
//    TAILGATE_START_RESPONDER_CMD, TAILGATE_PAUSE_LOAD_CMD,
//    TAILGATE_RESUME_LOAD_CMD, TAILGATE_DB_ROWS_CMD (run with the feed name as
//    $1, prints a JSON array of rows).  TAILGATE_API_PATH overrides /feeds.
// 3. Neither: the DEVELOPMENT fake server (tests/browser/fake_server.mjs), in
//    process.  Named "fake-dev-server" everywhere; it checks the pages, not
//    tailgate.  TAILGATE_BROWSER_REQUIRE_REAL=1 makes this case an error.

import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const run = promisify(execFile);
const sh = (cmd, ...args) => run('/bin/sh', ['-c', cmd, 'sh', ...args], { maxBuffer: 64 << 20 });

export async function startStack() {
  if (process.env.TAILGATE_STACK) {
    const mod = await import(pathToFileURL(path.resolve(process.env.TAILGATE_STACK)).href);
    const s = await mod.start();
    return { name: 'real', apiPath: '/feeds', ...s };
  }
  if (process.env.TAILGATE_URL) {
    const env = process.env;
    const hook = (v) => (env[v] ? async () => void (await sh(env[v])) : undefined);
    return {
      name: env.TAILGATE_STACK_NAME || 'external',
      url: env.TAILGATE_URL.replace(/\/?$/, '/'),
      apiPath: env.TAILGATE_API_PATH || '/feeds',
      restartResponder: hook('TAILGATE_RESTART_RESPONDER_CMD'),
      restartDaemon: hook('TAILGATE_RESTART_DAEMON_CMD'),
      stopResponder: hook('TAILGATE_STOP_RESPONDER_CMD'),
      startResponder: hook('TAILGATE_START_RESPONDER_CMD'),
      pauseLoad: hook('TAILGATE_PAUSE_LOAD_CMD'),
      resumeLoad: hook('TAILGATE_RESUME_LOAD_CMD'),
      dbRows: env.TAILGATE_DB_ROWS_CMD ? async (feed) => JSON.parse((await sh(env.TAILGATE_DB_ROWS_CMD, feed)).stdout) : undefined,
      stop: async () => {},
    };
  }
  if (process.env.TAILGATE_BROWSER_REQUIRE_REAL === '1')
    throw new Error('TAILGATE_BROWSER_REQUIRE_REAL=1 but neither TAILGATE_STACK nor TAILGATE_URL is set');
  const { startFakeServer } = await import('./fake_server.mjs');
  const f = await startFakeServer({ tick: Number(process.env.TAILGATE_FAKE_TICK || 250) });
  return {
    name: 'fake-dev-server',
    url: f.url,
    apiPath: '/feeds',
    // A responder restart: every open request cut, then a moment of 503.
    restartResponder: async () => {
      f.control.drop();
      f.control.down(1000);
    },
    // A daemon restart that loses its place upstream: not live for a while,
    // then a new history (every cursor 410).
    restartDaemon: async () => {
      f.control.down(1500);
      await new Promise((r) => setTimeout(r, 1600));
      f.control.newHistory();
    },
    pauseLoad: async () => f.control.pause(),
    resumeLoad: async () => f.control.resume(),
    dbRows: async (feed) => f.control.state(feed).rows,
    stop: () => f.close(),
  };
}
