//! `--store`: where the server keeps its data. Left out, SQLite in
//! `--data-dir`; a `postgres://` (or `postgresql://`) URL, PostgreSQL.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Where the store lives.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// `relay.db` in this folder.
    Sqlite(PathBuf),
    /// A libpq-style URL; it may carry a password, so it is never printed
    /// as is (see the `Display` and `Debug` impls).
    Postgres(String),
}

impl StoreLocation {
    /// What `--store` (`None`: not given) and `--data-dir` say.
    pub fn parse(store: Option<&str>, data_dir: &Path) -> anyhow::Result<Self> {
        let Some(url) = store.map(str::trim).filter(|s| !s.is_empty()) else {
            return Ok(Self::Sqlite(data_dir.to_owned()));
        };
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            anyhow::bail!(
                "--store must be a postgres:// URL, or be left out for SQLite in --data-dir (got {})",
                redact(url)
            );
        }
        // Checked now, so a typo is a start-up error rather than a
        // connection failure; the parser's message does not echo the URL.
        tokio_postgres::Config::from_str(url)
            .map_err(|e| anyhow::anyhow!("--store {}: {e}", redact(url)))?;
        Ok(Self::Postgres(url.to_owned()))
    }
}

impl fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(dir) => write!(f, "SQLite in {}", dir.join("relay.db").display()),
            Self::Postgres(url) => write!(f, "PostgreSQL at {}", redact(url)),
        }
    }
}

impl fmt::Debug for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The URL with its password (if any) replaced by `***`, for logs and
/// errors. Also a `password=` query parameter.
pub fn redact(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => authority.to_owned(),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => kv.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_owned(),
    };
    if scheme.is_empty() {
        format!("{authority}{tail}")
    } else {
        format!("{scheme}://{authority}{tail}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact("postgres://relay:s3cret@db:5432/relay?sslmode=disable"),
            "postgres://relay:***@db:5432/relay?sslmode=disable"
        );
        assert_eq!(
            redact("postgresql://relay@db/relay?password=s3cret&x=1"),
            "postgresql://relay@db/relay?password=***&x=1"
        );
        assert_eq!(redact("postgres://db/relay"), "postgres://db/relay");
        let at =
            StoreLocation::parse(Some("postgres://u:pw@h/db"), Path::new("/d")).expect("valid");
        assert!(!format!("{at} {at:?}").contains("pw"));
    }

    #[test]
    fn the_default_is_sqlite_in_the_data_dir_and_other_urls_are_refused() {
        assert_eq!(
            StoreLocation::parse(None, Path::new("/d")).expect("default"),
            StoreLocation::Sqlite(PathBuf::from("/d"))
        );
        let err = StoreLocation::parse(Some("mysql://u:pw@h/db"), Path::new("/d"))
            .expect_err("refused")
            .to_string();
        assert!(err.contains("postgres://") && !err.contains("pw"), "{err}");
    }
}
