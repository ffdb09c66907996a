// Drives the estate-gateway web console in a real headless Chromium (Debian's
// /usr/bin/chromium) through playwright-core. Run by tests/console.rs, which starts the
// real gateway and publishes the sensor events; the two talk over stdin/stdout lines:
//
//   script → test:  READY            page loaded, status and devices rendered, live
//   test → script:  (publishes a SMOKE.ALARM on the broker)
//   script → test:  ALERT <id>       the alert appeared without a reload
//   operator mode (no buttons before a sign-in; a viewer signs in and is refused a
//   write, the operator's write without the CSRF token is refused, then):
//   script → test:  ACKED <id>       acknowledged by clicking the button
//   test → script:  NEXT             (after checking the alert on the API)
//   script → test:  CLOSED <id>      closed through the dialog
//   script → test:  SIGNEDOUT        signed out on the page: the form is back
//   readonly mode:
//   test → script:  (publishes the alarm again, then its end: `cleared`)
//   script → test:  FOLDED           the row shows ×2 and the cleared badge, live
//   restart mode (the test restarts the gateway on the same address):
//   script → test:  DOWN             the page noticed the stream dropped
//   test → script:  (publishes a second alarm while the gateway is down, restarts it)
//   script → test:  ALERT2 <id>      the page reconnected by itself and shows it
//   rollcall mode (issue 14; the test calls the gateway's duty desk in its process):
//   test → script:  (starts a roll call with a 2-minute deadline)
//   script → test:  ROLLCALL <id>    shown at once, loud, at the top, counting down
//   script → test:  ANSWERED <id>    answered on the page (signed in, button pressed)
//   test → script:  (checks the desk's result, starts a roll call with a short deadline)
//   script → test:  MISSED <id>      shown as missed once its deadline passed
//   manage mode (issue 16, alarm management):
//   test → script:  (a door forced open and closed again CONSOLE_ACTIVATIONS times)
//   script → test:  CHATTERING <id>  one row, its chattering badge counting them all
//   script → test:  SHELVED <id>     shelved from the page with a reason: greyed, who, why
//   script → test:  UNSHELVED <id>   back by itself once its (3-second) shelf time is up
//   phone mode (390×844, touch; signed in on the page before READY):
//   test → script:  (publishes a SMOKE.ALARM on the broker)
//   script → test:  ALERT <id>       the row and both its buttons fit the screen
//   script → test:  ACKED <id>       acknowledged by tapping the button
//   (then the language switch, kept over a reload)
//   signin mode (api.anonymous_read = "none"): only the form until a sign-in, then the
//   lists and the live stream; signing out empties them again; then DONE
//   script → test:  SCREENSHOT <path>
//   script → test:  DONE
//
// Any failed check prints `FAIL <reason>` and exits 1.
//
// Every mode first checks the sound banner: audio is blocked until a gesture (Chromium's
// own policy, named in the launch flags), so the page must say so, and one tap ends it.
//
// Environment: CONSOLE_URL (http://127.0.0.1:PORT/), CONSOLE_MODE (operator | readonly |
// restart | rollcall | manage | phone | signin), CONSOLE_ACTIVATIONS and
// CONSOLE_SHELVE_REASON (manage mode), CONSOLE_DEVICE2 (restart mode: the second alarm's
// device), CONSOLE_OPERATOR and CONSOLE_PASSWORD (operator, phone, rollcall and manage
// modes: the account that signs in on the page), CONSOLE_VIEWER (operator mode: a viewer
// account, same password), CONSOLE_GATEWAY_ID,
// CONSOLE_DEVICE (the device that will raise the alarm; silent until READY),
// CONSOLE_OFFLINE_DEVICE (optional: a device that goes offline; it must end up on top),
// CONSOLE_EXPECT_WHERE (location text the alert row must show), CONSOLE_SCREENSHOT
// (png path), CHROMIUM (default /usr/bin/chromium).

import { createInterface } from 'node:readline';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { chromium } from 'playwright-core';

const env = (name, fallback) => {
  const v = process.env[name] ?? fallback;
  if (v === undefined) fail(`${name} is not set`);
  return v;
};

function fail(reason) {
  process.stdout.write(`FAIL ${reason}\n`);
  process.exit(1);
}

function say(line) {
  process.stdout.write(`${line}\n`);
}

const lines = createInterface({ input: process.stdin });
const pending = [];
const waiters = [];
lines.on('line', (l) => (waiters.length ? waiters.shift()(l) : pending.push(l)));
const nextLine = () => new Promise((resolve) => (pending.length ? resolve(pending.shift()) : waiters.push(resolve)));

function check(cond, what) {
  if (!cond) throw new Error(what);
}

const url = env('CONSOLE_URL');
const mode = env('CONSOLE_MODE', 'operator');
const gatewayId = env('CONSOLE_GATEWAY_ID');
const expectWhere = env('CONSOLE_EXPECT_WHERE');
const deviceId = env('CONSOLE_DEVICE');
const shot = env('CONSOLE_SCREENSHOT');
const STEP = 30000; // every wait has a deadline
/** The phone of phone mode, in CSS px (an iPhone 12–15 in portrait). */
const PHONE = { width: 390, height: 844 };

const browser = await chromium.launch({
  executablePath: env('CHROMIUM', '/usr/bin/chromium'),
  headless: true,
  // Web Audio starts only after a tap on the page (Chromium's default policy, stated here
  // so the test does not depend on it; `user-gesture-required` would let Web Audio start).
  args: [
    '--autoplay-policy=document-user-activation-required',
    ...(process.getuid && process.getuid() === 0 ? ['--no-sandbox'] : []),
  ],
});

async function main() {
  // A tablet-sized window, or a phone.
  const context = await browser.newContext(mode === 'phone'
    ? { viewport: PHONE, isMobile: true, hasTouch: true, deviceScaleFactor: 2, locale: 'zh-CN' }
    : { viewport: { width: 1280, height: 800 }, locale: 'zh-CN' });
  const page = await context.newPage();
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  page.on('console', (m) => {
    // While the gateway restarts, the browser logs its refused connections: expected.
    const refused = mode === 'restart' && /Failed to load resource|ERR_CONNECTION|EventSource/.test(m.text());
    // Operator mode makes the gateway refuse two writes on purpose (403), which the
    // browser logs.
    const forbidden = mode === 'operator' && /status of 403/.test(m.text());
    if (m.type() === 'error' && forbidden) return;
    if (m.type() === 'error' && !refused) pageErrors.push(m.text());
  });
  const outside = [];
  page.on('request', (r) => {
    if (!r.url().startsWith(new URL(url).origin)) outside.push(r.url());
  });

  await page.goto(url);
  if (mode === 'signin') {
    await signInFirst(page);
    check(outside.length === 0, `requests beyond the gateway: ${outside.join(', ')}`);
    check(pageErrors.length === 0, `errors in the page: ${pageErrors.join(' | ')}`);
    say('DONE');
    return;
  }
  await page.waitForSelector('body[data-ready="1"]', { timeout: STEP });
  // Marks this document: if the page reloaded, the mark is gone.
  await page.evaluate(() => { window.__sameDocument = 'console-test'; });

  // Status: ids, live stream, both MQTT links up, a 60-point rate chart.
  await page.waitForFunction(
    (gw) => document.getElementById('gateway-id').textContent.includes(gw),
    gatewayId,
    { timeout: STEP },
  );
  await page.waitForSelector('#live[data-state="up"]', { timeout: STEP });
  await page.waitForSelector('#ingest[data-state="up"]', { timeout: STEP });
  await page.waitForSelector('#uplink[data-state="up"]', { timeout: STEP });
  const points = await page.$eval('#rate-line', (l) => l.getAttribute('points').trim().split(/\s+/).length);
  check(points === 60, `rate chart has ${points} points, want 60`);
  const backlog = await page.textContent('#backlog');
  check(/Backlog/.test(backlog) && /alarms \d+/.test(backlog), `backlog pill: ${backlog}`);

  // Devices: the API's list, offline ones first, every one shown.
  const api = await page.evaluate(async () => (await fetch('/api/devices')).json());
  check(api.devices.length > 0, 'the gateway lists no devices');
  await page.waitForFunction(
    (n) => document.querySelectorAll('#devices li.device').length === n,
    api.devices.length,
    { timeout: STEP },
  );
  const offlineDevice = process.env.CONSOLE_OFFLINE_DEVICE;
  if (offlineDevice) {
    // It stopped sending heartbeats: it moves to the top, and the header says so.
    await page.waitForSelector(`#devices li.device:first-child[data-device-id="${offlineDevice}"][data-status="offline"]`, { timeout: STEP });
    await page.waitForSelector('#offline-pill:not([hidden])', { timeout: STEP });
  }
  const shown = await devicesShown(page);
  const before = shown.find(([d]) => d === deviceId);
  check(before && before[1] !== 'online', `${deviceId} should not be online before it reports: ${JSON.stringify(before)}`);

  // Mode-specific chrome.
  if (mode === 'readonly') {
    await page.waitForSelector('#readonly-banner', { state: 'visible', timeout: STEP });
    check(await page.isHidden('#login'), 'read-only: the sign-in form is shown');
  } else {
    check(await page.isHidden('#readonly-banner'), 'the read-only banner shows although an account may act');
    await page.waitForSelector('#login', { state: 'visible', timeout: STEP });
  }

  // Sound is blocked until a gesture, and the page says so (in both languages) until
  // one tap turns it on: the banner in phone mode, the header button otherwise.
  await soundBanner(page);
  if (mode === 'phone') {
    await page.tap('#sound-banner');
  } else {
    await page.click('#sound-btn');
  }
  await soundIsOn(page);

  if (mode === 'phone') {
    await phone(page);
    check(outside.length === 0, `requests beyond the gateway: ${outside.join(', ')}`);
    check(pageErrors.length === 0, `errors in the page: ${pageErrors.join(' | ')}`);
    say('DONE');
    return;
  }

  say('READY');

  if (mode === 'manage') {
    await manage(page);
    check(await page.evaluate(() => window.__sameDocument === 'console-test'), 'the page reloaded');
    check(outside.length === 0, `requests beyond the gateway: ${outside.join(', ')}`);
    check(pageErrors.length === 0, `errors in the page: ${pageErrors.join(' | ')}`);
    say('DONE');
    return;
  }

  if (mode === 'rollcall') {
    await signIn(page, env('CONSOLE_OPERATOR'), 'operator');
    await rollCalls(page);
    check(await page.evaluate(() => window.__sameDocument === 'console-test'), 'the page reloaded');
    check(outside.length === 0, `requests beyond the gateway: ${outside.join(', ')}`);
    check(pageErrors.length === 0, `errors in the page: ${pageErrors.join(' | ')}`);
    say('DONE');
    return;
  }

  // The test publishes a SMOKE.ALARM now; it must appear without a reload.
  const row = page.locator('#alerts li.alert[data-severity="1"]').first();
  await row.waitFor({ state: 'visible', timeout: STEP });
  const id = await row.getAttribute('data-alert-id');
  check(await page.evaluate(() => window.__sameDocument === 'console-test'), 'the page reloaded');
  const text = await row.innerText();
  check(text.includes('紧急 Critical'), `severity label missing: ${text}`);
  check(text.includes('SMOKE.ALARM'), `code missing: ${text}`);
  // The Chinese label comes from GET /api/codes (the gateway's taxonomy).
  check(text.includes('烟感报警 Smoke detected'), `Chinese label missing: ${text}`);
  check(text.includes(expectWhere), `location "${expectWhere}" not spelled out: ${text}`);
  check(/ago/.test(text) && /前/.test(text), `age missing: ${text}`);
  check((await row.getAttribute('data-status')) === 'active', 'a new alert is not active');
  // The audible cue fired for the new critical alert.
  await page.waitForSelector('body[data-alert-beeps]', { timeout: STEP });
  // The same report brought the device online and moved the event-rate chart, live.
  await page.waitForSelector(`#devices li.device[data-device-id="${deviceId}"][data-status="online"]`, { timeout: STEP });
  await page.waitForFunction(() => Number(document.getElementById('rate-max').textContent) >= 1, null, { timeout: STEP });
  await devicesShown(page);
  say(`ALERT ${id}`);

  if (mode === 'restart') {
    await page.waitForSelector('#live[data-state="down"]', { timeout: STEP });
    say('DOWN');
    const second = page.locator(`#alerts li.alert[data-severity="1"]:not([data-alert-id="${id}"])`);
    await second.waitFor({ state: 'visible', timeout: 2 * STEP });
    await page.waitForSelector('#live[data-state="up"]', { timeout: STEP });
    const text2 = await second.innerText();
    check(text2.includes(env('CONSOLE_DEVICE2')), `second alarm is not from ${env('CONSOLE_DEVICE2')}: ${text2}`);
    check((await page.locator(`li.alert[data-alert-id="${id}"]`).count()) === 1, 'the first alarm vanished after the restart');
    say(`ALERT2 ${await second.getAttribute('data-alert-id')}`);
    await screenshot(page);
  } else if (mode === 'readonly') {
    // A repeat folds into the same row (count), and the end of the condition marks it
    // cleared; it stays open until someone closes it.
    await page.waitForFunction(
      (alertId) => {
        const li = document.querySelector(`li.alert[data-alert-id="${alertId}"]`);
        return li && !li.querySelector('.repeat').hidden && li.querySelector('.repeat').textContent.startsWith('×2')
          && !li.querySelector('.cleared').hidden;
      },
      id,
      { timeout: STEP },
    );
    check((await page.locator('#alerts li.alert').count()) === 1, 'the repeat opened a second row');
    say('FOLDED');
    check((await row.locator('button.ack:visible, button.close:visible').count()) === 0, 'read-only page shows action buttons');
    check((await page.locator('button.ack:visible').count()) === 0, 'read-only page shows an acknowledge button');
    await screenshot(page);
  } else {
    // Nobody signed in: no buttons. A viewer signs in: still none, and a write sent from
    // the page with the viewer's session (and its CSRF token) is refused.
    check(await row.locator('button.ack').isHidden(), 'an acknowledge button shows before anyone signed in');
    await signIn(page, env('CONSOLE_VIEWER'), 'viewer');
    check(await row.locator('button.ack').isHidden(), 'a viewer is offered the acknowledge button');
    const asViewer = await write(page, `/api/alerts/${id}/ack`, true);
    check(asViewer === 403, `a viewer's write answered ${asViewer}, want 403`);
    await signOut(page);
    // The operator: a write without the CSRF token (what a page of another site could
    // make the browser send with the cookie) is refused too.
    await signIn(page, env('CONSOLE_OPERATOR'), 'operator');
    const noCsrf = await write(page, `/api/alerts/${id}/ack`, false);
    check(noCsrf === 403, `a write without the CSRF token answered ${noCsrf}, want 403`);
    check((await row.getAttribute('data-status')) === 'active', 'a refused write changed the alert');
    await row.locator('button.ack').waitFor({ state: 'visible', timeout: STEP });
    await row.locator('button.ack').click();
    await page.waitForSelector(`li.alert[data-alert-id="${id}"][data-status="acknowledged"]`, { timeout: STEP });
    const handled = await row.locator('.handled').innerText();
    check(handled.includes(env('CONSOLE_OPERATOR')), `acknowledged-by missing: ${handled}`);
    check(await row.locator('button.ack').isHidden(), 'acknowledge button still shown');
    await screenshot(page);
    say(`ACKED ${id}`);
    const go = await nextLine();
    check(go === 'NEXT', `unexpected line from the test: ${go}`);

    // Close: the dialog asks for a disposition and a note.
    await row.locator('button.close').click();
    await page.waitForSelector('#close-dialog[open]', { timeout: STEP });
    await page.check('#close-form input[value="test"]');
    await page.fill('#close-note', 'console e2e: detector test');
    await page.click('#close-confirm');
    await page.waitForSelector(`li.alert[data-alert-id="${id}"]`, { state: 'detached', timeout: STEP });
    check(await page.isHidden('#close-dialog'), 'close dialog still open');
    say(`CLOSED ${id}`);
    await signOut(page);
    say('SIGNEDOUT');
  }

  check(await page.evaluate(() => window.__sameDocument === 'console-test'), 'the page reloaded');
  check(outside.length === 0, `requests beyond the gateway: ${outside.join(', ')}`);
  check(pageErrors.length === 0, `errors in the page: ${pageErrors.join(' | ')}`);
  say('DONE');
}

/** Signs in with the page's form as `name` (CONSOLE_PASSWORD); waits until the page
 * shows who is signed in, with `role`. */
async function signIn(page, name, role) {
  await page.waitForSelector('#login', { state: 'visible', timeout: STEP });
  await page.fill('#operator-input', name);
  await page.fill('#password-input', env('CONSOLE_PASSWORD'));
  await page.click('#login-btn');
  await page.waitForSelector(`body[data-role="${role}"]`, { timeout: STEP });
  await page.waitForSelector('#session', { state: 'visible', timeout: STEP });
  const shown = await page.textContent('#operator-name');
  check(shown === name, `signed in as ${JSON.stringify(shown)}, want ${JSON.stringify(name)}`);
  check(await page.isHidden('#login'), 'the sign-in form stays after signing in');
}

/** Signin mode: reading needs a sign-in, so the page shows only the form (no data, no
 * stream) until the operator signs in; then it loads and goes live; signing out empties
 * it again. */
async function signInFirst(page) {
  await page.waitForSelector('#login', { state: 'visible', timeout: STEP });
  check(await page.evaluate(() => document.body.dataset.ready !== '1'), 'the page loaded before a sign-in');
  check((await page.locator('#devices li.device').count()) === 0, 'devices shown before a sign-in');
  check((await page.getAttribute('#live', 'data-state')) !== 'up', 'a live stream before a sign-in');
  await signIn(page, env('CONSOLE_OPERATOR'), 'operator');
  await page.waitForSelector('body[data-ready="1"]', { timeout: STEP });
  await page.waitForSelector('#live[data-state="up"]', { timeout: STEP });
  await page.waitForFunction(() => document.querySelectorAll('#devices li.device').length > 0, null, { timeout: STEP });
  await screenshot(page);
  await signOut(page);
  await page.waitForFunction(() => document.querySelectorAll('#devices li.device').length === 0, null, { timeout: STEP });
  check((await page.getAttribute('#live', 'data-state')) !== 'up', 'still live after signing out');
}

/** Signs out with the header's button: the form is back and the gateway agrees. */
async function signOut(page) {
  await page.click('#logout-btn');
  await page.waitForSelector('#login', { state: 'visible', timeout: STEP });
  await page.waitForSelector('body[data-signed-in=""]', { timeout: STEP });
  const s = await page.evaluate(async () => (await fetch('/api/session')).json());
  check(s.signed_in === false, `still signed in after signing out: ${JSON.stringify(s)}`);
  // The rows redraw within a quarter second (batched): then no row offers an action.
  await page.waitForFunction(() => [...document.querySelectorAll('#alerts .ops')].every((o) => o.hidden), null, { timeout: STEP });
}

/** An acknowledge POSTed from the page with its session cookie, with or without the
 * session's CSRF token: the status. */
async function write(page, path, withCsrf) {
  return page.evaluate(async ([p, csrf]) => {
    const s = await (await fetch('/api/session')).json();
    const headers = { 'Content-Type': 'application/json' };
    if (csrf) headers['X-CSRF-Token'] = s.csrf_token;
    return (await fetch(p, { method: 'POST', headers, body: '{"note":""}' })).status;
  }, [path, withCsrf]);
}

/** The sound banner shows, fully on screen, while the page's AudioContext is suspended. */
async function soundBanner(page, { zh = true, en = true } = {}) {
  const banner = page.locator('#sound-banner');
  await banner.waitFor({ state: 'visible', timeout: STEP });
  await page.waitForSelector('body[data-sound="suspended"]', { timeout: STEP });
  const text = await banner.innerText();
  check(text.includes('声音已关闭') === zh && text.includes('Sound is off — tap to enable') === en,
    `sound banner text: ${JSON.stringify(text)}`);
  const box = await banner.boundingBox();
  const width = page.viewportSize().width;
  check(box && box.y >= 0 && box.y + box.height <= 200 && box.x >= 0 && box.x + box.width <= width + 0.5,
    `the sound banner is not at the top of the screen: ${JSON.stringify(box)}`);
}

/** After the tap: the context runs, the banner is gone, the header button says sound is on. */
async function soundIsOn(page) {
  await page.waitForSelector('body[data-sound="running"]', { timeout: STEP });
  await page.waitForSelector('#sound-banner', { state: 'hidden', timeout: STEP });
  await page.waitForSelector('#sound-btn[aria-pressed="true"]', { timeout: STEP });
}

/** `el`'s box lies inside the window: nothing cut off, nothing to scroll to. */
async function onScreen(page, el, what) {
  const box = await el.boundingBox();
  const { width, height } = page.viewportSize();
  check(box && box.x >= 0 && box.y >= 0 && box.x + box.width <= width + 0.5 && box.y + box.height <= height + 0.5,
    `${what} is not fully on the ${width}×${height} screen: ${JSON.stringify(box)}`);
  return box;
}

/** No horizontal scrolling: the page is no wider than the screen. (A phone browser
 * zooms out a page that is too wide and widens `innerWidth` to it: hence the screen's
 * own width and the zoom.) */
async function noSideways(page, when) {
  const w = await page.evaluate(() => ({
    doc: document.documentElement.scrollWidth, body: document.body.scrollWidth,
    window: window.innerWidth, zoom: window.visualViewport.scale,
  }));
  const screen = page.viewportSize().width;
  check(w.doc <= screen && w.body <= screen && w.window === screen && w.zoom === 1,
    `${when}: the page is wider than the ${screen} px screen: ${JSON.stringify(w)}`);
}

/** Manage mode: a chattering door is one row whose badge counts its activations; shelved
 * from the page with a reason it is greyed and says who and why, and it comes back by
 * itself when its time is up. */
async function manage(page) {
  const activations = Number(env('CONSOLE_ACTIVATIONS'));
  const badge = page.locator('#alerts li.alert .chattering:not([hidden])');
  await badge.waitFor({ state: 'visible', timeout: STEP });
  await page.waitForFunction(
    (n) => [...document.querySelectorAll('#alerts li.alert .chattering:not([hidden])')]
      .some((b) => b.textContent.endsWith(`×${n}`)),
    activations,
    { timeout: STEP },
  );
  check((await page.locator('#alerts li.alert').count()) === 1, 'the activations opened more than one row');
  const row = page.locator('#alerts li.alert').first();
  const id = await row.getAttribute('data-alert-id');
  const text = await badge.innerText();
  check(text.includes('频繁报警') && text.includes('Chattering'), `chattering badge text: ${text}`);
  await screenshot(page);
  say(`CHATTERING ${id}`);

  // Signed in with the operator's account, then shelved through the dialog.
  await signIn(page, env('CONSOLE_OPERATOR'), 'operator');
  await row.locator('button.shelve').click();
  await page.waitForSelector('#shelve-dialog[open]', { timeout: STEP });
  // The dialog offers 15 minutes and more; the test adds a 3-second choice to its list.
  await page.evaluate(() => {
    const select = document.querySelector('#shelve-form select[name="minutes"]');
    select.add(new Option('3 s', '0.05'));
    select.value = '0.05';
  });
  const reason = env('CONSOLE_SHELVE_REASON');
  await page.fill('#shelve-form input[name="reason"]', reason);
  await page.click('#shelve-confirm');
  await page.waitForSelector(`li.alert.shelved[data-alert-id="${id}"]`, { timeout: STEP });
  check(await page.isHidden('#shelve-dialog'), 'shelve dialog still open');
  const shelf = await row.locator('.shelf').innerText();
  check(shelf.includes(reason) && shelf.includes(env('CONSOLE_OPERATOR')), `the shelf line lacks who or why: ${shelf}`);
  check(await row.locator('.badge.shelved').isVisible(), 'no shelved badge');
  check((await row.locator('button.shelve').innerText()).includes('Unshelve'), 'the shelve button does not offer to unshelve');
  say(`SHELVED ${id}`);

  // Unshelved by the gateway when the time is up, live on the open page.
  await page.waitForSelector(`li.alert[data-alert-id="${id}"]:not(.shelved)`, { timeout: STEP });
  check(await row.locator('.shelf').isHidden(), 'the shelf line stayed after the unshelve');
  say(`UNSHELVED ${id}`);
}

/** Phone mode: sign in, the alert and its buttons in reach, acknowledge by tapping,
 * turning sound off brings the banner back, and the language switch sticks. */
async function phone(page) {
  // Signing in on the phone (the form fits on one line).
  await noSideways(page, 'before signing in');
  await onScreen(page, page.locator('#login-btn'), 'the sign-in button of the form');
  await page.fill('#operator-input', env('CONSOLE_OPERATOR'));
  await page.fill('#password-input', env('CONSOLE_PASSWORD'));
  await page.tap('#login-btn');
  await page.waitForSelector('#session', { state: 'visible', timeout: STEP });
  say('READY');

  // The test publishes a SMOKE.ALARM: its row is near the top, with both buttons on the
  // screen, side by side, tall enough to tap, and nothing wider than the phone.
  const row = page.locator('#alerts li.alert[data-severity="1"]').first();
  await row.waitFor({ state: 'visible', timeout: STEP });
  const id = await row.getAttribute('data-alert-id');
  await noSideways(page, 'with an alert');
  const box = await onScreen(page, row, 'the first alert');
  check(box.y < PHONE.height / 2, `the first alert starts ${box.y} px down, want the upper half`);
  for (const [sel, what] of [['button.ack', 'Acknowledge'], ['button.close', 'Close']]) {
    const b = await onScreen(page, row.locator(sel), what);
    check(b.height >= 44 && b.width >= 44, `${what} is ${b.width}×${b.height} px, too small to tap`);
    // Nothing covers it: it would take the tap (a trial performs every check but the tap).
    await row.locator(sel).tap({ trial: true, timeout: STEP });
  }
  await screenshot(page);
  say(`ALERT ${id}`);

  await row.locator('button.ack').tap();
  await page.waitForSelector(`li.alert[data-alert-id="${id}"][data-status="acknowledged"]`, { timeout: STEP });
  const handled = await row.locator('.handled').innerText();
  check(handled.includes(env('CONSOLE_OPERATOR')), `acknowledged-by missing: ${handled}`);
  await noSideways(page, 'after acknowledging');
  say(`ACKED ${id}`);

  // Turning sound off brings the banner back; one tap on it ends it again.
  await page.tap('#sound-btn');
  await soundBanner(page);
  await page.tap('#sound-banner');
  await soundIsOn(page);

  // English only: <html lang>, the page's own text and the rows' labels.
  await page.selectOption('#lang', 'en');
  await english(page, id);
  check(await page.evaluate(() => window.__sameDocument === 'console-test'), 'the language switch reloaded the page');
  // Kept over a reload; the new page's sound is blocked again, and the banner says so.
  await page.reload();
  await page.waitForSelector('body[data-ready="1"]', { timeout: STEP });
  check((await page.inputValue('#lang')) === 'en', 'the language choice was not kept');
  await english(page, id);
  await soundBanner(page, { zh: false, en: true });
  await noSideways(page, 'in English');
  // Chinese only.
  await page.selectOption('#lang', 'zh');
  await page.waitForSelector('html[lang="zh-CN"][data-lang="zh"]', { timeout: STEP });
  await page.waitForFunction(
    (alertId) => {
      const t = document.querySelector(`li.alert[data-alert-id="${alertId}"]`)?.innerText || '';
      return t.includes('紧急') && t.includes('已确认') && !/Critical|Acknowledged|ago/.test(t);
    },
    id,
    { timeout: STEP },
  );
  await soundBanner(page, { zh: true, en: false });
}

/** The page in English only, `id`'s row included. */
async function english(page, id) {
  await page.waitForSelector('html[lang="en"][data-lang="en"]', { timeout: STEP });
  check((await page.locator('h1').innerText()).trim() === 'Duty console', 'the title is not English only');
  await page.waitForFunction(
    (alertId) => {
      const t = document.querySelector(`li.alert[data-alert-id="${alertId}"]`)?.innerText || '';
      const pills = document.getElementById('links').innerText;
      // None of the row's Chinese labels (names are data: the operator's may be Chinese),
      // and no Chinese at all in the pills.
      return t.includes('Critical') && t.includes('Acknowledged') && /ago/.test(t)
        && !/紧急|已确认|秒前|分钟前|号楼/.test(t) && /Backlog/.test(pills) && !/[\u4e00-\u9fff]/.test(pills);
    },
    id,
    { timeout: STEP },
  );
}

/** Seconds left as the banner's countdown shows them (`剩余 01:54 left`). */
async function secondsLeft(banner) {
  const text = await banner.locator('.rc-countdown').innerText();
  const m = /(\d\d):(\d\d)/.exec(text);
  check(m, `no countdown in ${JSON.stringify(text)}`);
  return Number(m[1]) * 60 + Number(m[2]);
}

/** Rollcall mode: one roll call answered on the page, one left to be missed. */
async function rollCalls(page) {
  // It appears by itself, at once: no reload, nothing clicked.
  const banner = page.locator('#roll-calls .roll-call[data-status="pending"]').first();
  await banner.waitFor({ state: 'visible', timeout: STEP });
  const id = await banner.getAttribute('data-roll-call-id');
  const text = await banner.innerText();
  check(text.includes('查岗') && text.includes('Roll call'), `not labelled a roll call: ${text}`);
  check(text.includes('请值班员应答'), `the city's message is missing: ${text}`);
  // Loud: the cue sounded (sound was enabled at READY), and it is at the top of the
  // window, above everything else, however far the desk had scrolled.
  await page.waitForSelector('body[data-roll-call-beeps]', { timeout: STEP });
  const box = await banner.boundingBox();
  check(box && box.y < 250 && box.height > 60, `the banner is not prominent at the top: ${JSON.stringify(box)}`);
  // Counting down from the deadline (2 minutes).
  const first = await secondsLeft(banner);
  check(first > 60 && first <= 120, `countdown starts at ${first} s, want just under 120`);
  await page.waitForFunction(
    ([rid, s]) => {
      const el = document.querySelector(`.roll-call[data-roll-call-id="${rid}"] .rc-countdown`);
      const m = el && /(\d\d):(\d\d)/.exec(el.textContent);
      return m && Number(m[1]) * 60 + Number(m[2]) < s;
    },
    [id, first],
    { timeout: STEP },
  );
  await screenshot(page);
  say(`ROLLCALL ${id}`);

  // The person on duty (signed in) presses answer.
  await banner.locator('.rc-btn').click();
  const answered = page.locator(`.roll-call[data-roll-call-id="${id}"][data-status="answered"]`);
  await answered.waitFor({ state: 'visible', timeout: STEP });
  const result = await answered.locator('.rc-result').innerText();
  check(result.includes(env('CONSOLE_OPERATOR')), `the answer does not name who answered: ${result}`);
  say(`ANSWERED ${id}`);

  // The next one is left alone until its deadline passes.
  const second = page.locator(`#roll-calls .roll-call[data-status="pending"]:not([data-roll-call-id="${id}"])`);
  await second.waitFor({ state: 'visible', timeout: STEP });
  const id2 = await second.getAttribute('data-roll-call-id');
  const missed = page.locator(`.roll-call[data-roll-call-id="${id2}"][data-status="missed"]`);
  await missed.waitFor({ state: 'visible', timeout: STEP });
  const missedText = await missed.innerText();
  check(missedText.includes('未应答') && missedText.includes('Missed'), `not shown as missed: ${missedText}`);
  check(await missed.locator('.rc-answer').isHidden(), 'a missed roll call still offers an answer');
  await screenshot(page, 'missed');
  say(`MISSED ${id2}`);
}

/** The device rows as [id, status], checked to have the offline ones on top. */
async function devicesShown(page) {
  const shown = await page.$$eval('#devices li.device', (ls) => ls.map((l) => [l.dataset.deviceId, l.dataset.status]));
  const firstNotOffline = shown.findIndex(([, s]) => s !== 'offline');
  const lastOffline = shown.map(([, s]) => s).lastIndexOf('offline');
  check(firstNotOffline === -1 || lastOffline < firstNotOffline, `offline devices not on top: ${JSON.stringify(shown)}`);
  return shown;
}

async function screenshot(page, suffix = '') {
  const path = suffix ? shot.replace(/\.png$/, `-${suffix}.png`) : shot;
  mkdirSync(dirname(path), { recursive: true });
  await page.screenshot({ path, fullPage: true });
  say(`SCREENSHOT ${path}`);
}

try {
  await main();
} catch (e) {
  // One line, without the terminal colours playwright puts in its call logs.
  const text = String(e && e.message ? e.message : e).replace(/\x1b\[[0-9;]*m/g, '');
  process.stdout.write(`FAIL ${text.split('\n').join(' ')}\n`);
  await browser.close().catch(() => {});
  process.exit(1);
}
await browser.close();
process.exit(0);
