// relay inspector: the request list (first page from the inspector API, then
// live from its event stream), search over paths, headers and bodies, one
// request's detail (summary, headers, raw HTTP) with replay, edit-and-replay
// and the diff against the original, curl and HAR export, and the banner of
// missed requests with Deliver all. The API is docs/api.md. With several
// tunnels (`relay start`) a selector picks one; its API is /api/t/NAME/...
//
// Paths, headers and bodies come from whoever reached the public URL, so
// captured data only ever reaches the page as text nodes (el() below), never
// as HTML. What is displayed of a capture (secrets masked, JSON pretty,
// binary as hex, the raw HTTP text, curl, HAR) is computed by the relay
// client with the terminal's own code and arrives as `shown_path` and
// `shown`; the page never masks by itself. A bearer JWT's claims and a
// Hasura Action call's parts are decoded here, as `relay requests show` does.
'use strict';

const $ = (sel) => document.querySelector(sel);

const state = {
  tunnels: [], // [{name, urls, target, connected}] from /api/tunnels
  tunnel: null, // the name shown
  base: '/api', // API prefix of the tunnel shown
  entries: new Map(), // id -> summary, for every row in the list
  nextBefore: null, // `before` for "Load older"; null when there is nothing older
  query: '', // the search box, trimmed
  searchTimer: null,
  searching: false, // the first answer of a new search is awaited
  generation: 0, // bumped when the list is reset, so late answers for an old list are dropped
  selected: null, // id shown in the detail pane
  record: null, // its full record
  tab: 'summary', // the detail's view: summary, headers or raw
  events: null, // the EventSource of the tunnel shown
  streamOpen: null, // null until the event stream first answers
  connected: null, // the tunnel's session to the server, from its status
  missed: null, // the server's overview of waiting missed requests
  missedTimer: null, // debounces refreshMissed after live events
  delivering: false,
  showSecrets: false,
};

// el('td', {class: 'x'}, 'text', node): strings become text nodes, never markup.
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  return fill(e, ...children);
}

// Replaces node's children, skipping null / false (for optional parts).
function fill(node, ...children) {
  node.replaceChildren(...children.flat().filter((c) => c != null && c !== false));
  return node;
}

async function api(path, options) {
  const res = await fetch(path, options);
  let body = null;
  try {
    body = await res.json();
  } catch {
    // An error page that is not JSON: the status line below says enough.
  }
  if (!res.ok) {
    const err = new Error((body && body.message) || `${res.status} ${res.statusText}`);
    err.code = body && body.error;
    throw err;
  }
  return body;
}

// A POST the inspector only accepts as JSON (see docs/api.md).
function post(path, body) {
  return api(path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body || {}) });
}

const tunnelApi = (path) => `${state.base}${path}`;
const requestApi = (id, path = '') => tunnelApi(`/requests/${encodeURIComponent(id)}${path}`);

// ---- formatting: every time is in the browser's own time zone

const pad = (n, w = 2) => String(n).padStart(w, '0');

// Local wall-clock time, to the second (the title has the full timestamp).
function fmtTime(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

// `2026-12-05 19:03:04.123 GMT+9`: local date, time to the millisecond, zone.
function fmtFull(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  const zone = new Intl.DateTimeFormat(undefined, { timeZoneName: 'short' })
    .formatToParts(d)
    .find((p) => p.type === 'timeZoneName');
  const date = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
  const time = `${fmtTime(iso)}.${pad(d.getMilliseconds(), 3)}`;
  return `${date} ${time}${zone ? ` ${zone.value}` : ''}`;
}

// A <time> in local time with the full timestamp on hover.
function timeEl(iso, text) {
  return el('time', { datetime: iso, title: fmtFull(iso) }, text ?? fmtTime(iso));
}

function fmtMs(ms) {
  if (ms == null) return '';
  return ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(2)} s`;
}

function fmtSize(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

function statusClass(status) {
  if (status == null) return 'status none';
  return `status s${String(status)[0]}xx`;
}

function outcomeClass(outcome) {
  return outcome === 'delivered' ? 'outcome ok' : 'outcome bad';
}

// `45s`, `12min`, `3h`, `2d`: as relay connect says how long ago.
function fmtAge(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}min`;
  if (s < 86400) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

function shownPath(s) {
  return state.showSecrets ? s.path : s.shown_path ?? s.path;
}

// ---- deadline and fault marks (`relay connect --deadline`, `--fault`)

function deadlineText(s) {
  return `over the caller's ${fmtMs(s.deadline_exceeded_ms)} deadline: took ${fmtMs(s.duration_ms)}, the caller would have given up`;
}

// `10s`, `2.5s`: a deadline, short enough for a badge.
function fmtSecs(ms) {
  return `${Math.round(ms / 100) / 10}s`;
}

function marks(s) {
  return [
    s.deadline_exceeded_ms != null
      ? el('span', { class: 'mark deadline', title: deadlineText(s) }, `>${fmtSecs(s.deadline_exceeded_ms)}`)
      : null,
    s.fault ? el('span', { class: 'mark fault', title: `answered by relay's fault injection: ${s.fault}` }, 'fault') : null,
  ];
}

// ---- header: tunnels, URLs, target, live indicator

async function loadTunnels() {
  try {
    const t = await api('/api/tunnels');
    state.tunnels = t.tunnels || [];
  } catch {
    state.tunnels = [];
  }
  const select = $('#tunnel-select');
  const many = state.tunnels.length > 1;
  select.hidden = !many;
  $('#tunnel-name').hidden = many;
  fill(select, state.tunnels.map((t) => el('option', { value: t.name }, t.name)));
  if (many && !state.tunnels.some((t) => t.name === state.tunnel)) state.tunnel = state.tunnels[0].name;
  if (many) select.value = state.tunnel;
  // One tunnel keeps the short paths (/api/requests, ...).
  state.base = many ? `/api/t/${encodeURIComponent(state.tunnel)}` : '/api';
}

async function refreshStatus() {
  try {
    const s = await api(tunnelApi('/status'));
    const wasConnected = state.connected;
    state.connected = !!s.connected;
    // The tunnel (re)connected: the server may have missed requests for it.
    if (state.connected && wasConnected === false) refreshMissed();
    $('#tunnel-name').textContent = s.name || '';
    document.title = s.name ? `relay · ${s.name}` : 'relay inspector';
    fill($('#urls'),
      ...(s.urls || []).map((u) =>
        // Only http(s) becomes a link: a URL is never a place for script.
        /^https?:\/\//i.test(u) ? el('a', { href: u, target: '_blank', rel: 'noopener' }, u) : el('span', {}, u),
      ),
    );
    $('#target').textContent = s.target || '';
  } catch {
    state.connected = null;
  }
  renderLive();
}

function renderLive() {
  let st = 'live';
  if (state.streamOpen === null) st = 'connecting';
  else if (!state.streamOpen) st = 'reconnecting';
  else if (state.connected === false) st = 'offline';
  const labels = { connecting: 'connecting…', reconnecting: 'reconnecting…', offline: 'tunnel offline', live: 'live' };
  const live = $('#live');
  live.dataset.state = st;
  live.textContent = labels[st];
}

// ---- the request list

// Newest first: by time, then by id for captures in the same millisecond.
function isNewer(a, b) {
  return a.time > b.time || (a.time === b.time && a.id > b.id);
}

function rowFor(s) {
  return el(
    'tr',
    {
      'data-id': s.id,
      class: s.id === state.selected ? 'selected' : null,
      onclick: () => show(s.id),
    },
    el('td', { class: 'time' }, timeEl(s.time)),
    el('td', { class: 'method' }, s.method),
    el(
      'td',
      { class: 'path', title: shownPath(s) },
      s.replay_of ? el('span', { class: 'replay-mark', title: `replay of ${s.replay_of}` }, '↻ ') : null,
      el('span', { class: 'path-text' }, shownPath(s)),
    ),
    el('td', { class: statusClass(s.status) }, s.status ?? '—'),
    el(
      'td',
      { class: outcomeClass(s.outcome) },
      s.outcome,
      s.delivery ? el('span', { class: 'delivery', 'data-delivery': s.delivery, title: deliveryTitle(s) }, s.delivery) : null,
      // In the column that wraps, so a long path never hides them.
      marks(s),
    ),
    el('td', { class: 'num' }, fmtMs(s.duration_ms)),
  );
}

function deliveryTitle(s) {
  if (s.delivery === 'delivered') return `delivered by ${s.delivered_by || 'a replay'}`;
  if (s.delivery === 'failed') return `delivery failed: ${s.delivery_error || 'no reason recorded'}; tried again by the next delivery`;
  return 'arrived while no client was connected; waiting to be delivered';
}

// A replay of a missed request settles it: show the original's new state;
// a replay of the request shown joins its list of replays.
function onLiveEntry(s) {
  if (s.outcome === 'offline' || s.replay_of) scheduleMissedRefresh();
  const orig = s.replay_of && state.entries.get(s.replay_of);
  if (orig && orig.delivery) refreshEntry(orig.id);
  else if (s.replay_of && s.replay_of === state.selected) refreshEntry(s.replay_of);
}

// Fetches one entry again and redraws its row (and its detail, if shown).
async function refreshEntry(id) {
  let rec;
  try {
    rec = await api(requestApi(id, state.showSecrets ? '?secrets=1' : ''));
  } catch {
    return; // retired meanwhile, or the server is away: the row stays as it was
  }
  const { request, response, shown, replays, diff, ...summary } = rec;
  if (state.entries.has(id)) {
    state.entries.set(id, summary);
    const row = rowOf(id);
    if (row) row.replaceWith(rowFor(summary));
  }
  if (state.selected === id && state.record) {
    state.record = rec;
    renderDetail(rec);
  }
}

function rowOf(id) {
  return [...$('#requests tbody').rows].find((r) => r.dataset.id === id);
}

function addEntry(s) {
  if (state.entries.has(s.id)) return;
  state.entries.set(s.id, s);
  const body = $('#requests tbody');
  // New captures are the newest, so this usually stops at the first row.
  const next = [...body.rows].find((r) => isNewer(s, state.entries.get(r.dataset.id)));
  body.insertBefore(rowFor(s), next || null);
  renderCount();
}

function renderCount() {
  const n = state.entries.size;
  $('#empty').hidden = n > 0;
  $('#empty').textContent = state.searching
    ? 'Searching…'
    : state.query
    ? `Nothing matches “${state.query}” in the newest requests.`
    : 'No requests yet. Requests to the public URL show up here as they happen.';
  $('#count').textContent = state.searching ? '' : state.query ? `${n} match${n === 1 ? '' : 'es'}` : `${n} request${n === 1 ? '' : 's'}`;
  $('#har-list').disabled = n === 0;
}

async function loadPage(before) {
  const gen = state.generation;
  const q = new URLSearchParams();
  if (before) q.set('before', before);
  try {
    const query = q.toString();
    const page = await api(tunnelApi(`/requests${query ? `?${query}` : ''}`));
    if (gen !== state.generation) return null;
    page.requests.forEach(addEntry);
    $('#list-error').hidden = true;
    return page;
  } catch (e) {
    if (gen === state.generation) showListError(`Could not load requests: ${e.message}`);
    return null;
  }
}

function showListError(text) {
  $('#list-error').textContent = text;
  $('#list-error').hidden = false;
}

// The captures that contain the search text in their path, headers or body
// (the inspector looks through the bodies: /search).
async function loadSearch() {
  const gen = state.generation;
  try {
    const found = await api(tunnelApi(`/search?q=${encodeURIComponent(state.query)}`));
    if (gen !== state.generation) return;
    // Matches that are gone (retired) leave; the rest stay in place.
    const keep = new Set(found.requests.map((s) => s.id));
    for (const id of [...state.entries.keys()]) {
      if (!keep.has(id)) {
        state.entries.delete(id);
        rowOf(id)?.remove();
      }
    }
    found.requests.forEach(addEntry);
    $('#list-error').hidden = true;
    $('#search-note').textContent = found.more ? 'more matches: narrow the search' : `in the newest ${found.scanned}`;
    renderCount();
  } catch (e) {
    if (gen === state.generation) showListError(`Search failed: ${e.message}`);
  }
}

// Starts the list over (first load, a new search, another tunnel).
async function resetList() {
  state.generation += 1;
  state.entries.clear();
  $('#requests tbody').replaceChildren();
  $('#search-note').textContent = '';
  renderCount();
  setOlder(null);
  if (state.query) {
    state.searching = true;
    renderCount();
    await loadSearch();
    state.searching = false;
    renderCount();
    return;
  }
  const page = await loadPage(null);
  if (page) setOlder(page.next_before);
}

async function loadOlder() {
  const button = $('#load-older');
  button.disabled = true;
  const page = await loadPage(state.nextBefore);
  button.disabled = false;
  if (page) setOlder(page.next_before);
}

function setOlder(before) {
  state.nextBefore = before;
  $('#load-older').hidden = !before;
}

// A live capture joins the list; while searching, the search runs again
// (a body match needs the inspector), at most once per 300 ms.
function onCapture(s) {
  if (state.query) {
    clearTimeout(state.searchTimer);
    state.searchTimer = setTimeout(loadSearch, 300);
  } else addEntry(s);
  onLiveEntry(s);
}

// The stream carries only what is stored after it connects, so every (re)open
// also reloads the newest page to fill the gap; rows already shown are kept.
function listen() {
  state.events?.close();
  const es = new EventSource(tunnelApi('/events'));
  state.events = es;
  es.onopen = () => {
    state.streamOpen = true;
    if (state.query) loadSearch();
    else loadPage(null);
    refreshStatus();
    refreshMissed();
  };
  es.onerror = () => {
    if (state.events !== es) return;
    state.streamOpen = false;
    renderLive();
    // EventSource retries by itself, except after an HTTP error answer
    // (e.g. 502 while the server is away): then it is closed for good.
    if (es.readyState === EventSource.CLOSED) setTimeout(() => state.events === es && listen(), 3000);
  };
  es.addEventListener('request', (e) => {
    let s;
    try {
      s = JSON.parse(e.data);
    } catch {
      return; // A malformed event is skipped; the next reconnect reloads the page anyway.
    }
    onCapture(s);
  });
}

// Most requests in one HAR download: the inspector's HAR_MAX (handlers.rs).
const HAR_MAX = 1000;

// The list shown as one HAR file, oldest first.
function downloadHar(ids) {
  if (!ids.length) return;
  const a = el('a', { href: tunnelApi(`/har?ids=${ids.slice(-HAR_MAX).join(',')}`), download: '' });
  document.body.append(a);
  a.click();
  a.remove();
}

function shownIds() {
  return [...$('#requests tbody').rows].map((r) => r.dataset.id).reverse();
}

// ---- missed requests: the banner and Deliver all

function scheduleMissedRefresh() {
  clearTimeout(state.missedTimer);
  state.missedTimer = setTimeout(refreshMissed, 300);
}

async function refreshMissed() {
  try {
    state.missed = await api(tunnelApi('/missed?limit=0'));
  } catch {
    return; // the banner keeps what it showed; the next event or reconnect tries again
  }
  renderMissed();
}

function renderMissed() {
  const banner = $('#missed-banner');
  const m = state.missed;
  const count = m ? m.count : 0;
  // New ones arrived after a run that delivered all: that run's word is old news.
  if (count > 0 && banner.dataset.state === 'done') {
    $('#missed-result').textContent = '';
    banner.dataset.state = 'waiting';
  }
  const result = $('#missed-result').textContent;
  if (count === 0) {
    $('#missed-text').textContent = '';
    $('#deliver-missed').hidden = true;
    banner.hidden = !result;
    return;
  }
  const age = m.oldest ? fmtAge(Date.now() - new Date(m.oldest).getTime()) : null;
  const what = `${count} request${count === 1 ? '' : 's'} arrived while you were offline`;
  $('#missed-text').title = m.oldest ? `oldest: ${fmtFull(m.oldest)}` : '';
  $('#missed-text').textContent = age ? `${what} (${count === 1 ? '' : 'oldest '}${age} ago).` : `${what}.`;
  $('#deliver-missed').hidden = false;
  $('#deliver-missed').disabled = state.delivering;
  banner.hidden = false;
  if (!state.delivering && !result) banner.dataset.state = 'waiting';
}

async function deliverAll() {
  const banner = $('#missed-banner');
  state.delivering = true;
  banner.dataset.state = 'delivering';
  $('#missed-result').textContent = 'Delivering…';
  renderMissed();
  let report = null;
  let error = null;
  try {
    report = await post(tunnelApi('/missed/deliver'));
  } catch (e) {
    error = e;
  }
  state.delivering = false;
  if (report) {
    const n = report.results.filter((r) => r.outcome === 'delivered' && r.status < 500).length;
    const done = `Delivered ${n}.`;
    if (report.stopped) {
      banner.dataset.state = 'stopped';
      $('#missed-result').textContent = `${n ? `${done} ` : ''}Stopped: ${report.stopped.message}`;
    } else {
      banner.dataset.state = 'done';
      $('#missed-result').textContent = n ? done : 'None was waiting.';
    }
    for (const r of report.results) if (state.entries.has(r.replay_of)) refreshEntry(r.replay_of);
  } else {
    banner.dataset.state = 'stopped';
    $('#missed-result').textContent = `Could not deliver: ${error.message}`;
  }
  await refreshMissed();
  renderMissed();
}

// ---- one request's detail

function header(headers, name) {
  const h = (headers || []).find(([n]) => n.toLowerCase() === name);
  return h ? h[1] : '';
}

function decodeBase64(b64) {
  const bin = atob(b64 || '');
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return bytes;
}

// The bytes as text, or null when they are binary. A truncated capture may end
// inside a UTF-8 sequence, so up to 3 trailing bytes may be dropped.
function asText(bytes, truncated) {
  const decoder = new TextDecoder('utf-8', { fatal: true });
  for (let cut = 0; cut <= (truncated ? 3 : 0) && cut < bytes.length; cut++) {
    try {
      const text = decoder.decode(bytes.subarray(0, bytes.length - cut));
      return /[\x00-\x08\x0e-\x1f\x7f]/.test(text) ? null : text;
    } catch {
      // Not UTF-8 at this length; try one byte shorter.
    }
  }
  return null;
}

// A captured body as the page reads it (for the Hasura view and the edit
// form; what is displayed comes from `shown`): {kind, text, raw, bytes}.
function readBody(part) {
  const bytes = decodeBase64(part.body);
  if (bytes.length === 0) return { kind: 'empty', text: '', bytes };
  const text = asText(bytes, part.body_truncated);
  if (text === null) return { kind: 'binary', text: null, bytes };
  const type = header(part.headers, 'content-type').toLowerCase();
  if (type.includes('json') || /^\s*[[{]/.test(text)) {
    try {
      return { kind: 'json', text: JSON.stringify(JSON.parse(text), null, 2), raw: text, bytes };
    } catch {
      // Not valid JSON (or cut short): shown as it is.
    }
  }
  return { kind: 'text', text, raw: text, bytes };
}

function bodyView(part, body) {
  const captured = decodeBase64(part.body).length;
  const info = el(
    'p',
    { class: 'body-info muted' },
    `${fmtSize(part.body_size)}`,
    body.kind === 'json' ? ' · JSON' : null,
    body.kind === 'binary' ? ' · binary' : null,
    part.body_truncated ? el('span', { class: 'truncated' }, ` · truncated: ${fmtSize(captured)} captured`) : null,
  );
  if (body.kind === 'empty') {
    return [info, el('p', { class: 'muted none' }, part.body_size ? 'Body not captured.' : 'No body.')];
  }
  const more = body.kind === 'binary' && body.shown_bytes < captured ? `\n… first ${body.shown_bytes} of ${captured} captured bytes` : '';
  return [info, el('pre', { class: 'body', 'data-kind': body.kind }, body.text + more)];
}

function headersTable(headers) {
  if (!headers || headers.length === 0) return el('p', { class: 'muted none' }, 'No headers.');
  return el(
    'table',
    { class: 'headers' },
    el('tbody', {}, headers.map(([n, v]) => el('tr', {}, el('th', {}, n), el('td', {}, v)))),
  );
}

// ---- the diff of a replay against its original (relay replay --diff)

function jsonValue(v) {
  const t = JSON.stringify(v);
  return t.length > 120 ? `${t.slice(0, 120)}…` : t;
}

function diffView(d, originalId) {
  const head = el('h3', {}, 'Diff against ', originalId ? el('a', { href: `#${originalId}` }, originalId) : 'the original');
  const same = !d.status && d.headers.length === 0 && d.body.kind === 'same';
  const parts = [];
  if (same) parts.push(el('p', { class: 'muted' }, 'Same response: status, headers (volatile ones such as Date ignored) and body.'));
  if (d.status) {
    const st = (s) => (s == null ? 'no response' : String(s));
    parts.push(el('p', { class: 'diff-status' }, 'status ', el('del', { class: statusClass(d.status.before) }, st(d.status.before)), ' → ',
      el('ins', { class: statusClass(d.status.after) }, st(d.status.after))));
  }
  if (d.headers.length) {
    parts.push(el('table', { class: 'headers diff-headers' }, el('tbody', {}, d.headers.map((h) =>
      el('tr', { 'data-kind': h.kind },
        el('td', { class: 'sign' }, { added: '+', removed: '−', changed: '~' }[h.kind]),
        el('th', {}, h.name),
        el('td', {},
          h.before != null ? el('del', {}, h.before) : null,
          h.before != null && h.after != null ? ' → ' : null,
          h.after != null ? el('ins', {}, h.after) : null)),
    ))));
  }
  const b = d.body;
  if (b.kind === 'json') {
    parts.push(el('ul', { class: 'json-changes' }, b.changes.map((c) => {
      const path = c.path || '(the whole body)';
      const text = c.kind === 'added' ? `+ ${path}: ${jsonValue(c.after)}`
        : c.kind === 'removed' ? `- ${path}: ${jsonValue(c.before)}`
          : `${path}: ${jsonValue(c.before)} -> ${jsonValue(c.after)}`;
      return el('li', { 'data-kind': c.kind, 'data-path': c.path }, text);
    })));
    if (b.more > 0) parts.push(el('p', { class: 'muted' }, `… and ${b.more} more changes`));
  } else if (b.kind === 'text') {
    parts.push(el('pre', { class: 'body unified' }, b.unified.replace(/\n$/, '').split('\n').map((line) => {
      const cls = /^(---|\+\+\+) /.test(line) ? 'file' : line.startsWith('@@') ? 'hunk'
        : line.startsWith('+') ? 'add' : line.startsWith('-') ? 'del' : null;
      return el('span', { class: cls ? `line ${cls}` : 'line' }, line || '\u200b');
    })));
  } else if (b.kind === 'binary') {
    const dg = (x) => `${x.size} bytes (sha256 ${x.sha256.slice(0, 12)})`;
    parts.push(el('p', { class: 'mono' }, 'body: ', el('del', {}, dg(b.before)), ' → ', el('ins', {}, dg(b.after))));
  }
  if (d.original_truncated) parts.push(el('p', { class: 'muted' }, "The original's body was truncated: only its captured part was compared."));
  if (d.replay_truncated) parts.push(el('p', { class: 'muted' }, "The replay's body was truncated: only its captured part was compared."));
  return el('section', { class: 'part diff', 'data-same': same }, head, parts);
}

// ---- provider views: the rules and wording of relay-client/src/provider.rs.
// Claims are decoded here, in the page, and never verified (the page says
// so); the token itself stays masked in the headers table.

const MAX_TOKEN_CHARS = 64 * 1024;

// The token of the first `Authorization: Bearer ...` header, or null.
function bearerToken(headers) {
  for (const [n, v] of headers || []) {
    if (n.trim().toLowerCase() !== 'authorization') continue;
    const t = v.trim();
    const space = t.indexOf(' ');
    if (space > 0 && t.slice(0, space).toLowerCase() === 'bearer') return t.slice(space + 1).trim();
  }
  return null;
}

// One base64url JWT part as a JSON object; throws the reason it is not one.
function jwtPart(part, which) {
  const unpadded = part.replace(/=+$/, '');
  if (!/^[A-Za-z0-9_-]*$/.test(unpadded) || unpadded.length % 4 === 1) throw new Error(`its ${which} is not base64url`);
  let value;
  try {
    const bytes = decodeBase64(unpadded.replace(/-/g, '+').replace(/_/g, '/'));
    value = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch {
    throw new Error(`its ${which} is not JSON`);
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new Error(`its ${which} is JSON but not an object`);
  return value;
}

// {alg, claims: {iss, ...}} or {notJwt: 'why'}.
function decodeJwt(token) {
  if (token.length > MAX_TOKEN_CHARS) return { notJwt: `${token.length} characters, more than the ${MAX_TOKEN_CHARS} decoded` };
  const parts = token.split('.');
  if (parts.length !== 3) return { notJwt: `${parts.length} dot-separated parts, a JWT has 3` };
  try {
    const header = jwtPart(parts[0], 'header');
    const payload = jwtPart(parts[1], 'payload');
    if (!/^[A-Za-z0-9_=-]*$/.test(parts[2])) throw new Error('its signature is not base64url');
    return { alg: 'alg' in header ? claimText(header.alg) : null, payload };
  } catch (e) {
    return { notJwt: e.message };
  }
}

function claimText(v) {
  return typeof v === 'string' ? v : JSON.stringify(v);
}

// `42 s`, `5 min`, `2 h`, `3 d`, rounded down.
function fmtSpan(secs) {
  if (secs < 60) return `${secs} s`;
  if (secs < 3600) return `${Math.floor(secs / 60)} min`;
  if (secs < 86400) return `${Math.floor(secs / 3600)} h`;
  return `${Math.floor(secs / 86400)} d`;
}

function agoOrIn(at, now) {
  if (at === now) return 'just now';
  return at > now ? `in ${fmtSpan(at - now)}` : `${fmtSpan(now - at)} ago`;
}

// A NumericDate claim in local time with what it means now: `expired 2 h ago`.
function timeClaim(name, v, now) {
  if (typeof v !== 'number' || !Number.isFinite(v)) return { text: `${claimText(v)} (not a time)`, bad: true };
  const at = Math.trunc(v);
  const d = new Date(at * 1000);
  const when = Number.isNaN(d.getTime()) ? String(at) : d.toLocaleString();
  let rel;
  let bad = false;
  if (name === 'exp') {
    bad = at <= now;
    rel = bad ? `expired ${agoOrIn(at, now)}` : `expires ${agoOrIn(at, now)}`;
  } else if (name === 'nbf') {
    bad = at > now;
    rel = bad ? `not yet valid: ${agoOrIn(at, now)}` : `valid since ${agoOrIn(at, now)}`;
  } else rel = `issued ${agoOrIn(at, now)}`;
  return { text: `${when} (${rel})`, bad };
}

function jwtView(token) {
  const jwt = decodeJwt(token);
  if (jwt.notJwt) {
    return el('section', { class: 'part provider', 'data-provider': 'not-jwt' },
      el('h3', {}, 'Bearer token'), el('p', { class: 'muted' }, `Not a JWT (${jwt.notJwt}).`));
  }
  const p = jwt.payload;
  const now = Math.floor(Date.now() / 1000);
  const rows = [];
  const row = (name, text, bad) =>
    rows.push(el('tr', { 'data-claim': name, class: bad ? 'bad' : null }, el('th', {}, name), el('td', {}, text)));
  for (const name of ['iss', 'sub', 'aud', 'azp', 'scope']) {
    if (!(name in p)) continue;
    row(name, name === 'aud' && Array.isArray(p.aud) ? p.aud.map(claimText).join(', ') : claimText(p[name]));
  }
  for (const name of ['iat', 'exp', 'nbf']) {
    if (!(name in p)) continue;
    const t = timeClaim(name, p[name], now);
    row(name, t.text, t.bad);
  }
  return el('section', { class: 'part provider', 'data-provider': 'jwt' },
    el('h3', {}, 'JWT ', el('span', { class: 'note' }, `not verified${jwt.alg ? ` · ${jwt.alg}` : ''}`)),
    rows.length ? el('table', { class: 'headers claims' }, el('tbody', {}, rows))
      : el('p', { class: 'muted' }, 'None of iss, sub, aud, azp, scope, iat, exp, nbf.'),
  );
}

// {name, input, sessionVariables, query} for a Hasura Action call, else null.
function hasuraAction(method, part) {
  if (method.toUpperCase() !== 'POST' || !part) return null;
  const body = readBody(part);
  if (body.kind !== 'json' || part.body_truncated) return null;
  let v;
  try {
    v = JSON.parse(body.raw);
  } catch {
    return null;
  }
  const isObject = (x) => x !== null && typeof x === 'object' && !Array.isArray(x);
  if (!isObject(v) || !isObject(v.action) || typeof v.action.name !== 'string' || !('input' in v)) return null;
  if (!isObject(v.session_variables)) return null;
  if (v.request_query != null && typeof v.request_query !== 'string') return null;
  return {
    name: v.action.name,
    input: JSON.stringify(v.input, null, 2),
    sessionVariables: Object.entries(v.session_variables).map(([k, x]) => [k, claimText(x)]).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)),
    query: v.request_query ?? null,
  };
}

function hasuraView(a) {
  return el('section', { class: 'part provider', 'data-provider': 'hasura' },
    el('h3', {}, 'Hasura action ', el('span', { class: 'action-name' }, a.name)),
    a.query ? el('pre', { class: 'body query' }, a.query) : null,
    el('p', { class: 'body-info muted' }, 'input'),
    el('pre', { class: 'body', 'data-kind': 'json' }, a.input),
    el('p', { class: 'body-info muted' }, 'session_variables'),
    a.sessionVariables.length
      ? el('table', { class: 'headers session-variables' },
        el('tbody', {}, a.sessionVariables.map(([n, v]) => el('tr', {}, el('th', {}, n), el('td', {}, v)))))
      : el('p', { class: 'muted' }, 'None.'),
  );
}

// The JWT and Hasura sections of a request, shown before its headers.
function providerViews(rec) {
  const req = rec.request;
  if (!req) return [];
  const token = bearerToken(req.headers);
  const action = hasuraAction(rec.method, req);
  return [token != null ? jwtView(token) : null, action ? hasuraView(action) : null];
}

// ---- one request's detail: summary, headers and raw views

function partView(title, part, shown) {
  const cls = `part part-${title.toLowerCase()}`;
  if (!part) return el('section', { class: cls }, el('h3', {}, title), el('p', { class: 'muted none' }, 'No response captured.'));
  return el('section', { class: cls }, el('h3', {}, title), bodyView(part, shown.body));
}

function headersView(title, part, shown) {
  const cls = `part part-${title.toLowerCase()}-headers`;
  if (!part) return el('section', { class: cls }, el('h3', {}, `${title} headers`), el('p', { class: 'muted none' }, 'No response captured.'));
  return el('section', { class: cls }, el('h3', {}, `${title} headers`), headersTable(shown.headers));
}

// Shows request `id`; driven by the URL hash so the back button and links work.
async function show(id) {
  if (!id) return;
  if (location.hash !== `#${id}`) {
    location.hash = id; // comes back here through hashchange
    return;
  }
  state.selected = id;
  for (const r of $('#requests tbody').rows) r.classList.toggle('selected', r.dataset.id === id);
  rowOf(id)?.scrollIntoView({ block: 'nearest' });
  $('#placeholder').hidden = true;
  $('#detail').hidden = false;
  $('#edit-form').hidden = true;
  $('#curl-out').hidden = true;
  fill($('#replay-result'));
  fill($('#detail-head'), el('p', { class: 'muted' }, 'Loading…'));
  fill($('#exchange'));
  try {
    const rec = await api(requestApi(id, state.showSecrets ? '?secrets=1' : ''));
    if (state.selected !== id) return; // another request was picked meanwhile
    state.record = rec;
    renderDetail(rec);
  } catch (e) {
    if (state.selected !== id) return;
    state.record = null;
    fill($('#detail-head'), el('p', { class: 'error' }, `Could not load ${id}: ${e.message}`));
  }
}

function closeDetail() {
  state.selected = null;
  state.record = null;
  history.replaceState(null, '', location.pathname + location.search);
  for (const r of $('#requests tbody').rows) r.classList.remove('selected');
  $('#detail').hidden = true;
  $('#placeholder').hidden = false;
}

function renderDetail(rec) {
  const sep = () => el('span', { class: 'sep' }, '·');
  fill($('#detail-head'),
    el('h2', {}, el('span', { class: 'method' }, rec.method), ' ', el('span', { class: 'path' }, rec.shown.path)),
    el(
      'p',
      { class: 'meta' },
      el('span', { class: statusClass(rec.status) }, rec.status ?? 'no status'), sep(),
      el('span', { class: outcomeClass(rec.outcome) }, rec.outcome), sep(),
      el('span', {}, fmtMs(rec.duration_ms)), sep(),
      timeEl(rec.time, fmtFull(rec.time)), sep(),
      el('code', { class: 'id' }, rec.id), sep(),
      el('span', {}, `${fmtSize(rec.request_size)} in, ${fmtSize(rec.response_size)} out`),
    ),
    rec.deadline_exceeded_ms != null
      ? el('p', { class: 'meta mark-line deadline' }, el('span', { class: 'mark deadline' }, 'deadline'), ` Over the caller's ${fmtMs(rec.deadline_exceeded_ms)} deadline: the answer took ${fmtMs(rec.duration_ms)}, the caller would have given up.`)
      : null,
    rec.fault
      ? el('p', { class: 'meta mark-line fault' }, el('span', { class: 'mark fault' }, 'fault'), ` Answered by relay's fault injection (${rec.fault}), not by the local app.`)
      : null,
    rec.replay_of ? el('p', { class: 'meta replay-of' }, 'Replay of ', el('a', { href: `#${rec.replay_of}` }, rec.replay_of)) : null,
    rec.replays && rec.replays.length
      ? el('p', { class: 'meta replays' }, `Replayed ${rec.replays.length}×: `, rec.replays.map((r, i) => [
        i ? ', ' : null,
        el('a', { href: `#${r.id}`, 'data-id': r.id, title: fmtFull(r.time) }, r.id),
        ' ', el('span', { class: statusClass(r.status) }, r.status ?? r.outcome),
      ]).flat())
      : null,
    rec.delivery ? deliveryView(rec) : null,
  );
  $('#har-one').href = requestApi(rec.id).replace('/requests/', '/har?ids=');
  const summary = el('div', { class: 'panel', 'data-tab': 'summary' },
    rec.shown.diff ? diffView(rec.shown.diff, rec.replay_of) : null,
    providerViews(rec),
    partView('Request', rec.request, rec.shown.request),
    partView('Response', rec.response, rec.shown.response));
  const headers = el('div', { class: 'panel', 'data-tab': 'headers' },
    headersView('Request', rec.request, rec.shown.request),
    headersView('Response', rec.response, rec.shown.response));
  const raw = el('div', { class: 'panel', 'data-tab': 'raw' }, el('pre', { class: 'body raw' }, rec.shown.raw));
  fill($('#exchange'), summary, headers, raw);
  selectTab(state.tab);
}

function selectTab(tab) {
  state.tab = tab;
  for (const b of document.querySelectorAll('#tabs button')) b.setAttribute('aria-selected', String(b.dataset.tab === tab));
  for (const p of document.querySelectorAll('#exchange .panel')) p.hidden = p.dataset.tab !== tab;
}

function deliveryView(rec) {
  const label = el('span', { class: 'delivery', 'data-delivery': rec.delivery }, rec.delivery);
  if (rec.delivery === 'delivered' && rec.delivered_by) {
    return el('p', { class: 'meta delivery-line' }, 'Missed request · ', label, ' by ', el('a', { href: `#${rec.delivered_by}` }, rec.delivered_by));
  }
  if (rec.delivery === 'failed') {
    return el('p', { class: 'meta delivery-line' }, 'Missed request · ', label, ': ', rec.delivery_error || 'no reason recorded', ' (tried again by the next delivery)');
  }
  return el('p', { class: 'meta delivery-line' }, 'Missed request · ', label, ' (waiting to be delivered)');
}

// ---- replay; every replay from the page is compared with its original

async function replay(edits) {
  const id = state.selected;
  if (!id) return;
  const out = $('#replay-result');
  const buttons = [$('#replay'), $('#edit-replay'), $('#edit-send')];
  buttons.forEach((b) => (b.disabled = true));
  fill(out, el('p', { class: 'muted' }, 'Replaying…'));
  let result = null;
  let error = null;
  try {
    result = await post(requestApi(id, '/replay'), { ...edits, diff: true });
  } catch (e) {
    error = e;
  }
  buttons.forEach((b) => (b.disabled = false));
  if (state.selected !== id) return;
  if (result) {
    fill(out, resultView(result, null));
    // The recorded replay carries the diff with its headers masked.
    if (result.id) {
      try {
        const rec = await api(requestApi(result.id, state.showSecrets ? '?secrets=1' : ''));
        if (state.selected === id && rec.shown.diff) fill(out, resultView(result, rec.shown.diff));
      } catch {
        // The result stays without its diff; the replay's own entry has it.
      }
    }
  } else if (error.code === 'body_truncated') {
    fill(out,
      el('p', { class: 'error' }, error.message),
      el('button', { id: 'replay-force', type: 'button', onclick: () => replay({ ...edits, force: true }) }, 'Replay anyway'),
    );
  } else fill(out, el('p', { class: 'error' }, `Replay failed: ${error.message}`));
}

function resultView(r, diff) {
  return el(
    'div',
    { class: `result ${r.outcome === 'delivered' ? 'ok' : 'bad'}`, 'data-new-id': r.id || '' },
    el(
      'p',
      {},
      'Replayed: ',
      el('strong', { class: statusClass(r.status) }, r.status ?? 'no response'),
      ' · ',
      el('span', { class: outcomeClass(r.outcome) }, r.outcome),
      ' · ',
      fmtMs(r.duration_ms),
      ' · ',
      el('span', { class: 'mono' }, r.target),
      r.id ? [' · recorded as ', el('a', { href: `#${r.id}` }, r.id)] : null,
    ),
    r.error ? el('p', { class: 'error' }, r.error) : null,
    r.id ? null : el('p', { class: 'muted' }, 'The replay could not be recorded.'),
    diff ? diffView(diff, r.replay_of) : null,
  );
}

function openEditor() {
  const rec = state.record;
  if (!rec) return;
  const req = rec.request || { headers: [], body: '' };
  const body = readBody(req);
  $('#edit-method').value = rec.method;
  $('#edit-path').value = rec.path;
  $('#edit-headers').value = (req.headers || []).map(([n, v]) => `${n}: ${v}`).join('\n');
  // A binary body cannot round-trip through a textarea: the field starts empty
  // and the captured bytes are kept unless something is typed (sendEdited).
  $('#edit-body').value = body.kind === 'binary' ? '' : body.raw || '';
  $('#edit-body').placeholder =
    body.kind === 'binary' ? `Binary body (${fmtSize(body.bytes.length)}) kept as captured unless you type a replacement` : '';
  $('#edit-error').hidden = true;
  $('#edit-form').hidden = false;
  $('#edit-method').focus();
}

function parseHeaders(text) {
  const headers = [];
  for (const [i, line] of text.split('\n').entries()) {
    if (!line.trim()) continue;
    const colon = line.indexOf(':');
    if (colon <= 0) throw new Error(`Header line ${i + 1} is not "Name: value": ${line}`);
    headers.push([line.slice(0, colon).trim(), line.slice(colon + 1).trim()]);
  }
  return headers;
}

function sendEdited(e) {
  e.preventDefault();
  let headers;
  try {
    headers = parseHeaders($('#edit-headers').value);
  } catch (err) {
    $('#edit-error').textContent = err.message;
    $('#edit-error').hidden = false;
    return;
  }
  $('#edit-error').hidden = true;
  const edits = { method: $('#edit-method').value.trim(), path: $('#edit-path').value.trim(), headers };
  const body = $('#edit-body').value;
  const binary = readBody(state.record.request || { body: '' }).kind === 'binary';
  if (!(binary && body === '')) edits.body = body;
  replay(edits);
}

// ---- copy as curl: the command `relay requests export --format curl` prints

async function copyCurl() {
  const id = state.selected;
  if (!id) return;
  const out = $('#curl-out');
  let c;
  try {
    c = await post(requestApi(id, '/curl'));
  } catch (e) {
    fill($('#curl-note'), el('span', { class: 'error' }, `Could not make the command: ${e.message}`));
    $('#curl-text').textContent = '';
    out.hidden = false;
    return;
  }
  if (state.selected !== id) return;
  $('#curl-text').textContent = c.text;
  out.hidden = false;
  let copied = false;
  if (!c.refused) {
    try {
      await navigator.clipboard.writeText(c.text);
      copied = true;
    } catch {
      // No clipboard (an insecure context, or permission refused): select it instead.
      const range = document.createRange();
      range.selectNodeContents($('#curl-text'));
      getSelection().removeAllRanges();
      getSelection().addRange(range);
    }
  }
  fill($('#curl-note'),
    c.refused ? el('span', { class: 'error' }, `No command: ${c.refused}`) : copied ? 'Copied to the clipboard.' : 'Selected: press Ctrl+C to copy.',
    c.body_file ? ` The body is read from ${c.body_file}.` : null);
}

// ---- keyboard: j/k move, r replays, e edits, / searches, Esc closes

function moveSelection(step) {
  const rows = [...$('#requests tbody').rows];
  if (!rows.length) return;
  const at = rows.findIndex((r) => r.dataset.id === state.selected);
  const next = at < 0 ? (step > 0 ? 0 : rows.length - 1) : Math.min(rows.length - 1, Math.max(0, at + step));
  show(rows[next].dataset.id);
}

function onKey(e) {
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  const t = e.target;
  const typing = t.isContentEditable || ['TEXTAREA', 'SELECT'].includes(t.tagName)
    || (t.tagName === 'INPUT' && !['checkbox', 'radio', 'button', 'submit'].includes(t.type));
  if (e.key === 'Escape') {
    if (typing) e.target.blur();
    if (!$('#edit-form').hidden) $('#edit-form').hidden = true;
    else if (!$('#curl-out').hidden) $('#curl-out').hidden = true;
    else if (!typing && state.selected) closeDetail();
    return;
  }
  if (typing) return;
  const keys = {
    j: () => moveSelection(1),
    k: () => moveSelection(-1),
    r: () => state.record && replay({}),
    e: () => state.record && openEditor(),
    '/': () => $('#search').focus(),
  };
  const act = keys[e.key];
  if (!act) return;
  e.preventDefault();
  act();
}

// ---- start

async function switchTunnel(name) {
  state.tunnel = name;
  // Kept in the address, so that a reload or a link shows the same tunnel.
  history.replaceState(null, '', `?tunnel=${encodeURIComponent(name)}`);
  await loadTunnels();
  closeDetail();
  state.streamOpen = null;
  state.connected = null;
  state.missed = null;
  $('#missed-result').textContent = '';
  renderMissed();
  renderLive();
  refreshStatus();
  resetList();
  listen();
}

async function start() {
  $('#search').addEventListener('input', (e) => {
    clearTimeout(state.searchTimer);
    state.searchTimer = setTimeout(() => {
      state.query = e.target.value.trim();
      resetList();
    }, 250);
  });
  $('#load-older').addEventListener('click', loadOlder);
  $('#har-list').addEventListener('click', () => downloadHar(shownIds()));
  $('#replay').addEventListener('click', () => replay({}));
  $('#edit-replay').addEventListener('click', openEditor);
  $('#copy-curl').addEventListener('click', copyCurl);
  $('#curl-close').addEventListener('click', () => ($('#curl-out').hidden = true));
  $('#edit-form').addEventListener('submit', sendEdited);
  $('#edit-cancel').addEventListener('click', () => ($('#edit-form').hidden = true));
  $('#deliver-missed').addEventListener('click', deliverAll);
  $('#tunnel-select').addEventListener('change', (e) => switchTunnel(e.target.value));
  for (const b of document.querySelectorAll('#tabs button')) b.addEventListener('click', () => selectTab(b.dataset.tab));
  $('#show-secrets').addEventListener('change', (e) => {
    state.showSecrets = e.target.checked;
    for (const r of [...$('#requests tbody').rows]) r.replaceWith(rowFor(state.entries.get(r.dataset.id)));
    if (state.selected) refreshEntry(state.selected);
  });
  window.addEventListener('hashchange', () => (location.hash ? show(location.hash.slice(1)) : closeDetail()));
  document.addEventListener('keydown', onKey);

  renderLive();
  state.tunnel = new URLSearchParams(location.search).get('tunnel');
  await loadTunnels();
  refreshStatus();
  // The status poll also notices the tunnel going offline while the stream stays open.
  setInterval(refreshStatus, 10000);
  resetList();
  refreshMissed();
  listen();
  if (location.hash) show(location.hash.slice(1));
}

start();
