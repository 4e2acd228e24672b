// Drives the web client in Debian's chromium (playwright-core, never a downloaded browser) against
// a real `mqim serve`. Run by tests/web/test_browser.py, which passes everything in MQIM_E2E (JSON):
// {scenario, base_url, ws_port, out_dir, web_dir, users: {name: {user, password}}}.
// Exit code 0 when the scenario held; progress and failures go to stderr.
import { createRequire } from 'node:module';
import net from 'node:net';
import path from 'node:path';

const cfg = JSON.parse(process.env.MQIM_E2E);
const require = createRequire(path.join(cfg.web_dir, 'package.json'));
const { chromium } = require('playwright-core');

const STEP_MS = 15000; // bound on every wait for a DOM state
const started = Date.now();
const log = (...args) => console.error(`[${cfg.scenario} +${Date.now() - started}ms]`, ...args);

// A TCP relay between one page and the WebSocket listener, so the test can cut the page's socket
// for real (and refuse reconnects) while the other pages stay connected.
function relay(upstreamPort) {
  const sockets = new Set();
  let offline = false;
  const server = net.createServer((client) => {
    if (offline) {
      client.destroy();
      return;
    }
    const upstream = net.connect(upstreamPort, '127.0.0.1');
    sockets.add(client);
    sockets.add(upstream);
    client.pipe(upstream);
    upstream.pipe(client);
    const close = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('error', close).on('close', close);
    upstream.on('error', close).on('close', close);
  });
  return {
    listen: () => new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server.address().port))),
    cut() {
      offline = true;
      for (const s of sockets) s.destroy();
      sockets.clear();
    },
    restore() {
      offline = false;
    },
    close() {
      this.cut(); // server.close() waits for open connections
      return new Promise((resolve) => server.close(resolve));
    },
  };
}

class User {
  constructor(name, page) {
    this.name = name;
    this.page = page;
  }

  get id() {
    return cfg.users[this.name].user;
  }

  async login() {
    const { page } = this;
    await page.goto(cfg.base_url);
    await page.getByLabel('User', { exact: true }).fill(this.id);
    await page.getByLabel('Password or token').fill(cfg.users[this.name].password);
    await page.getByRole('button', { name: 'Log in' }).click();
    await this.online();
  }

  async online() {
    await this.page.locator('body[data-connection="online"]').waitFor({ timeout: STEP_MS });
  }

  conv(id) {
    return this.page.locator(`#conv-list li[data-conv="${id}"]`);
  }

  async open(id) {
    await this.conv(id).getByRole('button').click();
    await this.page.locator(`#messages[data-conv="${id}"]`).waitFor({ state: 'attached', timeout: STEP_MS });
  }

  async chatWith(peer) {
    await this.page.getByLabel('Start a chat with user').fill(peer);
    await this.page.getByRole('button', { name: 'Chat', exact: true }).click();
  }

  async type(text) {
    await this.page.locator('#composer-input').pressSequentially(text, { delay: 15 });
  }

  async send(text) {
    const input = this.page.locator('#composer-input');
    if ((await input.inputValue()) !== text) await input.fill(text);
    await input.press('Enter');
  }

  message(text) {
    return this.page.locator('#messages li.msg').filter({ has: this.page.locator('p.body', { hasText: text }) });
  }

  async waitState(text, state) {
    await this.message(text).locator(`.state[data-state="${state}"]`).waitFor({ timeout: STEP_MS });
  }

  async waitText(text) {
    await this.message(text).first().waitFor({ timeout: STEP_MS });
  }

  async count(text) {
    return this.page.locator('#messages li.msg p.body').evaluateAll(
      (nodes, t) => nodes.filter((n) => n.textContent === t).length,
      text,
    );
  }

  async unread(id, n) {
    await this.conv(id).locator(`.badge[data-unread="${n}"]`).waitFor({ timeout: STEP_MS });
  }

  async typingIn(id) {
    await this.conv(id).locator('.conv-preview.is-typing').waitFor({ timeout: STEP_MS });
  }

  async shot(prefix) {
    const file = path.join(cfg.out_dir, `${prefix}-${this.name}.png`);
    await this.page.screenshot({ path: file, fullPage: false });
    return file;
  }
}

function expectEqual(actual, expected, what) {
  if (actual !== expected) throw new Error(`${what}: expected ${expected}, got ${actual}`);
}

const cleanups = []; // after the screenshots: a relay closed earlier would show the offline banner
const directConv = (a, b) => (a < b ? `d:${a}:${b}` : `d:${b}:${a}`);

async function newUser(browser, name, { viaRelay = null, phone = false } = {}) {
  const context = await browser.newContext({
    viewport: phone ? { width: 390, height: 780 } : { width: 1000, height: 700 },
  });
  const page = await context.newPage();
  page.on('console', (msg) => {
    if (msg.type() === 'error') log(`${name} console:`, msg.text());
  });
  page.on('pageerror', (err) => log(`${name} page error:`, err.message));
  if (viaRelay) {
    // This page's WebSocket goes through the relay: the config it is served names the relay.
    await page.route('**/config.json', (route) =>
      route.fulfill({ contentType: 'application/json', body: JSON.stringify({ v: 1, ws_url: `ws://127.0.0.1:${viaRelay}/` }) }),
    );
  }
  return new User(name, page);
}

// -- scenarios ------------------------------------------------------------------------------------

async function direct(browser, pages) {
  const link = relay(cfg.ws_port);
  const relayPort = await link.listen();
  const alice = await newUser(browser, 'alice', { viaRelay: relayPort });
  const bob = await newUser(browser, 'bob', { phone: true });
  pages.push(alice, bob);
  await alice.login();
  await bob.login();
  const conv = directConv(alice.id, bob.id);

  log('alice opens a chat with bob and types');
  await alice.chatWith(bob.id);
  await alice.type('hello bob');
  await bob.typingIn(conv);
  await alice.send('hello bob');
  await alice.waitText('hello bob');
  await bob.unread(conv, 1);
  await bob.conv(conv).locator('.conv-preview', { hasText: 'hello bob' }).waitFor({ timeout: STEP_MS });
  log('delivered before bob opens it');
  await alice.waitState('hello bob', 'delivered');
  await bob.open(conv);
  await bob.waitText('hello bob');
  await alice.waitState('hello bob', 'read');
  await bob.conv(conv).locator('.badge').waitFor({ state: 'detached', timeout: STEP_MS });
  await alice.conv(conv).locator('[data-presence="online"]').waitFor({ timeout: STEP_MS });

  log('alice goes offline, sends, comes back');
  link.cut();
  await alice.page.locator('body[data-connection="offline"]').waitFor({ timeout: STEP_MS });
  await alice.page.getByRole('status').filter({ hasText: 'Offline' }).waitFor({ timeout: STEP_MS });
  await alice.send('sent while offline');
  await alice.waitState('sent while offline', 'sending');
  link.restore();
  await alice.online();
  await bob.waitText('sent while offline');
  await alice.waitState('sent while offline', 'read');
  // A later message is a barrier: when bob has it, a duplicate of the earlier one would be there.
  await alice.send('after the reconnect');
  await bob.waitText('after the reconnect');
  expectEqual(await bob.count('sent while offline'), 1, "bob's copies of the offline message");
  expectEqual(await alice.count('sent while offline'), 1, "alice's copies of the offline message");

  log('bob replies; a reload restores the conversation through sync');
  await bob.send('hi alice');
  await alice.waitText('hi alice');
  await bob.page.reload();
  await bob.online();
  await bob.conv(conv).waitFor({ timeout: STEP_MS });
  await bob.open(conv);
  for (const text of ['hello bob', 'sent while offline', 'after the reconnect', 'hi alice']) await bob.waitText(text);
  expectEqual(await bob.count('sent while offline'), 1, "bob's copies after the reload");

  log('edit, recall, delete for me');
  await alice.message('hello bob').getByRole('button', { name: 'Edit message' }).click();
  await alice.send('hello bob, edited');
  await bob.message('hello bob, edited').locator('.edited').waitFor({ timeout: STEP_MS });
  await alice.message('after the reconnect').getByRole('button', { name: 'Recall message' }).click();
  await bob.waitText('Message recalled');
  await bob.message('sent while offline').getByRole('button', { name: 'Delete message for me' }).click();
  await bob.message('sent while offline').waitFor({ state: 'detached', timeout: STEP_MS });
  await alice.page.reload();
  await alice.online();
  await alice.open(conv);
  await alice.waitText('sent while offline'); // deleted for bob only
  await alice.waitText('hello bob, edited');
  log('done');
  cleanups.push(() => link.close());
}

async function group(browser, pages) {
  const link = relay(cfg.ws_port);
  const relayPort = await link.listen();
  const alice = await newUser(browser, 'alice', { viaRelay: relayPort });
  const bob = await newUser(browser, 'bob');
  const carol = await newUser(browser, 'carol', { phone: true });
  pages.push(alice, bob, carol);
  for (const u of [alice, bob, carol]) await u.login();
  const groupId = `team-${alice.id.split('-').pop()}`;
  const conv = `g:${groupId}`;

  log('alice creates a group with bob and carol');
  await alice.page.getByText('New group').click();
  await alice.page.getByLabel('Group id').fill(groupId);
  await alice.page.getByLabel('Name', { exact: true }).fill('The Team');
  await alice.page.getByLabel('Members (comma separated)').fill(`${bob.id}, ${carol.id}`);
  await alice.page.getByRole('button', { name: 'Create group' }).click();
  await alice.page.locator(`#messages[data-conv="${conv}"]`).waitFor({ state: 'attached', timeout: STEP_MS });
  await bob.conv(conv).waitFor({ timeout: STEP_MS });
  await carol.conv(conv).waitFor({ timeout: STEP_MS });

  await alice.type('hello team');
  await bob.typingIn(conv);
  await alice.send('hello team');
  await bob.unread(conv, 1);
  await carol.unread(conv, 1);
  await alice.waitState('hello team', 'delivered');
  await bob.open(conv);
  await carol.open(conv);
  await bob.waitText('hello team');
  await carol.waitText('hello team');
  await alice.waitState('hello team', 'read');

  log('alice goes offline, sends to the group, comes back');
  link.cut();
  await alice.page.locator('body[data-connection="offline"]').waitFor({ timeout: STEP_MS });
  await alice.send('group while offline');
  await alice.waitState('group while offline', 'sending');
  link.restore();
  await alice.online();
  await alice.send('group barrier');
  for (const u of [bob, carol]) {
    await u.waitText('group barrier');
    expectEqual(await u.count('group while offline'), 1, `${u.name}'s copies of the offline message`);
  }

  log('bob answers; carol reloads');
  await bob.send('hi from bob');
  await alice.waitText('hi from bob');
  await carol.waitText('hi from bob');
  await carol.page.reload();
  await carol.online();
  await carol.open(conv);
  for (const text of ['hello team', 'group while offline', 'group barrier', 'hi from bob']) await carol.waitText(text);
  cleanups.push(() => link.close());
}

async function interop(browser, pages) {
  // The paho side is tests/web/test_browser.py: it answers "from paho" once it has "from the page".
  const alice = await newUser(browser, 'alice');
  pages.push(alice);
  await alice.login();
  const dave = cfg.users.dave.user;
  await alice.chatWith(dave);
  await alice.send('from the page');
  await alice.waitState('from the page', 'delivered');
  await alice.waitText('from paho');
}

const SCENARIOS = { direct, group, interop };

async function main() {
  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    headless: true,
    timeout: 30000,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      // No --user-data-dir here: playwright refuses it for launch() and gives chromium a fresh
      // temporary profile itself (--user-data-dir=<new temp dir>), removed on close.
    ],
  });
  const pages = [];
  let failed = null;
  try {
    await SCENARIOS[cfg.scenario](browser, pages);
  } catch (err) {
    failed = err;
  }
  log('screenshots');
  for (const u of pages) {
    try {
      const file = await u.shot(failed ? `${cfg.scenario}-failed` : cfg.scenario);
      console.log(`screenshot ${file}`);
    } catch (err) {
      log(`no screenshot of ${u.name}: ${err.message}`);
    }
  }
  log('closing');
  for (const cleanup of cleanups) await cleanup();
  await browser.close();
  if (failed) {
    log('FAILED:', failed.stack || failed.message);
    process.exitCode = 1;
  } else {
    log('ok');
  }
}

await main();
