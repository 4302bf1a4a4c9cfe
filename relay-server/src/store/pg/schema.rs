//! PostgreSQL's schema: numbered migrations of its own, the version in
//! `relay_schema`, applied under an advisory lock so several nodes
//! starting at once do not race.
//!
//! Migration 1 is the final shape of SQLite's seven (`sqlite_schema.rs`),
//! written once: BIGINT for every number (the Rust side converts), BYTEA
//! bodies and heads, BOOLEAN flags, plus the nodes' leases.

use anyhow::Context;
use deadpool_postgres::Object;

/// Entry `i` takes the schema from version `i` to `i + 1`.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: tokens, names, captures with their delivery state, leases.
    "CREATE TABLE tokens (
        id BIGSERIAL PRIMARY KEY,
        label TEXT,
        hash BYTEA NOT NULL UNIQUE,
        created_at BIGINT NOT NULL,
        revoked_at BIGINT,
        max_names BIGINT,
        last_used_at BIGINT
    );
    CREATE TABLE names (
        name TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        claimed_at BIGINT NOT NULL,
        when_offline TEXT NOT NULL DEFAULT 'reject',
        edge TEXT
    );
    CREATE INDEX names_by_owner ON names (owner, claimed_at);
    CREATE TABLE requests (
        seq BIGSERIAL PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        tunnel TEXT NOT NULL,
        time_ms BIGINT NOT NULL,
        method TEXT NOT NULL,
        path TEXT NOT NULL,
        status BIGINT,
        outcome TEXT NOT NULL,
        duration_ms BIGINT NOT NULL,
        replay_of TEXT,
        delivery TEXT,
        delivered_by TEXT,
        delivery_error TEXT,
        claim TEXT,
        claimed_until BIGINT,
        deadline_exceeded_ms BIGINT,
        fault TEXT,
        request_size BIGINT NOT NULL,
        request_truncated BOOLEAN NOT NULL,
        response_size BIGINT,
        response_truncated BOOLEAN,
        request_headers BYTEA NOT NULL,
        response_headers BYTEA,
        request_body BYTEA NOT NULL,
        response_body BYTEA,
        diff TEXT
    );
    CREATE INDEX requests_by_tunnel ON requests (tunnel, seq);
    CREATE INDEX requests_by_original ON requests (replay_of) WHERE replay_of IS NOT NULL;
    CREATE INDEX requests_waiting ON requests (tunnel, seq) WHERE delivery IN ('missed', 'failed');
    CREATE TABLE leases (
        name TEXT PRIMARY KEY,
        node_id TEXT NOT NULL,
        node_url TEXT NOT NULL,
        epoch BIGINT NOT NULL,
        expires_at_ms BIGINT NOT NULL
    );
    CREATE INDEX leases_by_node ON leases (node_id);",
];

/// The advisory lock key migrations run under (any constant: the same on
/// every node).
const MIGRATION_LOCK: i64 = 0x7265_6c61_795f_6d67; // "relay_mg"

/// Brings the schema up to date, in one transaction that holds the lock,
/// so a node that starts while another migrates waits and then sees the
/// new version.
pub(super) async fn migrate(mut c: Object) -> anyhow::Result<()> {
    let tx = c.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS relay_schema (version BIGINT NOT NULL)")
        .await?;
    let version = match tx
        .query_opt("SELECT version FROM relay_schema", &[])
        .await?
    {
        Some(row) => row.get::<_, i64>(0),
        None => {
            tx.execute("INSERT INTO relay_schema (version) VALUES (0)", &[])
                .await?;
            0
        }
    };
    let known = MIGRATIONS.len() as i64;
    if version > known {
        anyhow::bail!(
            "database schema version {version} is newer than this relay-server knows ({known}); upgrade relay-server"
        );
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        tx.batch_execute(sql)
            .await
            .with_context(|| format!("migration {}", i + 1))?;
    }
    tx.execute("UPDATE relay_schema SET version = $1", &[&known])
        .await?;
    tx.commit().await?;
    Ok(())
}
