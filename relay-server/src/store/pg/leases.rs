//! Leases on names (SPEC "Several servers"): the node serving a tunnel's
//! session holds its name's lease and renews it; a node that dies loses
//! its leases by expiry; a client that connects through another node
//! takes the lease over (epoch + 1).
//!
//! Time is the database's clock (`now()` in ms), in every statement: the
//! nodes' clocks may disagree, the database's is one for all of them. A
//! `ttl` is a duration added to it, so it means the same on every node.

use std::time::Duration;

use tokio_postgres::Row;

use super::PgStore;
use crate::store::Lease;

/// The database's clock in ms since the Unix epoch.
const DB_NOW_MS: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint";

fn ms(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)
}

fn lease_from_row(r: &Row) -> Lease {
    Lease {
        name: r.get(0),
        node_id: r.get(1),
        node_url: r.get(2),
        epoch: r.get(3),
        expires_at_ms: r.get(4),
    }
}

impl PgStore {
    /// Takes `name` for this node whatever holds it (a client connecting
    /// here takes it over): epoch = old epoch + 1 (1 for a new row),
    /// expiry = now + ttl. One statement, atomic.
    pub fn take_lease(
        &self,
        name: &str,
        node_id: &str,
        node_url: &str,
        ttl: Duration,
    ) -> anyhow::Result<Lease> {
        let (name, node_id, node_url) = (name.to_owned(), node_id.to_owned(), node_url.to_owned());
        let ttl = ms(ttl);
        self.query(move |c| async move {
            let sql = format!(
                "INSERT INTO leases (name, node_id, node_url, epoch, expires_at_ms)
                 VALUES ($1, $2, $3, 1, {DB_NOW_MS} + $4)
                 ON CONFLICT (name) DO UPDATE SET node_id = excluded.node_id,
                    node_url = excluded.node_url, epoch = leases.epoch + 1,
                    expires_at_ms = excluded.expires_at_ms
                 RETURNING name, node_id, node_url, epoch, expires_at_ms"
            );
            let row = c
                .query_one(&sql, &[&name, &node_id, &node_url, &ttl])
                .await?;
            Ok(lease_from_row(&row))
        })
    }

    /// Pushes the expiry of every lease this node still holds at the given
    /// epoch (even one that ran out while no one took it); returns the
    /// names among `held` it no longer holds (taken over, or run out and
    /// taken).
    pub fn renew_leases(
        &self,
        node_id: &str,
        held: &[(String, i64)],
        ttl: Duration,
    ) -> anyhow::Result<Vec<String>> {
        if held.is_empty() {
            return Ok(Vec::new());
        }
        let node_id = node_id.to_owned();
        let (names, epochs): (Vec<String>, Vec<i64>) = held.iter().cloned().unzip();
        let ttl = ms(ttl);
        self.query(move |c| async move {
            let sql = format!(
                "UPDATE leases SET expires_at_ms = {DB_NOW_MS} + $4
                 FROM unnest($2::text[], $3::bigint[]) AS held (name, epoch)
                 WHERE leases.node_id = $1 AND leases.name = held.name
                    AND leases.epoch = held.epoch
                 RETURNING leases.name"
            );
            let renewed: Vec<String> = c
                .query(&sql, &[&node_id, &names, &epochs, &ttl])
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
            Ok(names.into_iter().filter(|n| !renewed.contains(n)).collect())
        })
    }

    /// The live (unexpired) lease on `name`, if any.
    pub fn lease_of(&self, name: &str) -> anyhow::Result<Option<Lease>> {
        let name = name.to_owned();
        self.query(move |c| async move {
            let sql = format!(
                "SELECT name, node_id, node_url, epoch, expires_at_ms FROM leases
                 WHERE name = $1 AND expires_at_ms > {DB_NOW_MS}"
            );
            let stmt = c.prepare_cached(&sql).await?;
            Ok(c.query_opt(&stmt, &[&name])
                .await?
                .as_ref()
                .map(lease_from_row))
        })
    }

    /// Drops the lease if this node still holds it at this epoch.
    pub fn release_lease(&self, name: &str, node_id: &str, epoch: i64) -> anyhow::Result<()> {
        let (name, node_id) = (name.to_owned(), node_id.to_owned());
        self.query(move |c| async move {
            c.execute(
                "DELETE FROM leases WHERE name = $1 AND node_id = $2 AND epoch = $3",
                &[&name, &node_id, &epoch],
            )
            .await?;
            Ok(())
        })
    }
}
