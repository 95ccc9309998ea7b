// The API documentation pages render in a real browser with no internet:
// every request the pages make stays on 127.0.0.1.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const bin = process.env.CORRAL_BIN ?? path.resolve(here, '../../target/debug/corral');
const shots = path.join(here, 'screenshots');
const LOCAL_HOST = '127.0.0.1';

let server;
let serverOut = '';
let serverErr = '';
let baseUrl;
let browser;
let dataDir;

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, LOCAL_HOST, () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** Polls `GET /ready` until it answers 200; fails early if the server exits. */
async function waitReady(url, ms) {
  const deadline = Date.now() + ms;
  let last = 'no answer';
  while (Date.now() < deadline) {
    if (server.exitCode !== null || server.signalCode !== null) {
      throw new Error(
        `corral exited (code ${server.exitCode}, signal ${server.signalCode}) before becoming ready;\n` +
          `stdout:\n${serverOut}\nstderr:\n${serverErr}`,
      );
    }
    try {
      const res = await fetch(`${url}/ready`);
      if (res.status === 200) return;
      last = `HTTP ${res.status}`;
    } catch (e) {
      last = e.cause?.code ?? e.message; // not listening yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`corral did not become ready at ${url}/ready within ${ms} ms (last: ${last}); stderr:\n${serverErr}`);
}

async function stopServer() {
  if (!server || server.exitCode !== null || server.signalCode !== null) return;
  const exited = new Promise((r) => server.once('exit', r));
  server.kill('SIGTERM');
  const timer = setTimeout(() => server.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(timer);
}

before(async () => {
  assert.ok(
    existsSync(bin),
    `corral binary not found at ${bin}; run \`cargo build -p corral\` first (or set CORRAL_BIN)`,
  );
  mkdirSync(shots, { recursive: true });
  dataDir = mkdtempSync(path.join(tmpdir(), 'corral-browser-'));
  const port = await freePort();
  baseUrl = `http://${LOCAL_HOST}:${port}`;
  server = spawn(bin, ['serve', '--data-dir', dataDir, '--listen', `${LOCAL_HOST}:${port}`], {
    // A clean environment: the developer's CORRAL_* settings must not leak in.
    env: { PATH: process.env.PATH, CORRAL_LOG__LEVEL: 'warn' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  server.stdout.on('data', (d) => { serverOut += d; });
  server.stderr.on('data', (d) => { serverErr += d; });
  await waitReady(baseUrl, 20_000);
  // playwright-core gives every launch a fresh temporary profile (--user-data-dir).
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic',
    ],
  });
});

after(async () => {
  try {
    await browser?.close();
  } finally {
    await stopServer();
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  }
});

const isLocal = (u) => {
  const { protocol, hostname } = new URL(u);
  return ['data:', 'blob:', 'about:'].includes(protocol) || hostname === LOCAL_HOST;
};

/**
 * Opens `pathname` in a fresh context whose network stops at 127.0.0.1, and
 * records every request the page makes and every error it reports.
 */
async function open(pathname) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  // The offline guarantee holds even where the machine has internet: anything
  // that reaches the network layer for another host is recorded and aborted.
  const offHostSent = [];
  await context.route('**/*', (route) => {
    const url = route.request().url();
    if (isLocal(url)) return route.continue();
    offHostSent.push(url);
    return route.abort('internetdisconnected');
  });
  const page = await context.newPage();
  const requests = [];
  const cspRefused = new Set();
  const errors = [];
  page.on('request', (r) => requests.push(r));
  // A request the Content-Security-Policy refused is cancelled by the browser
  // before it reaches the network; it is reported, not counted as sent.
  page.on('requestfailed', (r) => {
    if (r.failure()?.errorText === 'csp') cspRefused.add(r);
  });
  page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    // Redoc always tries to show its logo from its CDN; our Content-Security-Policy
    // refuses it before any request is made. That refusal is the expected outcome.
    const cspRefusedRedocLogo =
      /^Loading the image 'https:\/\/cdn\.redoc\.ly\/[^']*' violates .*Content Security Policy/.test(m.text());
    if (m.type() === 'error' && !cspRefusedRedocLogo) errors.push(`console: ${m.text()}`);
  });
  const res = await page.goto(`${baseUrl}${pathname}`, { waitUntil: 'load' });
  assert.equal(res?.status(), 200, `GET ${pathname} (after redirects)`);
  return { page, context, requests, cspRefused, offHostSent, errors };
}

/** After the page settles: nothing left 127.0.0.1 and nothing went wrong. */
async function assertOfflineAndClean(t, { page, requests, cspRefused, offHostSent, errors }) {
  await page.waitForLoadState('networkidle');
  const sent = requests.filter((r) => !cspRefused.has(r)).map((r) => r.url());
  const local = sent.filter(isLocal);
  t.diagnostic(`${local.length} requests sent to ${LOCAL_HOST}, ${sent.length - local.length} elsewhere`);
  for (const r of cspRefused) t.diagnostic(`refused by CSP before sending: ${r.url()}`);
  assert.deepEqual(sent.filter((u) => !isLocal(u)), [], 'the page must not request anything from another host');
  assert.deepEqual(offHostSent, [], 'nothing may reach the network for another host');
  assert.ok(local.includes(`${baseUrl}/openapi.json`), 'the page loads the spec from /openapi.json');
  assert.deepEqual(errors, [], 'no page errors or console errors');
}

test('Swagger UI at /docs renders the Corral API offline', async (t) => {
  const opened = await open('/docs');
  const { page, context } = opened;
  try {
    const title = page.locator('.swagger-ui .info .title');
    await title.waitFor({ timeout: 20_000 });
    assert.match(await title.innerText(), /Corral API/);
    await page.locator('.opblock-summary-path', { hasText: /^\/health$/ }).first().waitFor();
    await page.locator('.opblock-summary-path', { hasText: '/api/v1/auth/login' }).first().waitFor();
    await assertOfflineAndClean(t, opened);
    await page.screenshot({ path: path.join(shots, 'docs.png'), fullPage: true });
  } finally {
    await context.close();
  }
});

test('Redoc at /redoc renders the Corral API offline', async (t) => {
  const opened = await open('/redoc');
  const { page, context } = opened;
  try {
    await page.locator('h1', { hasText: 'Corral API' }).first().waitFor({ timeout: 20_000 });
    await page.getByText('/api/v1/api-keys').first().waitFor({ state: 'attached' });
    await assertOfflineAndClean(t, opened);
    // Redoc's page is one very long scroll: the viewport shows menu, title and first operations.
    await page.screenshot({ path: path.join(shots, 'redoc.png') });
  } finally {
    await context.close();
  }
});
