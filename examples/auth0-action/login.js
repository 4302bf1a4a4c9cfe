// Plays Auth0 for one login: builds a post-login `event` and `api` like the
// Auth0 runtime does and runs the Action in action.js.
//
//   RELAY_URL=http://localhost:8080/t/NAME ACTION_SECRET=... \
//     node login.js --email alice@example.com [--logins-count 1]
//
// Prints each HTTP call the Action made and the outcome. Exit code:
//   0  the Action finished (its call, if any, was delivered, or queued by
//      relay while the app is offline)
//   2  the Action's call got an HTTP error (e.g. 503 tunnel_offline)
//   1  any other failure (no answer at all, bad usage, GraphQL error)

'use strict';

const { parseArgs } = require('node:util');
const axios = require('axios');
const { onExecutePostLogin } = require('./action');

function usage(msg) {
  console.error(`login: ${msg}`);
  console.error('usage: RELAY_URL=URL ACTION_SECRET=S node login.js --email EMAIL [--logins-count N]');
  process.exit(1);
}

let args;
try {
  args = parseArgs({
    options: {
      email: { type: 'string' },
      'logins-count': { type: 'string', default: '1' },
    },
  }).values;
} catch (e) {
  usage(e.message);
}
if (!args.email) usage('--email is required');
const loginsCount = Number(args['logins-count']);
if (!Number.isInteger(loginsCount) || loginsCount < 1) usage('--logins-count must be a positive integer');
for (const name of ['RELAY_URL', 'ACTION_SECRET']) {
  if (!process.env[name]) usage(`set ${name} (an Action secret)`);
}

// What Auth0 passes to a post-login Action (the parts this Action reads, and
// a few more for realism).
const event = {
  user: {
    user_id: `auth0|${Buffer.from(args.email).toString('hex').slice(0, 24)}`,
    email: args.email,
    email_verified: true,
    app_metadata: {},
  },
  stats: { logins_count: loginsCount },
  connection: { name: 'Username-Password-Authentication', strategy: 'auth0' },
  client: { name: 'relay auth0-action example', client_id: 'example' },
  request: { ip: '127.0.0.1', method: 'POST' },
  secrets: {
    RELAY_URL: process.env.RELAY_URL.replace(/\/+$/, ''),
    ACTION_SECRET: process.env.ACTION_SECRET,
  },
};

const api = {
  user: {
    setAppMetadata(key, value) {
      event.user.app_metadata[key] = value;
    },
  },
  access: {
    deny(reason) {
      throw new Error(`access denied: ${reason}`);
    },
  },
};

// Show each call the Action makes, as Auth0's Action logs would.
axios.interceptors.response.use(
  (res) => {
    console.log(`login: ${res.config.method.toUpperCase()} ${res.config.url} -> HTTP ${res.status}`);
    return res;
  },
  (err) => {
    const { config, response } = err;
    if (config) {
      const what = response ? `HTTP ${response.status}` : `no answer (${err.code || err.message})`;
      console.log(`login: ${config.method.toUpperCase()} ${config.url} -> ${what}`);
    }
    return Promise.reject(err);
  },
);

function body(data) {
  return typeof data === 'string' ? data : JSON.stringify(data);
}

(async () => {
  console.log(`login: ${args.email} logs in (logins_count ${loginsCount}); running the post-login Action`);
  try {
    await onExecutePostLogin(event, api);
  } catch (err) {
    if (err.response) {
      console.log(`login: Action failed: HTTP ${err.response.status}`);
      console.log(`login: response body: ${body(err.response.data)}`);
      process.exit(2);
    }
    console.log(`login: Action failed: ${err.message}`);
    process.exit(1);
  }
  const meta = JSON.stringify(event.user.app_metadata);
  console.log(`login: Action done; user app_metadata now ${meta}`);
  process.exit(0);
})();
