// Measures the console's main-thread cost in Debian's headless Chromium against a running
// gateway (e.g. `estate-gateway demo`, which prints the console URL):
//
//   node tests/console/measure.mjs http://127.0.0.1:PORT/ [cpu-slowdown, e.g. 6]
//
// Prints one JSON line: time to the first complete render (data-ready), and over 10 s of
// live updates the main thread's busy time (Task) split into script, layout and style,
// with layout and style-recalc counts. A slowdown factor emulates a slower CPU (a cheap
// tablet) through the DevTools protocol. A measurement, not a test: nothing is asserted.

import { chromium } from 'playwright-core';

const [url, slowdown = '1'] = process.argv.slice(2);
if (!url) {
  console.error('usage: node measure.mjs URL [cpu-slowdown]');
  process.exit(2);
}
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: process.getuid && process.getuid() === 0 ? ['--no-sandbox'] : [],
});
const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
const page = await context.newPage();
const cdp = await context.newCDPSession(page);
await cdp.send('Performance.enable');
await cdp.send('Emulation.setCPUThrottlingRate', { rate: Number(slowdown) });
const t0 = Date.now();
await page.goto(url);
await page.waitForSelector('body[data-ready="1"]', { timeout: 60000 });
const readyMs = Date.now() - t0;
const metrics = async () =>
  Object.fromEntries((await cdp.send('Performance.getMetrics')).metrics.map((m) => [m.name, m.value]));
const before = await metrics();
await page.waitForTimeout(10000);
const after = await metrics();
const d = (k) => Number((after[k] - before[k]).toFixed(3));
const shown = await page.evaluate(() => ({
  alerts: document.querySelectorAll('#alerts li.alert').length,
  devices: document.querySelectorAll('#devices li.device').length,
  elements: document.getElementsByTagName('*').length,
}));
console.log(JSON.stringify({
  cpu_slowdown: Number(slowdown),
  ready_ms: readyMs,
  ...shown,
  per_10s: {
    busy_s: d('TaskDuration'),
    script_s: d('ScriptDuration'),
    layout_s: d('LayoutDuration'),
    style_s: d('RecalcStyleDuration'),
    layouts: d('LayoutCount'),
    style_recalcs: d('RecalcStyleCount'),
  },
}));
await browser.close();
