// The app on the developer's laptop: an Express GraphQL API with the
// `addUser(email)` mutation that the Auth0 post-login Action calls on a
// user's first login, and a `users` query to see who is in the database.
//
// Environment:
//   ACTION_SECRET  required: callers must send `Authorization: Bearer $ACTION_SECRET`
//   PORT           default 4000; 0 picks a free port
//   HOST           default 127.0.0.1
//   USERS_FILE     the JSON file the users are kept in
//                  (default: users.json in a new temp dir)
//
// Prints `app listening on http://HOST:PORT` with the port it really bound.

'use strict';

const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const express = require('express');
const { buildSchema } = require('graphql');
const { createHandler } = require('graphql-http/lib/use/express');

const secret = process.env.ACTION_SECRET;
if (!secret) {
  console.error('app: set ACTION_SECRET (the bearer secret the Action sends)');
  process.exit(1);
}
const host = process.env.HOST || '127.0.0.1';
const port = Number(process.env.PORT ?? 4000);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(`app: bad PORT ${JSON.stringify(process.env.PORT)}`);
  process.exit(1);
}
const usersFile =
  process.env.USERS_FILE ||
  path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'auth0-demo-')), 'users.json');

// --- the "database": a JSON file of {id, email} rows ------------------------

function loadUsers() {
  try {
    return JSON.parse(fs.readFileSync(usersFile, 'utf8'));
  } catch (e) {
    if (e.code === 'ENOENT') return [];
    throw e;
  }
}

function saveUsers(users) {
  // Write then rename, so a reader never sees half a file.
  const tmp = `${usersFile}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify(users, null, 2) + '\n');
  fs.renameSync(tmp, usersFile);
}

// --- GraphQL ----------------------------------------------------------------

const schema = buildSchema(`
  type User {
    id: ID!
    email: String!
  }

  type Query {
    users: [User!]!
  }

  type Mutation {
    "Adds a user; a user with that email already there is returned as is."
    addUser(email: String!): User!
  }
`);

const rootValue = {
  users: () => loadUsers(),
  addUser: ({ email }) => {
    const normalized = email.trim().toLowerCase();
    if (!/^[^@\s]+@[^@\s]+$/.test(normalized)) {
      throw new Error(`not an email address: ${JSON.stringify(email)}`);
    }
    const users = loadUsers();
    const existing = users.find((u) => u.email === normalized);
    if (existing) {
      log(`addUser ${normalized}: already there (id ${existing.id})`);
      return existing;
    }
    const id = String(users.reduce((max, u) => Math.max(max, Number(u.id)), 0) + 1);
    const user = { id, email: normalized };
    users.push(user);
    saveUsers(users);
    log(`addUser ${normalized}: added (id ${id})`);
    return user;
  },
};

// --- HTTP -------------------------------------------------------------------

function log(msg) {
  console.log(`app: ${msg}`);
}

function bearerOk(header) {
  const m = /^Bearer (.+)$/.exec(header || '');
  if (!m) return false;
  const given = crypto.createHash('sha256').update(m[1]).digest();
  const wanted = crypto.createHash('sha256').update(secret).digest();
  return crypto.timingSafeEqual(given, wanted);
}

const app = express();
app.disable('x-powered-by');

app.use((req, res, next) => {
  const via = req.get('x-forwarded-prefix') ? ` (via relay ${req.get('x-forwarded-prefix')})` : '';
  res.on('finish', () => log(`${req.method} ${req.originalUrl} -> ${res.statusCode}${via}`));
  next();
});

app.get('/', (req, res) => {
  res.type('text/plain').send('auth0-action example app: POST /graphql\n');
});

app.use('/graphql', (req, res, next) => {
  if (bearerOk(req.get('authorization'))) return next();
  res
    .status(401)
    .set('WWW-Authenticate', 'Bearer')
    .json({ error: 'unauthorized', message: 'missing or wrong bearer secret' });
});

app.all('/graphql', createHandler({ schema, rootValue }));

const server = app.listen(port, host, () => {
  const { port: bound } = server.address();
  log(`users are kept in ${usersFile}`);
  // The line scripts wait for.
  console.log(`app listening on http://${host}:${bound}`);
});
server.on('error', (e) => {
  console.error(`app: ${e.message}`);
  process.exit(1);
});

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    server.close(() => process.exit(0));
    server.closeAllConnections();
  });
}
