// Screenshots of a running relay inspector, for docs/ and for looking at the
// page after a change to its HTML, CSS or JS:
//
//   node screenshots.mjs --inspector http://127.0.0.1:4040 [--out ../../docs]
//                        [--width 1440] [--height 820] [--timezone Europe/Berlin]
//                        [--dark] [--all [--search TEXT]] [--select PATH-TEXT]
//
// Writes inspector-list.png (the list with the newest request that is not a
// replay selected, or the first whose path contains --select) and, when the list has a replay recorded with a diff (every
// replay made from the page has one), inspector-diff.png (that replay's
// detail, one with JSON changes if any). --all adds the Headers and Raw tabs
// (inspector-headers.png, inspector-raw.png) and a search for TEXT
// (inspector-search.png). Fill the tunnel first: send a few requests to the public URL and
// press Edit & replay on one of them. CHROMIUM names the browser binary
// (default /usr/bin/chromium).

import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';

const { values: args } = parseArgs({
  options: {
    inspector: { type: 'string' },
    out: { type: 'string', default: '.' },
    width: { type: 'string', default: '1440' },
    height: { type: 'string', default: '820' },
    timezone: { type: 'string' },
    dark: { type: 'boolean', default: false },
    all: { type: 'boolean', default: false },
    search: { type: 'string', default: 'Ada' },
    select: { type: 'string' },
  },
});
if (!args.inspector) {
  console.error('usage: node screenshots.mjs --inspector URL [--out DIR] [--width N] [--height N] [--timezone TZ] [--dark]');
  process.exit(2);
}
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
if (!existsSync(executablePath)) {
  console.error(`screenshots.mjs: no Chromium at ${executablePath}: apt-get install chromium (or set CHROMIUM)`);
  process.exit(1);
}
const base = args.inspector.replace(/\/$/, '');
const out = resolve(args.out);

async function shoot(page, name) {
  await page.screenshot({ path: join(out, name) });
  console.log(join(out, name));
}

const browser = await chromium.launch({ executablePath, headless: true, args: ['--no-sandbox', '--disable-gpu'] });
try {
  const context = await browser.newContext({
    viewport: { width: Number(args.width), height: Number(args.height) },
    deviceScaleFactor: 1,
    colorScheme: args.dark ? 'dark' : 'light',
    timezoneId: args.timezone,
  });
  const page = await context.newPage();
  await page.goto(base);
  await page.waitForFunction(() => document.querySelector('#live')?.dataset.state === 'live');
  await page.locator('#requests tbody tr').first().waitFor();

  // The newest request a visitor sent: rows of replays carry a ↻ mark.
  const ids = await page.$$eval('#requests tbody tr', (rows) =>
    rows.map((r) => ({ id: r.dataset.id, replay: !!r.querySelector('.replay-mark') })),
  );
  const paths = await page.$$eval('#requests tbody tr td.path', (tds) => tds.map((td) => td.textContent));
  const picked = args.select ? ids.find((r, i) => !r.replay && paths[i].includes(args.select)) : null;
  const original = picked || ids.find((r) => !r.replay) || ids[0];
  await page.click(`#requests tr[data-id="${original.id}"]`);
  await page.locator('#detail-head h2').waitFor();
  await shoot(page, 'inspector-list.png');

  if (args.all) {
    for (const tab of ['headers', 'raw']) {
      await page.click(`#tabs button[data-tab="${tab}"]`);
      await shoot(page, `inspector-${tab}.png`);
    }
    await page.click('#tabs button[data-tab="summary"]');
  }

  // A replay with a diff, one with JSON changes if there is one.
  let diffShot = null;
  for (const r of ids.filter((x) => x.replay)) {
    await page.click(`#requests tr[data-id="${r.id}"]`);
    await page.waitForFunction((id) => document.querySelector('#detail-head code.id')?.textContent === id, r.id);
    if ((await page.locator('#exchange section.diff').count()) === 0) continue;
    const json = (await page.locator('#exchange ul.json-changes').count()) > 0;
    if (!diffShot || json) diffShot = r.id;
    if (json) break;
  }
  if (diffShot) {
    await page.click(`#requests tr[data-id="${diffShot}"]`);
    await page.waitForFunction((id) => document.querySelector('#detail-head code.id')?.textContent === id, diffShot);
    await shoot(page, 'inspector-diff.png');
  }
  if (args.all) {
    await page.fill('#search', args.search);
    await page.waitForFunction(() => document.querySelector('#search-note').textContent !== '');
    await shoot(page, 'inspector-search.png');
  }
} finally {
  await browser.close();
}
