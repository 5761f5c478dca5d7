// End-to-end tests of Herald's web client: a real `herald serve`, headless Chromium, two (and a third) users.
//
//   cd web/e2e && npm ci && node --test --test-reporter=tap run.mjs
//
// Environment:
//   E2E_HERALD_BIN      the server binary (default: <repo>/target/debug/herald; build it with `cargo build -p herald-server`)
//   E2E_CHROMIUM      the browser (default: /usr/bin/chromium, Debian's `chromium` package)
//   E2E_WEB_DEV  if set, web/ is served from disk instead of from the binary (to iterate on the client without
//                   rebuilding the server); the routes and the API still come from the real server.
// Screenshots go to web/e2e/results/.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import { deflateSync } from 'node:zlib';
import { chromium } from 'playwright-core';
import WebSocket from 'ws';
import { HeraldClient, backoffDelay, memoryStorage, newClientMsgId } from '../herald-client.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const WEB = join(HERE, '..');
const ROOT = join(WEB, '..');
const RESULTS = join(HERE, 'results');
const BIN = process.env.E2E_HERALD_BIN ?? join(ROOT, 'target', 'debug', 'herald');
const CHROMIUM = process.env.E2E_CHROMIUM ?? '/usr/bin/chromium';
const DEV = Boolean(process.env.E2E_WEB_DEV);
const STEP = { timeout: 90_000 };
const WAIT = 15_000; // for anything the UI must show

let server;
let dataDir;
let base;
let browser;
const suffix = Date.now().toString(36).slice(-6);
const users = {
  alice: { username: `alice${suffix}`, password: 'alice-secret-1' },
  bob: { username: `bob${suffix}`, password: 'bob-secret-22' },
  carol: { username: `carol${suffix}`, password: 'carol-secret-3' },
  admin: { username: `admin${suffix}`, password: 'admin-secret-4' },
  dave: { username: `dave${suffix}`, password: 'dave-secret-55' },
};
let A; // Alice's page: a desktop window
let B; // Bob's page: a phone-sized window
let shot = 0;

async function screenshot(page, label) {
  shot += 1;
  await page.screenshot({ path: join(RESULTS, `${String(shot).padStart(2, '0')}-${label}.png`) });
}

/** Starts `herald serve` on a free port and resolves with its base URL once it prints its address. */
function startServer() {
  dataDir = mkdtempSync(join(tmpdir(), 'herald-web-e2e-'));
  server = spawn(BIN, ['serve', '--listen', '127.0.0.1:0', '--data-dir', dataDir], {
    env: {
      ...process.env,
      // Cheap password hashing, and access tokens short enough to be refreshed several times during the run.
      HERALD_AUTH__ARGON2_MEMORY_KIB: '64',
      HERALD_AUTH__ARGON2_ITERATIONS: '1',
      HERALD_AUTH__ACCESS_TOKEN_TTL_SECS: '12',
      // The server's admin, who reads the report Bob files.
      HERALD_AUTH__ADMINS: users.admin.username,
      RUST_LOG: process.env.RUST_LOG ?? 'warn',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  server.stderr.on('data', (d) => {
    log += d;
    if (log.length > 20_000) log = log.slice(-10_000);
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the server printed no address within 20 s:\n${log}`)), 20_000);
    server.on('exit', (code) => reject(new Error(`the server exited (${code}):\n${log}`)));
    createInterface({ input: server.stdout }).on('line', (line) => {
      const m = line.match(/^herald listening on (http:\/\/\S+)/);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
  });
}

async function newPage(viewport, label) {
  const context = await browser.newContext({ viewport });
  if (DEV) {
    const types = { js: 'text/javascript', css: 'text/css', html: 'text/html', svg: 'image/svg+xml' };
    await context.route(/\/(app\/[^?]*)?(\?.*)?$/, (route) => {
      const path = new URL(route.request().url()).pathname;
      const file = path === '/' ? 'index.html' : path.slice('/app/'.length);
      try {
        route.fulfill({ body: readFileSync(join(WEB, file)), contentType: types[file.split('.').pop()] });
      } catch {
        route.continue();
      }
    });
  }
  const page = await context.newPage();
  page.on('pageerror', (e) => console.log(`# [${label}] page error: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error' && !/WebSocket connection|Failed to load resource/.test(m.text())) console.log(`# [${label}] console: ${m.text()}`);
  });
  return page;
}

async function signUp(page, who) {
  await page.goto(`${base}/`);
  const form = page.locator('#auth-form');
  await form.getByLabel('Username').fill(who.username);
  await form.getByLabel('Password').fill(who.password);
  await form.getByRole('button', { name: 'Create account' }).click();
  await waitOnline(page);
}

const waitOnline = (page) => page.locator('#conn[data-state="online"]').waitFor({ state: 'attached', timeout: WAIT });

/** The bodies of the messages shown in the open conversation, in screen order. */
const bodies = (page) => page.$$eval('#message-list .msg:not(.system) .body', (els) => els.map((e) => e.textContent));

/** The message (by its text) in the open conversation. */
const message = (page, text) => page.locator('#message-list .msg', { has: page.locator('.body', { hasText: new RegExp(`^${text}$`) }) });

async function send(page, text) {
  const box = page.getByRole('textbox', { name: 'Message' });
  await box.fill(text);
  await box.press('Enter');
}

/** A valid RGB PNG of `width`×`height`: a gradient, different for each size. */
function pngGradient(width, height) {
  const crcTable = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc32 = (buf) => {
    let c = 0xffffffff;
    for (const b of buf) c = crcTable[(c ^ b) & 0xff] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  };
  const chunk = (type, data) => {
    const out = Buffer.alloc(12 + data.length);
    out.writeUInt32BE(data.length, 0);
    out.write(type, 4, 'latin1');
    data.copy(out, 8);
    out.writeUInt32BE(crc32(out.subarray(4, 8 + data.length)), 8 + data.length);
    return out;
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr.set([8, 2, 0, 0, 0], 8); // 8 bits per channel, RGB, no interlace
  const rows = Buffer.alloc(height * (1 + 3 * width));
  for (let y = 0; y < height; y++) {
    const row = y * (1 + 3 * width); // each row starts with filter type 0
    for (let x = 0; x < width; x++) rows.set([Math.round((255 * x) / width), Math.round((255 * y) / height), 160], row + 1 + 3 * x);
  }
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk('IHDR', ihdr), chunk('IDAT', deflateSync(rows)), chunk('IEND', Buffer.alloc(0))]);
}

/** Picks `file` ({name, mimeType, buffer}) through the composer's attach button and the browser's file chooser. */
async function attach(page, file) {
  const [chooser] = await Promise.all([page.waitForEvent('filechooser', { timeout: WAIT }), page.getByRole('button', { name: 'Attach a file' }).click()]);
  await chooser.setFiles(file);
}

/** The conversation in the list whose title is exactly `title`. */
const convNamed = (page, title) => page.locator('#conv-list .conv', { has: page.locator('.conv-title', { hasText: new RegExp(`^${title}$`) }) });

/** Waits until `fn` (run in the page) returns a truthy value; fails with `what`. */
async function until(page, fn, arg, what) {
  try {
    await page.waitForFunction(fn, arg, { timeout: WAIT });
  } catch (e) {
    throw new assert.AssertionError({ message: `${what} (${e.message.split('\n')[0]})` });
  }
}

before(async () => {
  rmSync(RESULTS, { recursive: true, force: true });
  mkdirSync(RESULTS, { recursive: true });
  base = await startServer();
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
      // Only for E2E_WEB_DEV: pages fulfilled by the test itself count as "public" and may not reach 127.0.0.1.
      ...(DEV ? ['--disable-features=LocalNetworkAccessChecks'] : []),
    ],
  });
});

after(async () => {
  await browser?.close();
  if (server && server.exitCode == null) {
    server.kill('SIGTERM');
    await new Promise((r) => {
      const t = setTimeout(() => {
        server.kill('SIGKILL');
        r();
      }, 15_000);
      server.on('exit', () => {
        clearTimeout(t);
        r();
      });
    });
  }
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

describe('the server', () => {
  it('serves the web client at / and /app/, with types and cache headers, and keeps its other routes', STEP, async () => {
    const page = await fetch(`${base}/`);
    assert.equal(page.status, 200);
    assert.equal(page.headers.get('content-type'), 'text/html; charset=utf-8');
    assert.equal(page.headers.get('cache-control'), 'no-cache');
    assert.match(page.headers.get('content-security-policy') ?? '', /default-src 'none'/);
    assert.match(await page.text(), /<script type="module" src="\/app\/app.js">/);
    // Every module of the client (the page loads them all), the style sheet and the icon.
    const modules = readdirSync(WEB).filter((f) => f.endsWith('.js')).map((f) => [f, 'text/javascript; charset=utf-8']);
    assert.ok(modules.length > 2, 'the modules of web/');
    for (const [file, type] of [
      ...modules,
      ['style.css', 'text/css; charset=utf-8'],
      ['icon.svg', 'image/svg+xml'],
    ]) {
      const r = await fetch(`${base}/app/${file}`);
      assert.equal(r.status, 200, file);
      assert.equal(r.headers.get('content-type'), type, file);
      assert.equal(r.headers.get('cache-control'), 'no-cache', file);
      if (!DEV) assert.equal(await r.text(), readFileSync(join(WEB, file), 'utf8'), `${file} is the file in web/ (rebuild the server?)`);
      const again = await fetch(`${base}/app/${file}`, { headers: { 'If-None-Match': r.headers.get('etag') } });
      assert.equal(again.status, 304, `${file} revalidates`);
    }
    const missing = await fetch(`${base}/app/nope.js`);
    assert.equal(missing.status, 404);
    assert.deepEqual(await missing.json(), { code: 'not_found', message: 'no such file' });
    assert.equal((await fetch(`${base}/no/such/path`)).status, 404);
    assert.equal(await (await fetch(`${base}/healthz`)).text(), 'ok');
    assert.equal(await (await fetch(`${base}/readyz`)).text(), 'ready');
    assert.match(await (await fetch(`${base}/metrics`)).text(), /http_requests_total/);
    const me = await fetch(`${base}/api/v1/me`);
    assert.equal(me.status, 401);
    assert.equal((await me.json()).code, 'unauthorized');
  });
});

/** A browser step: on failure, both windows are captured in results/ before the error is reported. */
function step(title, fn) {
  it(title, STEP, async () => {
    try {
      await fn();
    } catch (e) {
      for (const [page, who] of [[A, 'alice'], [B, 'bob']]) await screenshot(page, `FAILED-${who}`).catch(() => {});
      throw e;
    }
  });
}

describe('two people chatting in browsers', () => {
  before(async () => {
    A = await newPage({ width: 1100, height: 760 }, 'alice');
    B = await newPage({ width: 390, height: 780 }, 'bob');
  });

  step('signs up, finds the other user and exchanges messages', async () => {
    await A.goto(`${base}/`);
    await screenshot(A, 'sign-in');
    await signUp(A, users.alice);
    await signUp(B, users.bob);
    assert.equal(await A.locator('#me-name').textContent(), users.alice.username);

    await A.getByRole('button', { name: 'New chat' }).click();
    await A.getByRole('dialog', { name: 'New chat' }).getByLabel('Username').fill(users.bob.username);
    await A.getByRole('button', { name: 'Start chat' }).click();
    await A.locator('#chat-title', { hasText: users.bob.username }).waitFor({ timeout: WAIT });
    await send(A, 'Hi Bob!');
    await message(A, 'Hi Bob!').locator('.ticks[data-state="sent"], .ticks[data-state="delivered"]').waitFor({ timeout: WAIT });

    // Bob's list shows the new conversation with one unread message and Alice online.
    const conv = B.locator('#conv-list .conv', { hasText: users.alice.username });
    await conv.waitFor({ timeout: WAIT });
    await conv.locator('.badge', { hasText: '1' }).waitFor({ timeout: WAIT });
    await conv.locator('.dot.online').waitFor({ timeout: WAIT });
    assert.match(await conv.textContent(), /Hi Bob!/);
    await screenshot(B, 'bob-list-unread');
    // Delivered: Bob's device got it, though he has not opened it.
    await message(A, 'Hi Bob!').locator('.ticks[data-state="delivered"]').waitFor({ timeout: WAIT });

    await conv.click();
    await message(B, 'Hi Bob!').waitFor({ timeout: WAIT });
    // Read: Bob has it on screen; the unread badge goes.
    await message(A, 'Hi Bob!').locator('.ticks[data-state="read"]').waitFor({ timeout: WAIT });
    await B.locator('#conv-list .badge').waitFor({ state: 'detached', timeout: WAIT });
    assert.equal(await message(A, 'Hi Bob!').locator('.ticks').getAttribute('aria-label'), 'Read');
  });

  step('shows each one the other typing', async () => {
    await B.getByRole('textbox', { name: 'Message' }).pressSequentially('Hey Ali', { delay: 30 });
    await A.locator('#typing', { hasText: `${users.bob.username} is typing…` }).waitFor({ timeout: WAIT });
    await A.locator('.conv .conv-last', { hasText: 'is typing…' }).waitFor({ timeout: WAIT });
    await screenshot(A, 'alice-sees-bob-typing');
    await B.getByRole('textbox', { name: 'Message' }).pressSequentially('ce!', { delay: 30 });
    await B.getByRole('textbox', { name: 'Message' }).press('Enter');
    await message(A, 'Hey Alice!').waitFor({ timeout: WAIT });
    // The message ends Bob's indicator at once.
    await A.locator('#typing', { hasText: 'typing' }).waitFor({ state: 'detached', timeout: 1000 }).catch(() => {});
    assert.equal((await A.locator('#typing').textContent()).trim(), '');

    await A.getByRole('textbox', { name: 'Message' }).pressSequentially('So', { delay: 30 });
    await B.locator('#typing', { hasText: `${users.alice.username} is typing…` }).waitFor({ timeout: WAIT });
    await screenshot(B, 'bob-sees-alice-typing');
    await A.getByRole('textbox', { name: 'Message' }).fill('');
    await A.getByRole('textbox', { name: 'Message' }).blur();
    await B.locator('#typing', { hasText: 'typing' }).waitFor({ state: 'detached', timeout: WAIT });
  });

  step('replies, reacts, edits and deletes', async () => {
    // Alice replies to Bob's message, with the keyboard: focus the message, Tab to its Reply button.
    const heyAlice = message(A, 'Hey Alice!');
    await heyAlice.focus();
    await A.keyboard.press('Tab');
    assert.equal(await A.evaluate(() => document.activeElement.textContent), 'Reply');
    await A.keyboard.press('Enter');
    await A.locator('#composer-context', { hasText: 'Replying to' }).waitFor({ timeout: WAIT });
    await A.keyboard.type('Great to see you');
    await A.keyboard.press('Enter');
    const reply = message(B, 'Great to see you');
    await reply.locator('.reply-ref', { hasText: 'Hey Alice!' }).waitFor({ timeout: WAIT });

    // Bob reacts to it; Alice sees the reaction.
    await reply.locator('.body').click(); // (the quote above it is a link to the quoted message)
    await reply.getByRole('button', { name: 'React' }).click();
    await reply.getByRole('button', { name: 'React with 👍' }).click();
    await message(A, 'Great to see you').locator('.reaction', { hasText: '👍 1' }).waitFor({ timeout: WAIT });
    assert.equal(await message(B, 'Great to see you').locator('.reaction').getAttribute('aria-pressed'), 'true');

    // Alice edits her first message; Bob sees the new text, marked edited.
    const first = message(A, 'Hi Bob!');
    await first.hover();
    await first.getByRole('button', { name: 'Edit' }).click();
    const box = A.getByRole('textbox', { name: 'Message' });
    assert.equal(await box.inputValue(), 'Hi Bob!');
    await box.fill('Hi Bob, how are you?');
    await box.press('Enter');
    // Leaving edit mode is immediate: the box is empty and what is typed next is a new message.
    assert.equal(await box.inputValue(), '');
    await message(B, 'Hi Bob, how are you\\?').locator('.edited').waitFor({ timeout: WAIT });
    await message(A, 'Hi Bob, how are you\\?').locator('.edited').waitFor({ timeout: WAIT });

    // Alice sends a message and deletes it; Bob sees it go.
    await send(A, 'oops, wrong chat');
    await message(B, 'oops, wrong chat').waitFor({ timeout: WAIT });
    A.once('dialog', (d) => d.accept());
    const oops = message(A, 'oops, wrong chat');
    await oops.hover();
    await oops.getByRole('button', { name: 'Delete' }).click();
    await message(B, 'This message was deleted').waitFor({ timeout: WAIT });
    assert.equal(await message(B, 'oops, wrong chat').count(), 0);
    await screenshot(A, 'alice-reply-react-edit-delete');
    await screenshot(B, 'bob-reply-react-edit-delete');
  });

  step('reports a message to the server’s admins, who see it as it was', async () => {
    const target = message(B, 'Great to see you');
    await target.locator('.body').click();
    await target.getByRole('button', { name: 'Report' }).click();
    const dialog = B.getByRole('dialog', { name: 'Report message' });
    await dialog.waitFor({ timeout: WAIT });
    assert.match(await dialog.locator('#report-quote').textContent(), /Great to see you/);
    await dialog.getByLabel('Reason').selectOption('harassment');
    await dialog.getByLabel('What is wrong (optional)').fill('not nice at all');
    await screenshot(B, 'bob-reports-a-message');
    await dialog.getByRole('button', { name: 'Send report' }).click();
    await B.locator('#toast', { hasText: 'Reported' }).waitFor({ timeout: WAIT });
    await dialog.waitFor({ state: 'hidden', timeout: WAIT });
    // One's own messages offer no Report.
    assert.equal(await message(A, 'Great to see you').getByRole('button', { name: 'Report' }).count(), 0);

    // The admin finds it over the API, with the message as Bob saw it; Bob cannot list reports.
    const signUp = await fetch(`${base}/api/v1/accounts`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(users.admin) });
    assert.equal(signUp.status, 201);
    const admin = await signUp.json();
    const listed = await fetch(`${base}/api/v1/admin/reports`, { headers: { Authorization: `Bearer ${admin.access_token}` } });
    assert.equal(listed.status, 200);
    const { reports } = await listed.json();
    assert.equal(reports.length, 1);
    assert.equal(reports[0].reason, 'harassment');
    assert.equal(reports[0].comment, 'not nice at all');
    assert.equal(reports[0].message.body, 'Great to see you');
    assert.equal(reports[0].target.kind, 'message');
    const refused = await B.evaluate(async () => {
      const token = await globalThis.herald.accessToken();
      return (await fetch('/api/v1/admin/reports', { headers: { Authorization: `Bearer ${token}` } })).status;
    });
    assert.equal(refused, 403);
  });

  step('replies in a thread: a side panel, live on both sides, with its own unread count', async () => {
    const reply = (page, text) => page.locator('#thread-list .msg', { has: page.locator('.body', { hasText: new RegExp(`^${text}$`) }) });
    // Alice opens the thread of her first message and replies in it.
    const root = message(A, 'Hi Bob, how are you\\?');
    await root.locator('.body').click();
    await root.getByRole('button', { name: 'Thread', exact: true }).click();
    const pane = A.locator('#thread-pane');
    await pane.waitFor({ timeout: WAIT });
    await pane.locator('#thread-root', { hasText: 'Hi Bob, how are you?' }).waitFor({ timeout: WAIT });
    await pane.locator('#thread-status', { hasText: 'No replies yet.' }).waitFor({ timeout: WAIT });
    await A.getByRole('textbox', { name: 'Reply in thread' }).fill('Shall we talk about the trip here?');
    await A.getByRole('textbox', { name: 'Reply in thread' }).press('Enter');
    await reply(A, 'Shall we talk about the trip here\\?').waitFor({ timeout: WAIT });

    // Bob sees the root count it, marked new for him, and not the reply itself in the conversation.
    const link = message(B, 'Hi Bob, how are you\\?').locator('.thread-link');
    await link.filter({ hasText: '1 reply · 1 new' }).waitFor({ timeout: WAIT });
    assert.equal(await message(B, 'Shall we talk about the trip here\\?').count(), 0, 'a thread reply stays out of the conversation');
    await screenshot(B, 'bob-sees-a-thread');
    await link.click();
    await reply(B, 'Shall we talk about the trip here\\?').waitFor({ timeout: WAIT });
    // Opening it reads it: the server agrees.
    await link.filter({ hasText: /^1 reply$/ }).waitFor({ timeout: WAIT });
    const rootSeq = Number(await message(B, 'Hi Bob, how are you\\?').getAttribute('data-seq'));
    // The conversation's id, from the list (Bob has only this one).
    const bobsView = () =>
      B.evaluate((seq) => globalThis.herald.thread(document.querySelector('#conv-list .conv').dataset.id, seq), rootSeq);
    await until(
      B,
      async (seq) => (await globalThis.herald.thread(document.querySelector('#conv-list .conv').dataset.id, seq)).unread === 0,
      rootSeq,
      'Bob has read the thread on the server',
    );
    await B.getByRole('textbox', { name: 'Reply in thread' }).fill('Yes, in June');
    await B.getByRole('textbox', { name: 'Reply in thread' }).press('Enter');

    // Alice, with the panel open, gets Bob's reply live; the root counts two.
    await reply(A, 'Yes, in June').waitFor({ timeout: WAIT });
    await A.locator('#thread-title', { hasText: 'Thread · 2 replies' }).waitFor({ timeout: WAIT });
    await message(A, 'Hi Bob, how are you\\?').locator('.thread-link', { hasText: /^2 replies$/ }).waitFor({ timeout: WAIT });
    await screenshot(A, 'alice-thread-panel');
    const state = await bobsView();
    assert.deepEqual([state.replies, state.unread], [2, 0], 'his own reply is not unread for Bob');

    // After a reload the root still shows its thread, and it opens with both replies.
    await B.reload();
    await waitOnline(B);
    await B.locator('#conv-list .conv').first().click();
    const again = message(B, 'Hi Bob, how are you\\?').locator('.thread-link', { hasText: /^2 replies$/ });
    await again.waitFor({ timeout: WAIT });
    await again.click();
    await reply(B, 'Yes, in June').waitFor({ timeout: WAIT });
    await B.getByRole('button', { name: 'Close the thread' }).click();
    await A.getByRole('button', { name: 'Close the thread' }).click();
    await A.locator('#thread-pane').waitFor({ state: 'hidden', timeout: WAIT });
  });

  step('search: words find the messages, marked; a result opens its message, or its thread', async () => {
    const box = A.getByRole('searchbox', { name: 'Search messages' });
    await box.fill('BOB how');
    const hit = A.locator('#search-list .search-hit', { hasText: 'Hi Bob, how are you?' });
    await hit.waitFor({ timeout: WAIT });
    assert.equal(await A.locator('#conv-list').isHidden(), true, 'results replace the conversation list');
    assert.deepEqual(await hit.locator('mark').allTextContents(), ['Bob', 'how'], 'the words the query found are marked');
    await screenshot(A, 'alice-search-results');
    await hit.click();
    const found = A.locator('#message-list .msg.found', { has: A.locator('.body', { hasText: /^Hi Bob, how are you\?$/ }) });
    await found.waitFor({ timeout: WAIT });

    // A thread reply is found too, and opens in its thread; Escape brings the conversation list back.
    await box.fill('tri');
    const reply = A.locator('#search-list .search-hit', { hasText: 'in a thread' });
    await reply.waitFor({ timeout: WAIT });
    assert.deepEqual(await reply.locator('mark').allTextContents(), ['trip']);
    await reply.click();
    await A.locator('#thread-pane #thread-root', { hasText: 'Hi Bob, how are you?' }).waitFor({ timeout: WAIT });
    await box.fill('zzzunlikelyword');
    await A.locator('#search-status', { hasText: 'No messages found.' }).waitFor({ timeout: WAIT });
    await box.press('Escape');
    await A.locator('#conv-list').waitFor({ state: 'visible', timeout: WAIT });
    assert.equal(await A.locator('#search-results').isHidden(), true);
    await A.getByRole('button', { name: 'Close the thread' }).click();
    await A.locator('#thread-pane').waitFor({ state: 'hidden', timeout: WAIT });
  });

  step('blocks and unblocks: a blocked message is refused, and goes through once the block is lifted', async () => {
    A.once('dialog', (d) => d.accept());
    await A.getByRole('button', { name: 'Block', exact: true }).click();
    await A.getByRole('button', { name: 'Unblock', exact: true }).waitFor({ timeout: WAIT });
    const box = A.getByRole('textbox', { name: 'Message' });
    assert.equal(await box.isDisabled(), true, 'the blocker cannot write');
    assert.match(await box.getAttribute('placeholder'), /You blocked this user/);
    await screenshot(A, 'alice-blocked-bob');

    // Bob's message is refused, with the reason, and offered again; Alice gets nothing.
    await send(B, 'are you there?');
    const refused = message(B, 'are you there\\?');
    await refused.locator('.error', { hasText: 'blocked' }).waitFor({ timeout: WAIT });
    await screenshot(B, 'bob-refused-by-a-block');
    await A.waitForTimeout(300);
    assert.equal(await message(A, 'are you there\\?').count(), 0);

    await A.getByRole('button', { name: 'Unblock', exact: true }).click();
    await A.getByRole('button', { name: 'Block', exact: true }).waitFor({ timeout: WAIT });
    assert.equal(await box.isDisabled(), false);
    await refused.getByRole('button', { name: 'Retry' }).click();
    await message(A, 'are you there\\?').waitFor({ timeout: WAIT });
    assert.equal(await message(B, 'are you there\\?').locator('.error').count(), 0);
  });

  step('reports a user; an admin resolves reports, suspends and deletes an account in the admin dialog', async () => {
    // Alice reports Bob from their conversation's header.
    await A.locator('#report-user-btn').click();
    const dialog = A.getByRole('dialog', { name: 'Report user' });
    await dialog.waitFor({ timeout: WAIT });
    assert.match(await dialog.locator('#report-quote').textContent(), new RegExp(users.bob.username));
    await dialog.getByLabel('Reason').selectOption('spam');
    await dialog.getByRole('button', { name: 'Send report' }).click();
    await A.locator('#toast', { hasText: 'Reported' }).waitFor({ timeout: WAIT });
    await dialog.waitFor({ state: 'hidden', timeout: WAIT });
    assert.equal(await A.locator('#admin-btn').isHidden(), true, 'only admins have the Admin button');

    const post = (path, body, token) =>
      fetch(`${base}/api/v1${path}`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', ...(token ? { Authorization: `Bearer ${token}` } : {}) },
        body: JSON.stringify(body),
      });
    const dave = await (await post('/accounts', users.dave)).json();

    // The admin signs in in a window of their own.
    const Z = await newPage({ width: 1000, height: 800 }, 'admin');
    try {
      await Z.goto(`${base}/`);
      const form = Z.locator('#auth-form');
      await form.getByLabel('Username').fill(users.admin.username);
      await form.getByLabel('Password').fill(users.admin.password);
      await form.getByRole('button', { name: 'Log in' }).click();
      await waitOnline(Z);
      await Z.getByRole('button', { name: 'Admin' }).click();
      const admin = Z.getByRole('dialog', { name: 'Administration' });
      const reports = admin.locator('#admin-reports li');
      await reports.nth(1).waitFor({ timeout: WAIT });
      assert.equal(await reports.count(), 2, 'Bob’s report of a message and Alice’s of Bob');
      const ofBob = reports.filter({ hasText: `reported the user ${users.bob.username}` });
      await admin.getByLabel('Note kept with a resolution (optional)').fill('warned bob');
      await screenshot(Z, 'admin-reports');
      await ofBob.getByRole('button', { name: 'Resolve' }).click();
      await Z.locator('#toast', { hasText: 'Report resolved' }).waitFor({ timeout: WAIT });
      await reports.nth(1).waitFor({ state: 'detached', timeout: WAIT });
      assert.equal(await reports.count(), 1);

      // Dave is suspended: his session closes and his logins are refused, until the suspension is lifted.
      await admin.getByLabel('Username').fill(users.dave.username);
      await admin.getByRole('button', { name: 'Look up' }).click();
      await admin.locator('#admin-account', { hasText: 'active' }).waitFor({ timeout: WAIT });
      await admin.getByLabel('Reason, for admins (optional)').fill('spam bot');
      await admin.getByRole('button', { name: 'Suspend', exact: true }).click();
      await admin.locator('#admin-account', { hasText: 'suspended' }).waitFor({ timeout: WAIT });
      assert.match(await admin.locator('#admin-account').textContent(), /spam bot/);
      await screenshot(Z, 'admin-suspended-an-account');
      const me = await fetch(`${base}/api/v1/me`, { headers: { Authorization: `Bearer ${dave.access_token}` } });
      assert.equal(me.status, 401, 'the suspended account’s session is closed');
      const refused = await post('/sessions', users.dave);
      assert.equal(refused.status, 403);
      assert.match((await refused.json()).message, /suspended/);
      await admin.getByRole('button', { name: 'Lift suspension' }).click();
      await admin.locator('#admin-account', { hasText: 'active' }).waitFor({ timeout: WAIT });
      assert.equal((await post('/sessions', users.dave)).status, 200, 'a lifted suspension lets the account in');

      // Then Dave is deleted, after the admin confirms: his sessions close and his name and password are gone.
      Z.once('dialog', (confirmation) => confirmation.accept());
      await admin.getByRole('button', { name: 'Delete account' }).click();
      await admin.locator('#admin-account', { hasText: 'is deleted' }).waitFor({ timeout: WAIT });
      assert.equal(await admin.locator('#admin-account-actions').isHidden(), true);
      await screenshot(Z, 'admin-deleted-an-account');
      const after = await fetch(`${base}/api/v1/me`, { headers: { Authorization: `Bearer ${dave.access_token}` } });
      assert.equal(after.status, 401, 'the deleted account’s session is closed');
      assert.equal((await post('/sessions', users.dave)).status, 401, 'and nobody logs in as it');

      // The resolution keeps the admin's note.
      const token = await Z.evaluate(() => globalThis.herald.accessToken());
      const resolved = await fetch(`${base}/api/v1/admin/reports?state=resolved`, { headers: { Authorization: `Bearer ${token}` } });
      const [done] = (await resolved.json()).reports;
      assert.equal(done.resolution.note, 'warned bob');
      assert.equal(done.target.kind, 'user');
    } finally {
      await Z.context().close();
    }
  });

  step('goes offline, shows that it reconnects, and comes back with every message in order', async () => {
    const before = await bodies(B);
    await B.context().setOffline(true);
    await B.locator('#conn[data-state="reconnecting"]', { hasText: 'Reconnecting' }).waitFor({ timeout: WAIT });
    await screenshot(B, 'bob-offline-reconnecting');

    // Bob writes while offline: it waits, visibly, in his outbox.
    await send(B, 'written offline');
    await message(B, 'written offline').locator('.sending', { hasText: 'Waiting for the connection' }).waitFor({ timeout: WAIT });

    const missed = Array.from({ length: 6 }, (_, i) => `while you were away ${i + 1}`);
    for (const text of missed) await send(A, text);
    for (const text of missed) await message(A, text).locator('.ticks[data-state="sent"]').waitFor({ timeout: WAIT });
    await B.waitForTimeout(500);
    assert.deepEqual(await bodies(B), [...before, 'written offline'], 'nothing arrives while offline');

    await B.context().setOffline(false);
    await waitOnline(B);
    await until(B, (n) => document.querySelectorAll('#message-list .msg:not(.system):not(.pending)').length >= n, before.length + missed.length + 1, 'Bob did not get every message after reconnecting');
    const after = await bodies(B);
    assert.deepEqual(after.slice(0, before.length), before);
    const fresh = after.slice(before.length);
    assert.deepEqual(fresh.filter((t) => t !== 'written offline'), missed, 'the missed messages arrive in order');
    assert.equal(fresh.filter((t) => t === 'written offline').length, 1, 'the offline message is shown once');
    // Bob's offline message reached Alice exactly once, and Alice's last message shows as read.
    await message(A, 'written offline').waitFor({ timeout: WAIT });
    assert.equal(await message(A, 'written offline').count(), 1);
    await message(A, missed.at(-1)).locator('.ticks[data-state="read"]').waitFor({ timeout: WAIT });
    const seqs = await B.$$eval('#message-list .msg[data-seq]', (els) => els.map((e) => Number(e.dataset.seq)));
    assert.deepEqual(seqs, [...seqs].sort((x, y) => x - y), 'messages are shown in seq order');
    assert.equal(new Set(seqs).size, seqs.length, 'no message is shown twice');
    await screenshot(B, 'bob-back-online');
  });

  step('keeps the feed position across a reload and loads older history on scroll', async () => {
    // 80 more messages, sent by Alice's device over REST (quicker than typing them).
    const conv = await A.evaluate(() => document.querySelector('#conv-list .conv[aria-current="true"]').dataset.id);
    const sent = await A.evaluate(async (id) => {
      const h = globalThis.herald;
      const out = [];
      for (let i = 1; i <= 80; i++) {
        const token = await h.accessToken();
        const r = await fetch(`/api/v1/conversations/${id}/messages`, {
          method: 'POST',
          headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${token}` },
          body: JSON.stringify({ client_msg_id: `bulk-${i}`, body: `bulk ${i}` }),
        });
        out.push(r.status);
      }
      return out;
    }, conv);
    assert.ok(sent.every((s) => s === 201), `bulk sends: ${sent}`);
    const posBefore = await B.evaluate(() => globalThis.herald.lastPos);
    assert.ok(posBefore > 0, 'Bob keeps a feed position');

    await B.reload();
    await waitOnline(B);
    assert.ok((await B.evaluate(() => Number(localStorage.getItem(`herald:${globalThis.herald.user.id}:pos`)))) >= posBefore);
    // The phone layout shows the list first.
    await B.locator('#conv-list .conv', { hasText: 'bulk 80' }).click();
    await message(B, 'bulk 80').waitFor({ timeout: WAIT });
    const shown = await B.locator('#message-list .msg[data-seq]').count();
    assert.ok(shown < 100, `only the newest pages are loaded at first (${shown})`);
    for (let i = 0; i < 10 && !(await B.locator('#history-status', { hasText: 'start of the conversation' }).count()); i++) {
      await B.locator('#messages').evaluate((e) => (e.scrollTop = 0));
      await B.waitForTimeout(400);
    }
    await B.locator('#history-status', { hasText: 'start of the conversation' }).waitFor({ timeout: WAIT });
    const seqs = await B.$$eval('#message-list .msg[data-seq]', (els) => els.map((e) => Number(e.dataset.seq)));
    const last = seqs.at(-1);
    // Every seq but the thread's two replies (shown in the thread's panel, not here).
    const inThreads = await B.evaluate(async (n) => {
      const conv = document.querySelector('#conv-list .conv[aria-current="true"]')?.dataset.id;
      const page = await globalThis.herald.history(conv, { from: 1, dir: 'forward', limit: n });
      return page.messages.filter((m) => m.thread_root).map((m) => m.seq);
    }, last);
    assert.equal(inThreads.length, 2, 'the thread of the earlier step');
    const expected = Array.from({ length: last }, (_, i) => i + 1).filter((seq) => !inThreads.includes(seq));
    assert.deepEqual(seqs, expected, 'every seq from 1 outside threads, once, in order');
    assert.equal((await bodies(B))[0], 'Hi Bob, how are you?');
    await B.locator('#messages').evaluate((e) => (e.scrollTop = 0));
    await screenshot(B, 'bob-history-top');
  });

  step('refreshes the access token when it has expired, and when it is refused', async () => {
    const r = await A.evaluate(async () => {
      // (Refresh tokens are compared: two access tokens issued within one second are identical.)
      const h = globalThis.herald;
      const first = h.session.refresh_token;
      h.session.access_expires_at = Date.now() - 1000; // expired: refreshed before the request
      await h.me();
      const second = h.session.refresh_token;
      // A token the server refuses (here: a broken signature) is refreshed after the 401, and the request retried.
      const token = h.session.access_token;
      h._setSession({ ...h.session, access_token: `${token.slice(0, -6)}AAAAAA`, access_expires_at: Date.now() + 600_000 });
      const me = await h.me();
      const stored = JSON.parse(localStorage.getItem('herald:session'));
      return { first, second, third: h.session.refresh_token, user: me.user.username, stored: stored.refresh_token };
    });
    assert.notEqual(r.second, r.first);
    assert.notEqual(r.third, r.second);
    assert.equal(r.user, users.alice.username);
    assert.equal(r.stored, r.third, 'the new session is kept in localStorage');
    // The socket and the UI carry on.
    await send(A, 'still here');
    await message(A, 'still here').locator('.ticks').waitFor({ timeout: WAIT });
  });

  step('answers a resync by reloading, then follows the feed again', async () => {
    // A position the server cannot serve (ahead of Bob's feed): it answers `resync`, the client reloads over REST.
    await B.evaluate(() => localStorage.setItem(`herald:${globalThis.herald.user.id}:pos`, '99999999'));
    await B.reload();
    await waitOnline(B);
    const pos = await B.evaluate(() => globalThis.herald.lastPos);
    assert.ok(pos > 0 && pos < 99999999, `the position comes from the resync answer (${pos})`);
    await B.locator('#conv-list .conv', { hasText: 'still here' }).click();
    await send(A, 'after the resync');
    await message(B, 'after the resync').waitFor({ timeout: WAIT });
    assert.ok((await B.evaluate(() => globalThis.herald.lastPos)) > pos);
  });

  step('creates a group, adds and removes a member', async () => {
    // Carol exists (registered over REST).
    const r = await fetch(`${base}/api/v1/accounts`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(users.carol) });
    assert.equal(r.status, 201);

    await A.getByRole('button', { name: 'New group' }).click();
    const create = A.getByRole('dialog', { name: 'New group' });
    await create.getByLabel('Group name').fill('Weekend trip');
    await create.getByLabel('Members').fill(users.bob.username);
    await A.getByRole('button', { name: 'Create group' }).click();
    await A.locator('#chat-title', { hasText: 'Weekend trip' }).waitFor({ timeout: WAIT });
    await send(A, 'Who is in?');

    // Bob hears of the group with its first message.
    if (await B.locator('#back').isVisible()) await B.locator('#back').click();
    await B.locator('#conv-list .conv', { hasText: 'Weekend trip' }).click();
    await message(B, 'Who is in\\?').waitFor({ timeout: WAIT });

    await A.getByRole('button', { name: 'Members' }).click();
    const dialog = A.getByRole('dialog', { name: 'Members' });
    await dialog.getByLabel('Add a member').fill(users.carol.username);
    await dialog.getByRole('button', { name: 'Add', exact: true }).click();
    await dialog.locator('.member-name', { hasText: users.carol.username }).waitFor({ timeout: WAIT });
    // Presence beside each member: Bob is connected, Carol has never been.
    await dialog.locator('li', { hasText: users.bob.username }).locator('.dot.online').waitFor({ timeout: WAIT });
    await dialog.locator('li', { hasText: users.carol.username }).locator('.dot.offline').waitFor({ timeout: WAIT });
    await screenshot(A, 'alice-group-members');
    await B.locator('#message-list .msg.system', { hasText: `added ${users.carol.username}` }).waitFor({ timeout: WAIT });

    await dialog.getByRole('button', { name: `Remove ${users.carol.username}` }).click();
    await dialog.locator('.member-name', { hasText: users.carol.username }).waitFor({ state: 'detached', timeout: WAIT });
    assert.equal(await dialog.locator('.member-name').count(), 2);
    await dialog.getByRole('button', { name: 'Close' }).click();
    await B.locator('#message-list .msg.system', { hasText: `removed ${users.carol.username}` }).waitFor({ timeout: WAIT });
    await screenshot(B, 'bob-group');
  });

  step('is usable from the keyboard, with labelled controls', async () => {
    // Every control has an accessible name, every field a label.
    const unnamed = await A.evaluate(() =>
      [...document.querySelectorAll('button, input, textarea, [role="img"]')]
        .filter((e) => e.offsetParent !== null || e.closest('dialog'))
        .filter((e) => {
          const labelled = e.getAttribute('aria-label') || e.getAttribute('aria-labelledby') || (e.labels && e.labels.length) || e.textContent.trim();
          return !labelled;
        })
        .map((e) => e.outerHTML.slice(0, 80)),
    );
    assert.deepEqual(unnamed, []);
    // Tab order from the top of the page: skip link, log out, new chat, new group, the conversations, members,
    // the message log, the message box, send.
    await A.locator('.skip-link').focus();
    const order = ['Skip to the message box'];
    for (let i = 0; i < 12; i++) {
      await A.keyboard.press('Tab');
      order.push(
        await A.evaluate(() => {
          const e = document.activeElement;
          return e.getAttribute('aria-label') || e.labels?.[0]?.textContent.trim() || e.textContent.trim().slice(0, 40);
        }),
      );
    }
    const expected = ['Skip to the message box', 'Log out', 'New chat', 'New group', 'Members', 'Messages', 'Message', 'Send'];
    let k = 0;
    for (const name of order) if (name === expected[k]) k += 1;
    assert.equal(k, expected.length, `tab order ${JSON.stringify(order)} should pass through ${JSON.stringify(expected)}`);
    assert.ok(order.filter((n) => n.startsWith('Weekend trip') || n.includes(users.bob.username)).length >= 2, `the conversations are in the tab order: ${JSON.stringify(order)}`);
    // The message log: arrow keys move between messages.
    await A.locator('#messages').focus();
    await A.keyboard.press('ArrowUp');
    assert.ok(await A.evaluate(() => document.activeElement.classList.contains('msg')), 'ArrowUp focuses a message');
    // Dialogs: Escape closes, focus returns to the button that opened it.
    await A.getByRole('button', { name: 'New chat' }).focus();
    await A.keyboard.press('Enter');
    assert.equal(await A.evaluate(() => document.activeElement.id), 'chat-username');
    await A.keyboard.press('Escape');
    assert.equal(await A.evaluate(() => document.activeElement.id), 'new-chat');
  });

  step('attaches a picture that the other sees, and refuses a file that lies about its type', async () => {
    await convNamed(A, users.bob.username).click();
    if (await B.locator('#back').isVisible()) await B.locator('#back').click();
    await convNamed(B, users.alice.username).click();
    await message(B, 'after the resync').waitFor({ timeout: WAIT });

    // Alice types a caption, then attaches a picture: once the server has it ready, both go as one message.
    await A.getByRole('textbox', { name: 'Message' }).fill('A gradient');
    await attach(A, { name: 'gradient <b>.png', mimeType: 'image/png', buffer: pngGradient(64, 48) });
    // Bob's window shows it from a signed /media/ URL, and the picture really loads (decoded: naturalWidth).
    const loaded = (page) =>
      until(
        page,
        () => {
          const img = [...document.querySelectorAll('#message-list .msg .att-image img')].at(-1);
          return img && img.complete && img.naturalWidth > 0 && new URL(img.src).pathname.startsWith('/media/');
        },
        null,
        'the attached picture did not load',
      );
    await loaded(B);
    const pic = message(B, 'A gradient');
    const img = pic.locator('.att-image img');
    assert.equal(await img.getAttribute('alt'), 'gradient <b>.png', 'the file name is text, not markup');
    assert.equal(await pic.locator('b').count(), 0);
    assert.deepEqual(await img.evaluate((e) => [e.getAttribute('width'), e.getAttribute('height'), e.naturalWidth]), ['64', '48', 64], 'the box is reserved at the picture size');
    assert.match(await img.getAttribute('src'), /\/media\/[0-9a-f-]+\/(thumb_300|thumb_150|original)\?exp=\d+&sig=/);
    assert.match(await pic.locator('.att-image').getAttribute('href'), /\/media\/[0-9a-f-]+\/original\?exp=/, 'clicking opens the original');
    assert.equal(await pic.locator('.att-image').getAttribute('target'), '_blank');
    await loaded(A);
    assert.equal(await A.getByRole('textbox', { name: 'Message' }).inputValue(), '', 'the caption went with the picture');
    assert.match(await convNamed(B, users.alice.username).textContent(), /A gradient/);
    await screenshot(B, 'bob-sees-picture');

    // A file that says it is a PNG but is an ELF executable: refused with its reason, and nothing is sent.
    const count = await B.locator('#message-list .msg').count();
    const box = A.getByRole('textbox', { name: 'Message' });
    await box.fill('not sent with the refused file');
    const elf = Buffer.concat([Buffer.from('7f454c46020101000000000000000000', 'hex'), Buffer.from('\x02\x00\x3e\x00'.repeat(64), 'latin1')]);
    await attach(A, { name: 'cat.png', mimeType: 'image/png', buffer: elf });
    const refused = A.locator('#composer-uploads .upload.rejected', { hasText: 'cat.png' });
    await refused.locator('[role="alert"]', { hasText: 'refused: type_not_allowed' }).waitFor({ timeout: WAIT });
    await screenshot(A, 'alice-upload-refused');
    assert.equal(await box.inputValue(), 'not sent with the refused file', 'the text stays in the box');
    await B.waitForTimeout(500);
    assert.equal(await B.locator('#message-list .msg').count(), count, 'Bob gets no message');
    assert.equal(await A.locator('#message-list .msg.pending').count(), 0, 'Alice sends nothing');
    await refused.getByRole('button', { name: 'Dismiss cat.png' }).click();
    await A.locator('#composer-uploads').waitFor({ state: 'hidden', timeout: WAIT });
    await box.fill('');

    // Through the client: an attachment waits in the outbox (kept in localStorage, with its media id) while
    // offline, and goes with the same entry once the connection is back. The history shows it too.
    const id = await A.evaluate(async (data) => {
      const info = await globalThis.herald.upload(new Blob([new Uint8Array(data)], { type: 'image/png' }), { filename: 'tall.png' });
      return info.id;
    }, [...pngGradient(48, 64)]);
    await A.context().setOffline(true);
    await A.locator('#conn[data-state="reconnecting"]').waitFor({ timeout: WAIT });
    const stored = await A.evaluate(({ conv, id }) => {
      globalThis.herald.send(conv, '', { attachments: [id] });
      return JSON.parse(localStorage.getItem(`herald:${globalThis.herald.user.id}:outbox`));
    }, { conv: await A.evaluate(() => document.querySelector('#conv-list .conv[aria-current="true"]').dataset.id), id });
    assert.deepEqual(stored.map((e) => e.attachments), [[id]]);
    await A.context().setOffline(false);
    await waitOnline(A);
    await until(B, (id) => document.querySelector(`#message-list .att-image[data-media="${id}"] img`)?.naturalWidth === 48, id, 'the attachment sent from the outbox did not arrive');
    await B.reload();
    await waitOnline(B);
    await convNamed(B, users.alice.username).click();
    await until(B, (id) => document.querySelector(`#message-list .att-image[data-media="${id}"] img`)?.naturalWidth === 48, id, 'the history does not show the attachment');
    await loaded(B);
  });

  step('exports everything the server keeps of the user as a download', async () => {
    const download = A.waitForEvent('download', { timeout: WAIT });
    await A.getByRole('button', { name: 'Export' }).click();
    const file = await download;
    assert.match(file.suggestedFilename(), new RegExp(`^herald-export-${users.alice.username}-\\d+\\.zip$`));
    const bytes = readFileSync(await file.path());
    assert.equal(bytes.subarray(0, 4).toString('latin1'), 'PK\x03\x04', 'a ZIP archive');
    // The names are stored as they are in the archive's headers, whatever the compression of the contents.
    const text = bytes.toString('latin1');
    for (const name of ['README.txt', 'account.json', 'conversations.json', 'media.json', 'conversations/']) {
      assert.ok(text.includes(name), `the archive holds ${name}`);
    }
    assert.ok(text.includes('PK\x05\x06'), 'and ends with its directory');
    await A.locator('#toast', { hasText: 'saved as a download' }).waitFor({ timeout: WAIT });
  });

  step('logs out: the device is gone on the server and in the browser', async () => {
    const refresh = await A.evaluate(() => globalThis.herald.session.refresh_token);
    await A.getByRole('button', { name: 'Log out' }).click();
    await A.locator('#auth-form').waitFor({ timeout: WAIT });
    assert.equal(await A.evaluate(() => localStorage.getItem('herald:session')), null);
    const r = await fetch(`${base}/api/v1/sessions/refresh`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ refresh_token: refresh }) });
    assert.equal(r.status, 401, 'the logged-out device cannot refresh');
    await screenshot(A, 'alice-logged-out');
  });
});

describe('herald-client.js in Node', () => {
  it('makes client_msg_ids that are UUIDv7s and grow with time', STEP, async () => {
    const first = newClientMsgId();
    await new Promise((resolve) => setTimeout(resolve, 5));
    const second = newClientMsgId();
    for (const id of [first, second]) {
      assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/, id);
      const ms = parseInt(id.replace(/-/g, '').slice(0, 12), 16);
      assert.ok(Math.abs(ms - Date.now()) < 60_000, `${id} carries the time: ${new Date(ms).toISOString()}`);
    }
    assert.ok(first < second, `${first} sorts before ${second}`);
  });

  it('backs off 1, 2, 4 … 30 s with jitter, and honours reconnect.after_ms', STEP, async () => {
    for (const [attempt, ceiling] of [[0, 1000], [1, 2000], [2, 4000], [3, 8000], [4, 16000], [5, 30000], [9, 30000], [60, 30000]]) {
      assert.equal(backoffDelay(attempt, () => 0), ceiling / 2, `attempt ${attempt}, least`);
      assert.equal(backoffDelay(attempt, () => 1), ceiling, `attempt ${attempt}, most`);
    }
    // A fake socket: hello, synced, then the server's shutdown sequence (reconnect, close 1012).
    const sockets = [];
    class FakeSocket {
      static refuse = false;
      constructor(url) {
        this.url = url;
        this.readyState = 0;
        this.sent = [];
        sockets.push(this);
        setTimeout(() => {
          if (FakeSocket.refuse) return this.onclose?.({ code: 1006 });
          this.readyState = 1;
          this.onopen?.();
        }, 0);
      }
      send(data) {
        const f = JSON.parse(data);
        this.sent.push(f);
        if (f.type === 'auth') this.onmessage?.({ data: JSON.stringify({ type: 'hello', v: 1, user_id: 'u', device_id: 'd', pos: 7, heartbeat_ms: 30000 }) });
        if (f.type === 'sync') this.onmessage?.({ data: JSON.stringify({ type: 'synced', pos: 7 }) });
      }
      close() {
        this.readyState = 3;
      }
    }
    const storage = memoryStorage();
    storage.setItem('herald:session', JSON.stringify({ user: { id: 'u', username: 'u' }, device_id: 'd', access_token: 't', access_expires_at: Date.now() + 3_600_000, refresh_token: 'r' }));
    const client = new HeraldClient({ baseUrl: 'http://127.0.0.1:9', storage, WebSocket: FakeSocket, random: () => 1 });
    const statuses = [];
    client.on('status', (s) => statuses.push(s));
    try {
      client.connect();
      await new Promise((r) => setTimeout(r, 20));
      assert.equal(client.status, 'online');
      assert.equal(sockets[0].url, 'ws://127.0.0.1:9/ws?v=1&user=u', 'the user id rides along as the routing hint');
      assert.deepEqual(sockets[0].sent.map((f) => f.type), ['auth', 'sync']);
      assert.equal(sockets[0].sent[1].since, 7, 'a new device syncs from hello.pos');
      sockets[0].onmessage({ data: JSON.stringify({ type: 'reconnect', after_ms: 1234 }) });
      sockets[0].onclose({ code: 1012, reason: 'server restarting: reconnect' });
      assert.equal(statuses.at(-1).state, 'reconnecting');
      assert.equal(statuses.at(-1).retryInMs, 1234, 'the first attempt waits reconnect.after_ms');
      client.reconnectNow();
      await new Promise((r) => setTimeout(r, 20));
      assert.equal(sockets.length, 2);
      assert.equal(sockets[1].sent[1].since, 7, 'the reconnect resumes from the stored position');
      sockets[1].onclose({ code: 1006 });
      assert.equal(statuses.at(-1).retryInMs, 1000, 'then the backoff (attempt 0 after synced: 1 s at most)');
      FakeSocket.refuse = true; // attempts that fail before hello: each wait doubles
      client.reconnectNow();
      await new Promise((r) => setTimeout(r, 20));
      assert.equal(statuses.at(-1).retryInMs, 2000);
      client.reconnectNow();
      await new Promise((r) => setTimeout(r, 20));
      assert.equal(statuses.at(-1).retryInMs, 4000);
      assert.equal(sockets.length, 4);
    } finally {
      client.disconnect();
    }
  });

  it('sends through the outbox, gets its ack, and resumes from its position after a dropped socket', STEP, async () => {
    const events = [];
    const make = (storage) =>
      new HeraldClient({ baseUrl: base, storage, WebSocket, reload: async () => {} });
    const storage = memoryStorage();
    const carol = make(storage);
    await carol.login(users.carol.username, users.carol.password, 'node test');
    const alice = make(memoryStorage());
    await alice.login(users.alice.username, users.alice.password, 'node test');
    const { conversation } = await alice.createDirect(carol.user.id);
    carol.on('event', ({ pos, event }) => events.push({ pos, event }));
    const online = (c) => new Promise((r) => (c.online ? r() : c.on('status', (s) => s.state === 'online' && r())));
    try {
    carol.connect();
    alice.connect();
    await Promise.all([online(carol), online(alice)]);

    const acked = new Promise((r) => alice.on('ack', r));
    const entry = alice.send(conversation.id, 'from node 1');
    assert.equal(entry.state, 'pending');
    const { ack } = await acked;
    assert.ok(ack === null || ack.seq === 1);
    assert.equal(alice.outbox.length, 0);

    // Carol's socket drops; Alice sends twice; Carol reconnects (backoff: 0.5–1 s) and gets both, in order.
    const pos = carol.lastPos;
    carol.interrupt('test');
    assert.equal(carol.status, 'reconnecting');
    alice.send(conversation.id, 'from node 2');
    alice.send(conversation.id, 'from node 3');
    await new Promise((r) => setTimeout(r, 300));
    await online(carol);
    const deadline = Date.now() + WAIT;
    while (events.filter((e) => e.event.kind === 'message').length < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    const texts = events.filter((e) => e.event.kind === 'message').map((e) => e.event.message.body);
    assert.deepEqual(texts, ['from node 1', 'from node 2', 'from node 3']);
    assert.ok(carol.lastPos > pos);
    const positions = events.map((e) => e.pos);
    assert.deepEqual(positions, [...new Set(positions)].sort((x, y) => x - y), 'events once each, in feed order');
    assert.equal(storage.getItem(`herald:${carol.user.id}:pos`), String(carol.lastPos));
    } finally {
      carol.disconnect();
      alice.disconnect();
    }
  });
});
