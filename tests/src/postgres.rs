//! A PostgreSQL database of its own for a test, on the server that
//! `RELAY_TEST_POSTGRES` names (a superuser URL; `scripts/test` starts a
//! throwaway one with `scripts/postgres`), dropped when the test ends.

use std::str::FromStr;

use anyhow::{anyhow, Context, Result};

/// The variable with the server's superuser URL.
pub const ENV: &str = "RELAY_TEST_POSTGRES";

/// A fresh database; `url` is what `relay-server --store` takes.
pub struct TestDatabase {
    admin: String,
    name: String,
    pub url: String,
}

/// Runs `sql` as the superuser.
async fn admin(url: &str, sql: &str) -> Result<()> {
    let config =
        tokio_postgres::Config::from_str(url).context("RELAY_TEST_POSTGRES is not a URL")?;
    let (client, conn) = config
        .connect(tokio_postgres::NoTls)
        .await
        .with_context(|| format!("connecting to {ENV}"))?;
    let driver = tokio::spawn(conn);
    client
        .batch_execute(sql)
        .await
        .with_context(|| sql.to_owned())?;
    drop(client);
    let _ = driver.await;
    Ok(())
}

impl TestDatabase {
    pub async fn create() -> Result<Self> {
        let admin_url = std::env::var(ENV).map_err(|_| {
            anyhow!(
                "this test needs PostgreSQL: run scripts/test, or start one with \
                 `scripts/postgres start DIR` and set {ENV} to the URL it prints"
            )
        })?;
        let name = {
            use rand::RngExt;
            format!("relay_e2e_{:016x}", rand::rng().random::<u64>())
        };
        admin(&admin_url, &format!("CREATE DATABASE {name}")).await?;
        let (scheme, rest) = admin_url.split_once("://").context("a URL")?;
        let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
        Ok(Self {
            url: format!("{scheme}://{authority}/{name}"),
            admin: admin_url,
            name,
        })
    }
}

impl TestDatabase {
    /// The live lease on `name`: (node id, epoch). Blocking, on a thread
    /// of its own, so a test can poll it from a synchronous check.
    pub fn query_lease(&self, name: &str) -> Result<Option<(String, i64)>> {
        let (url, name) = (self.url.clone(), name.to_owned());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
                let driver = tokio::spawn(conn);
                let row = client
                    .query_opt(
                        "SELECT node_id, epoch FROM leases WHERE name = $1 \
                         AND expires_at_ms > (extract(epoch FROM clock_timestamp()) * 1000)::bigint",
                        &[&name],
                    )
                    .await?;
                drop(client);
                let _ = driver.await;
                Ok(row.map(|r| (r.get(0), r.get(1))))
            })
        })
        .join()
        .map_err(|_| anyhow!("the lease query panicked"))?
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime: a thread of its own blocks.
        let (url, sql) = (
            self.admin.clone(),
            format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(admin(&url, &sql)).ok()
        })
        .join();
    }
}
