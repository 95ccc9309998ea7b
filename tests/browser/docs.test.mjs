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

let server;
let serverErr = '';
let baseUrl;
let browser;
let dataDir;

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

async function waitReady(url, ms) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    try {
      const res = await fetch(`${url}/ready`);
      if (res.status === 200) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`corral did not become ready within ${ms} ms; stderr:\n${serverErr}`);
}

before(async () => {
  assert.ok(existsSync(bin), `corral binary not found at ${bin}; run \`cargo build -p corral\` first`);
  mkdirSync(shots, { recursive: true });
  dataDir = mkdtempSync(path.join(tmpdir(), 'corral-browser-'));
  const port = await freePort();
  baseUrl = `http://127.0.0.1:${port}`;
  server = spawn(bin, ['serve', '--data-dir', dataDir, '--listen', `127.0.0.1:${port}`], {
    env: { PATH: process.env.PATH, CORRAL_LOG__LEVEL: 'warn' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  server.stderr.on('data', (d) => { serverErr += d; });
  await waitReady(baseUrl, 20_000);
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic',
    ],
  });
});

after(async () => {
  await browser?.close();
  if (server && server.exitCode === null) {
    server.kill('SIGTERM');
    await new Promise((r) => server.once('exit', r));
  }
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

/** Opens `path` in a fresh page, recording requests and errors. */
async function open(pathname) {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const requests = [];
  const errors = [];
  page.on('request', (r) => requests.push(r.url()));
  // A request the Content-Security-Policy refused never reached the network.
  page.on('requestfailed', (r) => {
    if (r.failure()?.errorText === 'csp') requests.splice(requests.indexOf(r.url()), 1);
  });
  page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    // Redoc always tries to fetch a logo from its CDN; our Content-Security-Policy
    // refuses it before any request is made. That refusal is the expected outcome.
    const cspRefusedLogo = /the image 'https:\/\/cdn\.redoc\.ly\/.*Content Security Policy/.test(m.text());
    if (m.type() === 'error' && !cspRefusedLogo) errors.push(`console: ${m.text()}`);
  });
  await page.goto(`${baseUrl}${pathname}`, { waitUntil: 'load' });
  return { page, requests, errors };
}

function assertLocalOnly(requests) {
  const remote = requests.filter((u) => {
    const { protocol, hostname } = new URL(u);
    return !['data:', 'blob:', 'about:'].includes(protocol) && hostname !== '127.0.0.1';
  });
  assert.deepEqual(remote, [], 'the page must not load anything from another host');
}

test('Swagger UI at /docs renders the Corral API offline', async () => {
  const { page, requests, errors } = await open('/docs');
  const title = page.locator('.swagger-ui .info .title');
  await title.waitFor({ timeout: 20_000 });
  assert.match(await title.innerText(), /Corral API/);
  await page.locator('.opblock-summary-path', { hasText: '/api/v1/auth/login' }).first().waitFor();
  await page.locator('.opblock-summary-path', { hasText: '/health' }).first().waitFor();
  await page.screenshot({ path: path.join(shots, 'docs.png'), fullPage: false });
  await page.waitForLoadState('networkidle');
  assertLocalOnly(requests);
  assert.deepEqual(errors, []);
  await page.close();
});

test('Redoc at /redoc renders the Corral API offline', async () => {
  const { page, requests, errors } = await open('/redoc');
  const heading = page.locator('h1', { hasText: 'Corral API' });
  await heading.first().waitFor({ timeout: 20_000 });
  await page.getByText('/api/v1/api-keys').first().waitFor({ state: 'attached' });
  await page.screenshot({ path: path.join(shots, 'redoc.png'), fullPage: false });
  await page.waitForLoadState('networkidle');
  assertLocalOnly(requests);
  assert.deepEqual(errors, []);
  await page.close();
});
