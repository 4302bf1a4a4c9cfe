//! A database of its own for each PostgreSQL test, made on the server
//! that `RELAY_TEST_POSTGRES` (a superuser URL) names and dropped at the
//! end. `scripts/test` starts a throwaway server and sets the variable.

use std::str::FromStr;

/// The variable the PostgreSQL tests read.
pub const ENV: &str = "RELAY_TEST_POSTGRES";

/// A fresh database; dropped (with its connections) on drop.
pub struct TestDb {
    admin: String,
    name: String,
    /// The URL of the new database.
    pub url: String,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime for the test database")
}

/// Runs `sql` on the server as the superuser, on a thread of its own: the
/// test may be async, where blocking on a runtime panics.
fn admin(url: &str, sql: &str) {
    let (url, sql) = (url.to_owned(), sql.to_owned());
    std::thread::spawn(move || admin_here(&url, &sql))
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e));
}

fn admin_here(url: &str, sql: &str) {
    runtime().block_on(async {
        let config = tokio_postgres::Config::from_str(url).expect("RELAY_TEST_POSTGRES is a URL");
        let (client, conn) = config
            .connect(tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("connecting to {ENV}: {e}"));
        let driver = tokio::spawn(conn);
        client
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        drop(client);
        let _ = driver.await;
    });
}

/// `url` with its database replaced by `db`.
fn with_database(url: &str, db: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let host_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(host_end);
    let query = tail
        .split_once('?')
        .map(|(_, q)| format!("?{q}"))
        .unwrap_or_default();
    format!("{scheme}://{authority}/{db}{query}")
}

impl TestDb {
    pub fn new() -> Self {
        let admin_url = std::env::var(ENV).unwrap_or_else(|_| {
            panic!(
                "the PostgreSQL tests need a server: run scripts/test, or start one with \
                 `scripts/postgres start DIR` and set {ENV} to the URL it prints"
            )
        });
        let name = {
            use rand::RngExt;
            format!("relay_t_{:016x}", rand::rng().random::<u64>())
        };
        admin(&admin_url, &format!("CREATE DATABASE {name}"));
        Self {
            url: with_database(&admin_url, &name),
            admin: admin_url,
            name,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        admin(
            &self.admin,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}
