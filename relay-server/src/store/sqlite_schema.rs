//! SQLite's schema: numbered migrations, applied by `mod.rs`'s `migrate`.
//! PostgreSQL's (the final shape of these, written once) is in
//! `pg/schema.rs`.

/// Numbered migrations; entry `i` takes the schema from version `i` to `i + 1`.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: tokens (hashed) and the names they own.
    "CREATE TABLE tokens (
        id INTEGER PRIMARY KEY,
        label TEXT,
        hash BLOB NOT NULL UNIQUE,
        created_at INTEGER NOT NULL,
        revoked_at INTEGER
    );
    CREATE TABLE names (
        name TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        claimed_at INTEGER NOT NULL
    );",
    // 2: captured requests. Summary columns first and bodies last, so a
    // listing never reads a body's overflow pages.
    "CREATE TABLE requests (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        tunnel TEXT NOT NULL,
        time_ms INTEGER NOT NULL,
        method TEXT NOT NULL,
        path TEXT NOT NULL,
        status INTEGER,
        outcome TEXT NOT NULL,
        duration_ms INTEGER NOT NULL,
        replay_of TEXT,
        request_size INTEGER NOT NULL,
        request_truncated INTEGER NOT NULL,
        response_size INTEGER,
        response_truncated INTEGER,
        request_headers BLOB NOT NULL,
        response_headers BLOB,
        request_body BLOB NOT NULL,
        response_body BLOB
    );
    CREATE INDEX requests_by_tunnel ON requests (tunnel, seq);",
    // 3: delivery state of missed requests, and each name's offline
    // answer. `requests` is rebuilt so the new columns sit with the summary
    // ones, before the bodies (SQLite appends added columns after them).
    // Offline captures become missed, or delivered where a replay already
    // reached the app.
    "CREATE TABLE requests_v3 (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        tunnel TEXT NOT NULL,
        time_ms INTEGER NOT NULL,
        method TEXT NOT NULL,
        path TEXT NOT NULL,
        status INTEGER,
        outcome TEXT NOT NULL,
        duration_ms INTEGER NOT NULL,
        replay_of TEXT,
        delivery TEXT,
        delivered_by TEXT,
        delivery_error TEXT,
        claim TEXT,
        claimed_until INTEGER,
        request_size INTEGER NOT NULL,
        request_truncated INTEGER NOT NULL,
        response_size INTEGER,
        response_truncated INTEGER,
        request_headers BLOB NOT NULL,
        response_headers BLOB,
        request_body BLOB NOT NULL,
        response_body BLOB
    );
    INSERT INTO requests_v3 (seq, id, tunnel, time_ms, method, path, status, outcome,
        duration_ms, replay_of, request_size, request_truncated, response_size,
        response_truncated, request_headers, response_headers, request_body, response_body)
    SELECT seq, id, tunnel, time_ms, method, path, status, outcome,
        duration_ms, replay_of, request_size, request_truncated, response_size,
        response_truncated, request_headers, response_headers, request_body, response_body
    FROM requests;
    DROP TABLE requests;
    ALTER TABLE requests_v3 RENAME TO requests;
    CREATE INDEX requests_by_tunnel ON requests (tunnel, seq);
    CREATE INDEX requests_by_original ON requests (replay_of) WHERE replay_of IS NOT NULL;
    UPDATE requests SET delivery = 'missed' WHERE outcome = 'offline' AND replay_of IS NULL;
    UPDATE requests SET delivery = 'delivered', delivered_by = (
        SELECT r.id FROM requests r
        WHERE r.replay_of = requests.id AND r.outcome = 'delivered' AND r.status < 500
        ORDER BY r.seq LIMIT 1)
    WHERE delivery = 'missed';
    UPDATE requests SET delivery = 'missed' WHERE delivery = 'delivered' AND delivered_by IS NULL;
    CREATE INDEX requests_waiting ON requests (tunnel, seq) WHERE delivery IN ('missed', 'failed');
    ALTER TABLE names ADD COLUMN when_offline TEXT NOT NULL DEFAULT 'reject';",
    // 4: a replay's diff against its original (JSON), kept for the
    // inspector. Appended after the bodies: only full records read it.
    "ALTER TABLE requests ADD COLUMN diff TEXT;",
    // 5: the caller-deadline and fault marks. Summary columns, so the
    // table is rebuilt to keep them before the bodies, as in 3; existing
    // captures keep everything and have no marks.
    "CREATE TABLE requests_v5 (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        tunnel TEXT NOT NULL,
        time_ms INTEGER NOT NULL,
        method TEXT NOT NULL,
        path TEXT NOT NULL,
        status INTEGER,
        outcome TEXT NOT NULL,
        duration_ms INTEGER NOT NULL,
        replay_of TEXT,
        delivery TEXT,
        delivered_by TEXT,
        delivery_error TEXT,
        claim TEXT,
        claimed_until INTEGER,
        deadline_exceeded_ms INTEGER,
        fault TEXT,
        request_size INTEGER NOT NULL,
        request_truncated INTEGER NOT NULL,
        response_size INTEGER,
        response_truncated INTEGER,
        request_headers BLOB NOT NULL,
        response_headers BLOB,
        request_body BLOB NOT NULL,
        response_body BLOB,
        diff TEXT
    );
    INSERT INTO requests_v5 (seq, id, tunnel, time_ms, method, path, status, outcome,
        duration_ms, replay_of, delivery, delivered_by, delivery_error, claim, claimed_until,
        request_size, request_truncated, response_size, response_truncated, request_headers,
        response_headers, request_body, response_body, diff)
    SELECT seq, id, tunnel, time_ms, method, path, status, outcome,
        duration_ms, replay_of, delivery, delivered_by, delivery_error, claim, claimed_until,
        request_size, request_truncated, response_size, response_truncated, request_headers,
        response_headers, request_body, response_body, diff
    FROM requests;
    DROP TABLE requests;
    ALTER TABLE requests_v5 RENAME TO requests;
    CREATE INDEX requests_by_tunnel ON requests (tunnel, seq);
    CREATE INDEX requests_by_original ON requests (replay_of) WHERE replay_of IS NOT NULL;
    CREATE INDEX requests_waiting ON requests (tunnel, seq) WHERE delivery IN ('missed', 'failed');",
    // 6: how many names a token may claim (NULL: no cap), and when it was
    // last used (to connect or to call the API), for `token list`.
    "ALTER TABLE tokens ADD COLUMN max_names INTEGER;
    ALTER TABLE tokens ADD COLUMN last_used_at INTEGER;",
    // 7: each name's edge rules (JSON, the basic-auth password hashed),
    // checked also while its client is away.
    "ALTER TABLE names ADD COLUMN edge TEXT;",
    // 8: leases on names, for several nodes sharing the store
    // (`leases.rs`).
    "CREATE TABLE leases (
        name TEXT PRIMARY KEY,
        node_id TEXT NOT NULL,
        node_url TEXT NOT NULL,
        epoch INTEGER NOT NULL,
        expires_at_ms INTEGER NOT NULL
    );",
];
