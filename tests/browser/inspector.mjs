// Drives the relay inspector page in a real (Debian) Chromium, headless.
//
//   node inspector.mjs --inspector http://127.0.0.1:PORT --public http://127.0.0.1:PORT/t/NAME
//                      [--missed N] [--timeout-ms 10000]
//
// --inspector  the page `relay connect --inspect` serves (its `Inspector   URL` line)
// --public     the tunnel's public base URL; the local app behind it must be the
//              e2e harness's origin, whose /echo answers 200 with what it received
// --missed     how many missed requests wait when the page opens (default 0)
// --timeout-ms the deadline for each wait (default 10000)
// CHROMIUM     the browser binary (default /usr/bin/chromium; `apt-get install chromium`)
//
// Chromium runs in the Asia/Tokyo time zone, so that local times differ
// from the server's UTC wherever the test runs.
//
// Steps: (m) with --missed N, the banner says N requests arrived while offline,
// their rows say `missed`, and Deliver all delivers them: the banner says so
// and the rows turn `delivered`; (a) a request sent to the public URL shows up
// in the list without a reload, its time in the browser's time zone; (b) its
// detail shows the JSON body pretty-printed and its bearer token masked (and
// whole with Show secrets); (c) pressing r replays it: 200, its entry shows up
// and the original lists it; (k) j/k move the selection; (f) Copy as curl
// shows the command (the Rust test runs it) and HAR downloads the request;
// (d) pressing e opens Edit & replay; with a changed path, header and body
// it answers 200, its entry shows up, and the diff against the original names
// the JSON paths that changed; Esc closes the form; (s) / focuses the search,
// and a text found only in another request's body lists just that one (and
// the list's HAR has just that one); (x) a
// row made from a summary with deadline and fault marks shows both; (e) a
// Hasura Action call carrying a bearer JWT shows the decoded claims (expiry
// in words, "not verified") and the action's name, input and session
// variables, while the token stays masked in the headers. On success
// the last stdout line is
// one JSON object describing what was sent, for the Rust test to check against
// what the local app received (see tests/tests/e2e/inspector.rs). On failure:
// a message naming the step on stderr, exit code 1.

import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';

const { values: args } = parseArgs({
  options: {
    inspector: { type: 'string' },
    public: { type: 'string' },
    missed: { type: 'string', default: '0' },
    'timeout-ms': { type: 'string', default: '10000' },
  },
});
if (!args.inspector || !args.public) {
  console.error('usage: node inspector.mjs --inspector URL --public URL [--timeout-ms N]');
  process.exit(2);
}
const inspector = args.inspector.replace(/\/$/, '');
const publicUrl = args.public.replace(/\/$/, '');
const timeout = Number(args['timeout-ms']);
const missedCount = Number(args.missed);
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
if (!existsSync(executablePath)) {
  console.error(`inspector.mjs: no Chromium at ${executablePath}: apt-get install chromium (or set CHROMIUM)`);
  process.exit(1);
}

// Unique per run, so the rows found are this run's and nobody else's.
const nonce = Math.random().toString(36).slice(2, 10);
const path = `/echo?hook=browser-${nonce}`;
const editedPath = `${path}&edited=1`;
// A quote and non-ASCII text: the curl command must carry them byte for byte.
const body = '{"a":1,"note":"it\'s ünï"}';
const editedBody = '{"a":2,"edited":"yes"}';
const zone = 'Asia/Tokyo';
// A bearer token the detail must show masked: `Bearer eyJhbGci… [N chars]`.
const jwt = `eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJicm93c2VyIn0.${nonce}signature`;
const maskedAuth = `Bearer eyJhbGci… [${jwt.length} chars]`;

let step = 'launching Chromium';
const diagnostics = [];

// Waits until `fn(arg)` is truthy in the page, failing with `what` after the deadline.
async function waitFor(page, what, fn, arg) {
  try {
    return await page.waitForFunction(fn, arg, { timeout });
  } catch (e) {
    throw new Error(`${what} (within ${timeout} ms): ${e.message.split('\n')[0]}`);
  }
}

async function run(page) {
  step = '(a) page loads and the event stream is live';
  await page.goto(inspector, { timeout });
  await waitFor(page, '#live to say live', () => document.querySelector('#live')?.dataset.state === 'live');
  const missed = missedCount > 0 ? await deliverMissed(page) : null;
  // A marker that a reload would wipe out.
  await page.evaluate(() => (window.notReloaded = true));
  let listLoads = 0;
  page.on('request', (r) => new URL(r.url()).pathname === '/api/requests' && listLoads++);

  step = '(a) a new request appears in the list without a reload';
  const sent = await fetch(publicUrl + path, {
    method: 'POST',
    body,
    headers: { 'content-type': 'application/json', 'x-hook': 'original', authorization: `Bearer ${jwt}` },
    signal: AbortSignal.timeout(timeout),
  });
  const sentText = await sent.text();
  if (sent.status !== 200) throw new Error(`the public URL answered ${sent.status}: ${sentText}`);
  const row = page.locator('#requests tbody tr', { hasText: `browser-${nonce}` });
  await row.first().waitFor({ timeout });
  if ((await row.count()) !== 1) throw new Error(`expected one row for ${path}, found ${await row.count()}`);
  if (!(await page.evaluate(() => window.notReloaded))) throw new Error('the page reloaded');
  if (listLoads !== 0) throw new Error(`the list was re-fetched ${listLoads} time(s) instead of updated from the stream`);
  const originalId = await row.getAttribute('data-id');

  step = '(a) the row shows its time in the browser\'s time zone, the full timestamp on hover';
  const time = row.locator('td.time time');
  const iso = await time.getAttribute('datetime');
  const want = new Intl.DateTimeFormat('en-GB', { timeZone: zone, hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23' }).format(new Date(iso));
  const shown = await time.textContent();
  if (shown !== want) throw new Error(`row time ${JSON.stringify(shown)} for ${iso}, expected ${want} (${zone})`);
  const title = await time.getAttribute('title');
  if (!title.includes(want) || !title.includes('GMT+9')) throw new Error(`the full timestamp on hover: ${JSON.stringify(title)}`);

  step = '(b) the detail shows the request body pretty-printed';
  await row.click();
  const pretty = JSON.stringify(JSON.parse(body), null, 2);
  await waitFor(
    page,
    'the pretty-printed JSON body in #detail',
    (want) => document.querySelector('#detail .part-request pre.body[data-kind="json"]')?.textContent === want,
    pretty,
  );

  step = '(b) the bearer token is masked, and shown whole with Show secrets';
  const authCell = () =>
    [...document.querySelectorAll('#detail .part-request-headers table.headers tr')]
      .find((tr) => tr.querySelector('th')?.textContent === 'authorization')
      ?.querySelector('td')?.textContent;
  await waitFor(page, `the authorization header shown as ${maskedAuth}`, `(${authCell})() === ${JSON.stringify(maskedAuth)}`);
  // (The /echo response body carries the headers back: bodies are shown as captured.)
  const headerShowsToken = await page.evaluate(
    (t) => [...document.querySelectorAll('#detail table.headers td')].some((td) => td.textContent.includes(t)),
    jwt,
  );
  if (headerShowsToken) throw new Error('a header shows the bearer token unmasked');
  await page.check('#show-secrets');
  await waitFor(page, 'the whole token with Show secrets', `(${authCell})() === ${JSON.stringify(`Bearer ${jwt}`)}`);
  await page.uncheck('#show-secrets');
  await waitFor(page, 'the token masked again', `(${authCell})() === ${JSON.stringify(maskedAuth)}`);

  step = '(c) pressing r replays the request: 200, and the replay shows up in the list';
  const replay = await replayResult(page, () => page.keyboard.press('r'));
  step = '(c) the original lists its replay';
  await page.locator(`#detail-head .replays a[data-id="${replay.id}"]`).waitFor({ timeout });

  step = '(k) j and k move the selection';
  const order = await page.$$eval('#requests tbody tr', (rows) => rows.map((r) => r.dataset.id));
  const at = order.indexOf(originalId);
  const selectedId = () => document.querySelector('#requests tr.selected')?.dataset.id;
  await page.keyboard.press('k');
  await waitFor(page, `k to select the row above (${order[at - 1]})`, `(${selectedId})() === ${JSON.stringify(order[at - 1])}`);
  await page.keyboard.press('j');
  await waitFor(page, `j to select ${originalId} again`, `(${selectedId})() === ${JSON.stringify(originalId)}`);
  await waitFor(page, 'its detail', (id) => document.querySelector('#detail-head code.id')?.textContent === id, originalId);

  step = '(f) Copy as curl shows the command';
  await page.click('#copy-curl');
  await waitFor(page, 'the curl command', () => document.querySelector('#curl-text').textContent.startsWith('# '));
  const curl = await page.locator('#curl-text').textContent();
  await page.keyboard.press('Escape');
  await page.locator('#curl-out').waitFor({ state: 'hidden', timeout });

  step = '(f) HAR downloads the request';
  const download = page.waitForEvent('download', { timeout });
  await page.click('#har-one');
  const har = JSON.parse(await readFile(await (await download).path(), 'utf8'));
  const entry = har.log?.entries?.[0];
  if (har.log.entries.length !== 1 || entry.request.postData?.text !== body || !entry.request.url.endsWith(path)) {
    throw new Error(`the HAR download: ${JSON.stringify(har).slice(0, 2000)}`);
  }

  step = '(d) pressing e opens Edit & replay';
  await page.keyboard.press('e');
  await page.locator('#edit-form').waitFor({ state: 'visible', timeout });
  const prefill = {
    method: await page.inputValue('#edit-method'),
    path: await page.inputValue('#edit-path'),
    headers: await page.inputValue('#edit-headers'),
    body: await page.inputValue('#edit-body'),
  };
  if (prefill.method !== 'POST' || prefill.path !== path || prefill.body !== body) {
    throw new Error(`edit form not pre-filled with the capture: ${JSON.stringify(prefill)}`);
  }
  if (!/^x-hook: original$/im.test(prefill.headers)) {
    throw new Error(`x-hook header not in the edit form: ${JSON.stringify(prefill.headers)}`);
  }
  // Content-length stays as captured, though the body grows: the replay has to
  // frame the edited body by itself.
  const editedHeaders = `${prefill.headers.replace(/^x-hook: original$/im, 'x-hook: edited')}\nx-edited-by: inspector`;
  await page.fill('#edit-path', editedPath);
  await page.fill('#edit-headers', editedHeaders);
  await page.fill('#edit-body', editedBody);
  const edited = await replayResult(page, () => page.click('#edit-send'));

  step = '(d) the diff against the original names the JSON paths that changed';
  // The origin's /echo describes what it received: the edit changed its length and path.
  const bodyLen = `body_len: ${Buffer.byteLength(body)} -> ${Buffer.byteLength(editedBody)}`;
  await waitFor(
    page,
    `the diff to show "${bodyLen}"`,
    (w) => document.querySelector('#replay-result section.diff li[data-path="body_len"]')?.textContent === w,
    bodyLen,
  );
  const pathChange = await page.locator('#replay-result section.diff li[data-path="path"]').textContent();
  if (pathChange !== `path: ${JSON.stringify(path)} -> ${JSON.stringify(editedPath)}`) throw new Error(`the path change: ${pathChange}`);
  const diffPaths = await page.$$eval('#replay-result section.diff li', (lis) => lis.map((li) => li.dataset.path));

  step = '(d) Esc closes the edit form';
  await page.keyboard.press('Escape'); // leaves the body field
  await page.keyboard.press('Escape');
  await page.locator('#edit-form').waitFor({ state: 'hidden', timeout });

  const search = await searchBodies(page, originalId);

  step = '(x) a summary with the deadline and fault marks renders both';
  // Made up here: nothing in this run sets --deadline or --fault.
  const marked = await page.evaluate(() => {
    const tr = rowFor({
      id: 'marks', tunnel: 't', time: new Date().toISOString(), method: 'POST', path: '/slow', shown_path: '/slow',
      status: 200, outcome: 'delivered', duration_ms: 12345, request_size: 0, response_size: 0, replay_of: null,
      deadline_exceeded_ms: 10000, fault: 'status=500',
    });
    const text = (sel) => tr.querySelector(sel)?.textContent;
    const title = (sel) => tr.querySelector(sel)?.title;
    return { deadline: text('.mark.deadline'), fault: text('.mark.fault'), titles: [title('.mark.deadline'), title('.mark.fault')] };
  });
  if (marked.deadline !== '>10s' || marked.fault !== 'fault' || !marked.titles[0].includes('12.35 s') || !marked.titles[1].includes('status=500')) {
    throw new Error(`the marks: ${JSON.stringify(marked)}`);
  }

  const views = await providerViews(page);

  return {
    missed,
    views,
    search,
    curl: { id: originalId, text: curl },
    diff: { paths: diffPaths },
    original: { id: originalId, path, body, header: ['x-hook', 'original'], request_id: sent.headers.get('x-relay-request-id') },
    replay: { id: replay.id, status: replay.status, replay_of: replay.replay_of },
    edited: {
      id: edited.id,
      status: edited.status,
      replay_of: edited.replay_of,
      path: editedPath,
      body: editedBody,
      headers: [['x-hook', 'edited'], ['x-edited-by', 'inspector']],
      // What the local app answered: the origin's /echo describes what it received.
      response_body: edited.response ? Buffer.from(edited.response.body, 'base64').toString('utf8') : null,
    },
  };
}

// (s) A request whose body alone has a word: the search box lists it and
// nothing else. Returns {id, term}.
async function searchBodies(page, originalId) {
  step = '(s) a request with a word only in its body';
  const term = `needle${Math.random().toString(36).slice(2, 10)}`;
  const sent = await fetch(`${publicUrl}/echo?search=${nonce}`, {
    method: 'POST',
    body: `{"note":"a ${term} in the body"}`,
    headers: { 'content-type': 'application/json' },
    signal: AbortSignal.timeout(timeout),
  });
  await sent.text();
  if (sent.status !== 200) throw new Error(`the public URL answered ${sent.status}`);
  const id = sent.headers.get('x-relay-request-id');
  await page.locator(`#requests tr[data-id="${id}"]`).waitFor({ timeout });

  step = '(s) / focuses the search box, which lists only the body match';
  await page.keyboard.press('/');
  await waitFor(page, '#search to have the focus', () => document.activeElement?.id === 'search');
  await page.keyboard.type(term);
  await waitFor(
    page,
    `only ${id} listed for "${term}"`,
    (want) => {
      const rows = [...document.querySelectorAll('#requests tbody tr')];
      return rows.length === 1 && rows[0].dataset.id === want;
    },
    id,
  );

  step = '(s) HAR downloads the list shown: the one match';
  const download = page.waitForEvent('download', { timeout });
  await page.click('#har-list');
  const har = JSON.parse(await readFile(await (await download).path(), 'utf8'));
  const entries = har.log?.entries || [];
  if (entries.length !== 1 || !entries[0].request.postData?.text?.includes(term)) {
    throw new Error(`the HAR of the list shown: ${JSON.stringify(har).slice(0, 2000)}`);
  }

  await page.fill('#search', '');
  await page.locator(`#requests tr[data-id="${originalId}"]`).waitFor({ timeout });
  return { id, term };
}

// (e) A Hasura Action call with an Auth0-style bearer JWT (made here; nothing
// verifies it): its detail shows the claims and the action. Returns the path sent.
async function providerViews(page) {
  step = '(e) a Hasura Action call with a bearer JWT';
  const b64url = (json) => Buffer.from(JSON.stringify(json)).toString('base64url');
  const now = Math.floor(Date.now() / 1000);
  const claims = {
    iss: 'https://dev-relay.eu.auth0.com/',
    sub: 'auth0|6543',
    aud: ['https://api.example.com', 'https://dev-relay.eu.auth0.com/userinfo'],
    azp: 'Xy12client',
    scope: 'openid create:users',
    iat: now - 86400,
    exp: now - 2 * 3600 - 30, // "expired 2 h ago" for the next 59 minutes
  };
  const token = `${b64url({ alg: 'RS256', typ: 'JWT' })}.${b64url(claims)}.${nonce}sig`;
  const hasuraPath = `/echo?views=${nonce}`;
  const action = {
    action: { name: 'addUser' },
    input: { name: 'Ada', age: 36 },
    session_variables: { 'x-hasura-user-id': '6543', 'x-hasura-role': 'user' },
    request_query: 'mutation { addUser(name: "Ada", age: 36) { id } }',
  };
  const sent = await fetch(publicUrl + hasuraPath, {
    method: 'POST',
    body: JSON.stringify(action),
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    signal: AbortSignal.timeout(timeout),
  });
  await sent.text();
  if (sent.status !== 200) throw new Error(`the public URL answered ${sent.status}`);
  const row = page.locator('#requests tbody tr', { hasText: `views=${nonce}` });
  await row.first().waitFor({ timeout });
  await row.first().click();

  step = '(e) the detail shows the decoded claims, not the token';
  const jwt = '#detail section[data-provider="jwt"]';
  await page.locator(jwt).waitFor({ timeout });
  const claim = (name) => page.locator(`${jwt} tr[data-claim="${name}"] td`).textContent({ timeout });
  const want = { iss: claims.iss, sub: claims.sub, aud: claims.aud.join(', '), azp: claims.azp, scope: claims.scope };
  for (const [name, value] of Object.entries(want)) {
    const got = await claim(name);
    if (got !== value) throw new Error(`claim ${name}: ${JSON.stringify(got)}, expected ${JSON.stringify(value)}`);
  }
  const exp = await claim('exp');
  if (!exp.endsWith('(expired 2 h ago)')) throw new Error(`exp should say it expired 2 h ago: ${JSON.stringify(exp)}`);
  if (!(await page.locator(`${jwt} tr[data-claim="exp"]`).getAttribute('class'))?.includes('bad')) {
    throw new Error('the expired exp is not marked');
  }
  const note = await page.locator(`${jwt} h3`).textContent();
  if (!note.includes('not verified') || !note.includes('RS256')) throw new Error(`the JWT heading: ${JSON.stringify(note)}`);
  const tokenShown = await page.evaluate(
    (t) => [...document.querySelectorAll('#detail th, #detail td, #detail h3')].some((e) => e.textContent.includes(t)),
    token,
  );
  if (tokenShown) throw new Error('the detail shows the bearer token unmasked');

  step = '(e) the detail shows the Hasura action, its input and session variables';
  const hasura = '#detail section[data-provider="hasura"]';
  const name = await page.locator(`${hasura} .action-name`).textContent({ timeout });
  if (name !== 'addUser') throw new Error(`the action name: ${JSON.stringify(name)}`);
  const input = await page.locator(`${hasura} pre.body[data-kind="json"]`).textContent();
  if (input !== JSON.stringify(action.input, null, 2)) throw new Error(`the action input: ${JSON.stringify(input)}`);
  const vars = await page.locator(`${hasura} table.session-variables tr`).evaluateAll((trs) =>
    trs.map((tr) => `${tr.querySelector('th').textContent}=${tr.querySelector('td').textContent}`),
  );
  if (vars.join(' ') !== 'x-hasura-role=user x-hasura-user-id=6543') throw new Error(`session variables: ${JSON.stringify(vars)}`);
  // The section sits before the request's headers.
  const order = await page.evaluate(
    () => [...document.querySelectorAll('#exchange .panel[data-tab="summary"] > section')].map((s) => s.dataset.provider || s.className),
  );
  if (order.slice(0, 3).join(' ') !== 'jwt hasura part part-request') throw new Error(`sections in order: ${JSON.stringify(order)}`);
  return { path: hasuraPath, action: name };
}

// (m) The banner of missed requests and Deliver all. Returns what the
// delivery answered: {count, results: [{replay_of, id, status}]}.
async function deliverMissed(page) {
  step = '(m) the banner says how many requests arrived while offline';
  const want = `${missedCount} request${missedCount === 1 ? '' : 's'} arrived while you were offline`;
  await waitFor(
    page,
    `the banner to say "${want}"`,
    (w) => !document.querySelector('#missed-banner').hidden && document.querySelector('#missed-text').textContent.startsWith(w),
    want,
  );
  await waitFor(page, 'rows marked missed', () => document.querySelectorAll('#requests .delivery[data-delivery="missed"]').length > 0);

  step = '(m) Deliver all delivers them';
  const answer = page.waitForResponse((r) => r.request().method() === 'POST' && new URL(r.url()).pathname === '/api/missed/deliver', { timeout });
  await page.click('#deliver-missed');
  const res = await answer;
  const report = await res.json();
  if (res.status() !== 200) throw new Error(`the deliver API answered ${res.status()}: ${JSON.stringify(report)}`);
  const bad = report.results.filter((r) => r.outcome !== 'delivered' || !(r.status < 500) || !r.id);
  if (report.results.length !== missedCount || bad.length || report.stopped || report.left !== 0) {
    throw new Error(`expected ${missedCount} delivered, nothing left: ${JSON.stringify(report)}`);
  }
  await waitFor(
    page,
    `the banner to say "Delivered ${missedCount}."`,
    (n) => {
      const b = document.querySelector('#missed-banner');
      return b.dataset.state === 'done' && document.querySelector('#missed-result').textContent === `Delivered ${n}.`;
    },
    missedCount,
  );
  await waitFor(
    page,
    'the delivered rows to say delivered',
    (ids) =>
      ids.every((id) => document.querySelector(`#requests tr[data-id="${id}"] .delivery`)?.dataset.delivery === 'delivered') &&
      !document.querySelector('#requests .delivery[data-delivery="missed"]') &&
      document.querySelector('#deliver-missed').hidden,
    report.results.map((r) => r.replay_of),
  );
  return { count: missedCount, results: report.results.map((r) => ({ replay_of: r.replay_of, id: r.id, status: r.status })) };
}

// Clicks, then checks the replay result the page shows (status 200, a new
// entry) and that the new entry shows up in the list. Returns the API's result.
async function replayResult(page, click) {
  const answer = page.waitForResponse((r) => r.request().method() === 'POST' && r.url().endsWith('/replay'), { timeout });
  await click();
  const res = await answer;
  const result = await res.json();
  if (res.status() !== 200) throw new Error(`the replay API answered ${res.status()}: ${JSON.stringify(result)}`);
  if (result.status !== 200 || !result.id) throw new Error(`replay result: ${JSON.stringify(result)}`);
  await waitFor(
    page,
    'the replay result (status 200) in #replay-result',
    (id) => {
      const r = document.querySelector(`#replay-result .result[data-new-id="${id}"]`);
      return r && r.querySelector('.status')?.textContent === '200';
    },
    result.id,
  );
  const row = page.locator(`#requests tr[data-id="${result.id}"]`);
  await row.waitFor({ timeout });
  if ((await row.locator('.replay-mark').count()) !== 1) throw new Error(`row ${result.id} is not marked as a replay`);
  return result;
}

let browser;
let code = 0;
try {
  browser = await chromium.launch({
    executablePath,
    headless: true,
    timeout,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  const context = await browser.newContext({ timezoneId: zone, locale: 'en-US', acceptDownloads: true });
  const page = await context.newPage();
  page.setDefaultTimeout(timeout);
  page.on('console', (m) => m.type() === 'error' && diagnostics.push(`console: ${m.text()}`));
  page.on('pageerror', (e) => diagnostics.push(`page error: ${e.message}`));
  const report = await run(page);
  if (diagnostics.length) throw new Error(`the page logged errors:\n${diagnostics.join('\n')}`);
  console.log(JSON.stringify(report));
} catch (e) {
  code = 1;
  console.error(`inspector.mjs: FAILED at step ${step}: ${e.message}`);
  for (const d of diagnostics) console.error(`  ${d}`);
  const page = browser?.contexts()[0]?.pages()[0];
  const text = await page?.locator('body').innerText({ timeout: 2000 }).catch(() => null);
  if (text) console.error(`--- page text ---\n${text.slice(0, 4000)}`);
} finally {
  await browser?.close().catch(() => {});
}
process.exit(code);
