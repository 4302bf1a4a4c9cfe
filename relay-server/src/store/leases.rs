//! Leases on tunnel names, for several nodes sharing one store: the node
//! holding a name's session holds its lease (node id, node URL, epoch,
//! expiry) and renews it; a node that dies loses its leases by expiry, and
//! a client reconnecting through another node takes the lease over with
//! the next epoch. Each statement is atomic on its own, so two nodes
//! racing for a name end with exactly one holder.

use std::time::Duration;

use rusqlite::{params, OptionalExtension};

use super::{now_ms, parse_when_offline, Lease, NameSettings, On, Store};

fn ttl_ms(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)
}

impl Store {
    /// Takes `name` for this node whatever holds it (a client connecting
    /// here takes it over): epoch = old + 1 (1 for a new row), expiry =
    /// now + ttl. One statement, so two takers get distinct epochs and the
    /// later one holds the row.
    pub fn take_lease(
        &self,
        name: &str,
        node_id: &str,
        node_url: &str,
        ttl: Duration,
    ) -> anyhow::Result<Lease> {
        let conn = match self.on() {
            On::Sqlite(conn) => conn,
            On::Pg(pg) => return pg.take_lease(name, node_id, node_url, ttl),
        };
        let expires = now_ms().saturating_add(ttl_ms(ttl));
        Ok(conn.query_row(
            "INSERT INTO leases (name, node_id, node_url, epoch, expires_at_ms)
             VALUES (?1, ?2, ?3, 1, ?4)
             ON CONFLICT (name) DO UPDATE SET node_id = excluded.node_id,
                node_url = excluded.node_url, epoch = leases.epoch + 1,
                expires_at_ms = excluded.expires_at_ms
             RETURNING name, node_id, node_url, epoch, expires_at_ms",
            params![name, node_id, node_url, expires],
            |r| {
                Ok(Lease {
                    name: r.get(0)?,
                    node_id: r.get(1)?,
                    node_url: r.get(2)?,
                    epoch: r.get(3)?,
                    expires_at_ms: r.get(4)?,
                })
            },
        )?)
    }

    /// Pushes the expiry of every lease this node still holds at the given
    /// epoch; returns the names among `held` it no longer holds. One
    /// transaction for the whole list: one round trip per renewal period.
    pub fn renew_leases(
        &self,
        node_id: &str,
        held: &[(String, i64)],
        ttl: Duration,
    ) -> anyhow::Result<Vec<String>> {
        let mut conn = match self.on() {
            On::Sqlite(conn) => conn,
            On::Pg(pg) => return pg.renew_leases(node_id, held, ttl),
        };
        let expires = now_ms().saturating_add(ttl_ms(ttl));
        let tx = conn.transaction()?;
        let mut lost = Vec::new();
        {
            let mut stmt = tx.prepare_cached(
                "UPDATE leases SET expires_at_ms = ?4
                 WHERE name = ?1 AND node_id = ?2 AND epoch = ?3",
            )?;
            for (name, epoch) in held {
                if stmt.execute(params![name, node_id, epoch, expires])? == 0 {
                    lost.push(name.clone());
                }
            }
        }
        tx.commit()?;
        Ok(lost)
    }

    /// The live (unexpired) lease on `name`, if any.
    pub fn lease_of(&self, name: &str) -> anyhow::Result<Option<Lease>> {
        let conn = match self.on() {
            On::Sqlite(conn) => conn,
            On::Pg(pg) => return pg.lease_of(name),
        };
        Ok(conn
            .query_row(
                "SELECT name, node_id, node_url, epoch, expires_at_ms FROM leases
                 WHERE name = ?1 AND expires_at_ms > ?2",
                params![name, now_ms()],
                |r| {
                    Ok(Lease {
                        name: r.get(0)?,
                        node_id: r.get(1)?,
                        node_url: r.get(2)?,
                        epoch: r.get(3)?,
                        expires_at_ms: r.get(4)?,
                    })
                },
            )
            .optional()?)
    }

    /// Drops the lease if this node still holds it at this epoch (a newer
    /// holder's row is left alone).
    pub fn release_lease(&self, name: &str, node_id: &str, epoch: i64) -> anyhow::Result<()> {
        let conn = match self.on() {
            On::Sqlite(conn) => conn,
            On::Pg(pg) => return pg.release_lease(name, node_id, epoch),
        };
        conn.execute(
            "DELETE FROM leases WHERE name = ?1 AND node_id = ?2 AND epoch = ?3",
            params![name, node_id, epoch],
        )?;
        Ok(())
    }

    /// What the store keeps with `name`, `None` if nobody claimed it: a
    /// node reads it for names claimed through other nodes since it
    /// started, so it can tell them from unknown ones.
    pub fn name_settings(&self, name: &str) -> anyhow::Result<Option<NameSettings>> {
        let conn = match self.on() {
            On::Sqlite(conn) => conn,
            On::Pg(pg) => return pg.name_settings(name),
        };
        Ok(conn
            .query_row(
                "SELECT when_offline, edge FROM names WHERE name = ?1",
                params![name],
                |r| {
                    Ok(NameSettings {
                        when_offline: parse_when_offline(&r.get::<_, String>(0)?),
                        edge: r.get(1)?,
                    })
                },
            )
            .optional()?)
    }
}
