// relay inspector: the request list (first page from /api/requests, then live
// from /api/events), one request's detail with replay, and the banner of
// missed requests (/api/missed) with Deliver all. The API is docs/api.md.
// Paths, headers and bodies come from whoever reached the public URL, so
// captured data only ever reaches the page as text nodes (el() below), never
// as HTML. Secrets are masked as `relay requests show` masks them; a bearer
// JWT's claims and a Hasura Action call's parts are shown as it shows them.
'use strict';

const $ = (sel) => document.querySelector(sel);

const state = {
  entries: new Map(), // id -> summary, for every row in the list
  nextBefore: null, // `before` for "Load older"; null when there is nothing older
  filter: '',
  generation: 0, // bumped when the list is reset, so late answers for an old list are dropped
  selected: null, // id shown in the detail pane
  record: null, // its full record
  streamOpen: null, // null until the event stream first answers
  connected: null, // the tunnel's session to the server, from /api/status
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

// ---- formatting

// Local wall-clock time, to the second (the row's title has the full timestamp).
function fmtTime(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  const p = (n) => String(n).padStart(2, '0');
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
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

// ---- secrets: the rules of relay-client/src/secrets.rs and output.rs's redact_query

const SECRET_HEADERS = ['authorization', 'proxy-authorization', 'cookie', 'set-cookie'];
const SECRET_WORDS = ['token', 'secret', 'signature', 'api-key', 'apikey', 'password'];
const SECRET_QUERY = ['token', 'secret', 'key', 'pass', 'sig', 'auth', 'code', 'session', 'jwt'];

// `prefix… [N chars]`: up to 8 characters kept, never more than a quarter.
function mask(secret) {
  const chars = [...secret];
  if (chars.length === 0) return '';
  return `${chars.slice(0, Math.min(8, Math.floor(chars.length / 4))).join('')}… [${chars.length} chars]`;
}

function maskPair(pair) {
  const eq = pair.indexOf('=');
  return eq < 0 ? mask(pair) : `${pair.slice(0, eq)}=${mask(pair.slice(eq + 1))}`;
}

function maskHeader(name, value) {
  const n = name.trim().toLowerCase();
  if (!SECRET_HEADERS.includes(n) && !SECRET_WORDS.some((w) => n.includes(w))) return value;
  if (n === 'cookie') return value.split(';').map((c) => maskPair(c.trim())).join('; ');
  if (n === 'set-cookie') {
    const semi = value.indexOf(';');
    return semi < 0 ? maskPair(value.trim()) : `${maskPair(value.slice(0, semi).trim())};${value.slice(semi + 1)}`;
  }
  const v = value.trim();
  if (n === 'authorization' || n === 'proxy-authorization') {
    const space = v.indexOf(' ');
    if (space >= 0) return `${v.slice(0, space)} ${mask(v.slice(space + 1).trim())}`;
  }
  return mask(v);
}

function redactQuery(path) {
  const q = path.indexOf('?');
  if (q < 0 || !path.includes('=', q)) return path;
  const parts = path.slice(q + 1).split('&').map((pair) => {
    const eq = pair.indexOf('=');
    if (eq < 0 || eq === pair.length - 1) return pair;
    const k = pair.slice(0, eq).toLowerCase();
    return SECRET_QUERY.some((w) => k.includes(w)) ? `${pair.slice(0, eq)}=***` : pair;
  });
  return `${path.slice(0, q)}?${parts.join('&')}`;
}

function shownPath(path) {
  return state.showSecrets ? path : redactQuery(path);
}

// ---- header: tunnel, URLs, target, live indicator

async function refreshStatus() {
  try {
    const s = await api('/api/status');
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

function matchesFilter(s) {
  return !state.filter || s.path.includes(state.filter);
}

// Newest first: by time, then by id for captures in the same millisecond.
function isNewer(a, b) {
  return a.time > b.time || (a.time === b.time && a.id > b.id);
}

function rowFor(s) {
  return el(
    'tr',
    {
      'data-id': s.id,
      tabindex: 0,
      class: s.id === state.selected ? 'selected' : null,
      onclick: () => show(s.id),
      onkeydown: (e) => e.key === 'Enter' && show(s.id),
    },
    el('td', { class: 'time', title: s.time }, fmtTime(s.time)),
    el('td', { class: 'method' }, s.method),
    el(
      'td',
      { class: 'path', title: shownPath(s.path) },
      s.replay_of ? el('span', { class: 'replay-mark', title: `replay of ${s.replay_of}` }, '↻ ') : null,
      shownPath(s.path),
    ),
    el('td', { class: statusClass(s.status) }, s.status ?? '—'),
    el(
      'td',
      { class: outcomeClass(s.outcome) },
      s.outcome,
      s.delivery ? el('span', { class: 'delivery', 'data-delivery': s.delivery, title: deliveryTitle(s) }, s.delivery) : null,
    ),
    el('td', { class: 'num' }, fmtMs(s.duration_ms)),
  );
}

function deliveryTitle(s) {
  if (s.delivery === 'delivered') return `delivered by ${s.delivered_by || 'a replay'}`;
  if (s.delivery === 'failed') return `delivery failed: ${s.delivery_error || 'no reason recorded'}; tried again by the next delivery`;
  return 'arrived while no client was connected; waiting to be delivered';
}

// A replay of a missed request settles it: show the original's new state.
function onLiveEntry(s) {
  if (s.outcome === 'offline' || s.replay_of) scheduleMissedRefresh();
  const orig = s.replay_of && state.entries.get(s.replay_of);
  if (orig && orig.delivery) refreshEntry(orig.id);
}

// Fetches one entry again and redraws its row (and its detail, if shown).
async function refreshEntry(id) {
  let rec;
  try {
    rec = await api(`/api/requests/${encodeURIComponent(id)}`);
  } catch {
    return; // retired meanwhile, or the server is away: the row stays as it was
  }
  const { request, response, ...summary } = rec;
  if (!state.entries.has(id)) return;
  state.entries.set(id, summary);
  const row = [...$('#requests tbody').rows].find((r) => r.dataset.id === id);
  if (row) row.replaceWith(rowFor(summary));
  if (state.selected === id && state.record) {
    state.record = rec;
    renderDetail(rec);
  }
}

function addEntry(s) {
  if (state.entries.has(s.id) || !matchesFilter(s)) return;
  state.entries.set(s.id, s);
  const body = $('#requests tbody');
  // New captures are the newest, so this usually stops at the first row.
  const next = [...body.rows].find((r) => isNewer(s, state.entries.get(r.dataset.id)));
  body.insertBefore(rowFor(s), next || null);
  $('#empty').hidden = true;
}

async function loadPage(before) {
  const gen = state.generation;
  const q = new URLSearchParams();
  if (state.filter) q.set('path', state.filter);
  if (before) q.set('before', before);
  try {
    const query = q.toString();
    const page = await api(`/api/requests${query ? `?${query}` : ''}`);
    if (gen !== state.generation) return null;
    page.requests.forEach(addEntry);
    $('#list-error').hidden = true;
    return page;
  } catch (e) {
    if (gen === state.generation) {
      $('#list-error').textContent = `Could not load requests: ${e.message}`;
      $('#list-error').hidden = false;
    }
    return null;
  }
}

// Starts the list over (first load, or a new filter).
async function resetList() {
  state.generation += 1;
  state.entries.clear();
  $('#requests tbody').replaceChildren();
  $('#empty').hidden = false;
  setOlder(null);
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

// The stream carries only what is stored after it connects, so every (re)open
// also reloads the newest page to fill the gap; rows already shown are kept.
function listen() {
  const es = new EventSource('/api/events');
  es.onopen = () => {
    state.streamOpen = true;
    loadPage(null);
    refreshStatus();
    refreshMissed();
  };
  es.onerror = () => {
    state.streamOpen = false;
    renderLive();
    // EventSource retries by itself, except after an HTTP error answer
    // (e.g. 502 while the server is away): then it is closed for good.
    if (es.readyState === EventSource.CLOSED) setTimeout(listen, 3000);
  };
  es.addEventListener('request', (e) => {
    let s;
    try {
      s = JSON.parse(e.data);
    } catch {
      return; // A malformed event is skipped; the next reconnect reloads the page anyway.
    }
    addEntry(s);
    onLiveEntry(s);
  });
}

// ---- missed requests: the banner and Deliver all

function scheduleMissedRefresh() {
  clearTimeout(state.missedTimer);
  state.missedTimer = setTimeout(refreshMissed, 300);
}

async function refreshMissed() {
  try {
    state.missed = await api('/api/missed?limit=0');
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
    report = await api('/api/missed/deliver', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{}',
    });
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

function hexDump(bytes) {
  const lines = [];
  for (let off = 0; off < bytes.length; off += 16) {
    const row = [...bytes.subarray(off, off + 16)];
    const hex = row.map((b) => b.toString(16).padStart(2, '0')).join(' ');
    const ascii = row.map((b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : '.')).join('');
    lines.push(`${off.toString(16).padStart(8, '0')}  ${hex.padEnd(47)}  ${ascii}`);
  }
  return lines.join('\n');
}

// A captured body as the page shows it: {kind: 'empty'|'json'|'text'|'binary', text, bytes}.
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

function bodyView(part) {
  const body = readBody(part);
  const info = el(
    'p',
    { class: 'body-info muted' },
    `Body · ${fmtSize(part.body_size)}`,
    body.kind === 'binary' ? ' · binary' : null,
    part.body_truncated
      ? el('span', { class: 'truncated' }, ` · truncated: ${fmtSize(body.bytes.length)} captured`)
      : null,
  );
  if (body.kind === 'empty') {
    return [info, el('p', { class: 'muted' }, part.body_size ? 'Body not captured.' : 'No body.')];
  }
  if (body.kind === 'binary') {
    const more = body.bytes.length > 256 ? `\n… first 256 of ${body.bytes.length} captured bytes` : '';
    return [info, el('pre', { class: 'body', 'data-kind': 'binary' }, hexDump(body.bytes.subarray(0, 256)) + more)];
  }
  return [info, el('pre', { class: 'body', 'data-kind': body.kind }, body.text)];
}

function headersTable(headers) {
  if (!headers || headers.length === 0) return el('p', { class: 'muted' }, 'No headers.');
  return el(
    'table',
    { class: 'headers' },
    el('tbody', {}, headers.map(([n, v]) => el('tr', {}, el('th', {}, n), el('td', {}, state.showSecrets ? v : maskHeader(n, v))))),
  );
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

function partView(title, part) {
  const cls = `part part-${title.toLowerCase()}`;
  if (!part) return el('section', { class: cls }, el('h3', {}, title), el('p', { class: 'muted' }, 'No response captured.'));
  return el('section', { class: cls }, el('h3', {}, title), headersTable(part.headers), bodyView(part));
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
  $('#placeholder').hidden = true;
  $('#detail').hidden = false;
  $('#edit-form').hidden = true;
  fill($('#replay-result'));
  fill($('#detail-head'), el('p', { class: 'muted' }, 'Loading…'));
  fill($('#exchange'));
  try {
    const rec = await api(`/api/requests/${encodeURIComponent(id)}`);
    if (state.selected !== id) return; // another request was picked meanwhile
    state.record = rec;
    renderDetail(rec);
  } catch (e) {
    if (state.selected !== id) return;
    state.record = null;
    fill($('#detail-head'), el('p', { class: 'error' }, `Could not load ${id}: ${e.message}`));
  }
}

function renderDetail(rec) {
  fill($('#detail-head'),
    el('h2', {}, el('span', { class: 'method' }, rec.method), ' ', el('span', { class: 'path' }, shownPath(rec.path))),
    el(
      'p',
      { class: 'meta' },
      el('span', { class: statusClass(rec.status) }, rec.status ?? 'no status'),
      ' · ',
      el('span', { class: outcomeClass(rec.outcome) }, rec.outcome),
      ' · ',
      fmtMs(rec.duration_ms),
      ' · ',
      el('time', { datetime: rec.time }, new Date(rec.time).toLocaleString()),
      ' · ',
      el('code', {}, rec.id),
    ),
    rec.replay_of ? el('p', { class: 'meta' }, 'Replay of ', el('a', { href: `#${rec.replay_of}` }, rec.replay_of)) : null,
    rec.delivery ? deliveryView(rec) : null,
  );
  fill($('#exchange'), providerViews(rec), partView('Request', rec.request), partView('Response', rec.response));
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

// ---- replay

async function replay(edits) {
  const id = state.selected;
  const out = $('#replay-result');
  const buttons = [$('#replay'), $('#edit-replay'), $('#edit-send')];
  buttons.forEach((b) => (b.disabled = true));
  fill(out, el('p', { class: 'muted' }, 'Replaying…'));
  let result = null;
  let error = null;
  try {
    result = await api(`/api/requests/${encodeURIComponent(id)}/replay`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(edits),
    });
  } catch (e) {
    error = e;
  }
  buttons.forEach((b) => (b.disabled = false));
  if (state.selected !== id) return;
  if (result) fill(out, resultView(result));
  else if (error.code === 'body_truncated') {
    fill(out,
      el('p', { class: 'error' }, error.message),
      el('button', { id: 'replay-force', type: 'button', onclick: () => replay({ ...edits, force: true }) }, 'Replay anyway'),
    );
  } else fill(out, el('p', { class: 'error' }, `Replay failed: ${error.message}`));
}

function resultView(r) {
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
    ),
    r.error ? el('p', { class: 'error' }, r.error) : null,
    r.id
      ? el('p', {}, 'Recorded as ', el('a', { href: `#${r.id}` }, r.id))
      : el('p', { class: 'muted' }, 'The replay could not be recorded.'),
    r.response
      ? el('details', {}, el('summary', {}, 'Response'), headersTable(r.response.headers), bodyView(r.response))
      : null,
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

// ---- start

function start() {
  let filterTimer;
  $('#filter').addEventListener('input', (e) => {
    clearTimeout(filterTimer);
    filterTimer = setTimeout(() => {
      state.filter = e.target.value;
      resetList();
    }, 250);
  });
  $('#load-older').addEventListener('click', loadOlder);
  $('#replay').addEventListener('click', () => replay({}));
  $('#edit-replay').addEventListener('click', openEditor);
  $('#edit-form').addEventListener('submit', sendEdited);
  $('#edit-cancel').addEventListener('click', () => ($('#edit-form').hidden = true));
  $('#deliver-missed').addEventListener('click', deliverAll);
  $('#show-secrets').addEventListener('change', (e) => {
    state.showSecrets = e.target.checked;
    for (const r of [...$('#requests tbody').rows]) r.replaceWith(rowFor(state.entries.get(r.dataset.id)));
    if (state.record) renderDetail(state.record);
  });
  window.addEventListener('hashchange', () => show(location.hash.slice(1)));

  renderLive();
  refreshStatus();
  // The status poll also notices the tunnel going offline while the stream stays open.
  setInterval(refreshStatus, 10000);
  resetList();
  refreshMissed();
  listen();
  if (location.hash) show(location.hash.slice(1));
}

start();
