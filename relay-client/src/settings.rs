//! The user's config file: server, token, the generated tunnel name and
//! client id. Written once and reused, which is what keeps a URL stable
//! across runs.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// Contents of `config.toml`.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The generated tunnel name used when `--name` is not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Random identity under which an `--open` server keeps this client's
    /// names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The local app of the last `relay connect`: where `relay replay`
    /// sends requests by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_target: Option<String>,
    /// Server and tunnel name of the last `relay connect`: the defaults of
    /// `relay requests` and `relay replay`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_server: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    /// OAuth2 client-credentials profiles for `relay replay --fresh-token`
    /// (`[profiles.NAME]`); kept when the file is saved again.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub profiles: std::collections::BTreeMap<String, crate::fresh_token::Profile>,
}

/// `$RELAY_CONFIG`, else `<config dir>/relay/config.toml`
/// (`$XDG_CONFIG_HOME` or `~/.config` on Linux).
pub fn config_path() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("RELAY_CONFIG") {
        return Ok(PathBuf::from(p));
    }
    let dir = dirs::config_dir().context("no config directory: set RELAY_CONFIG or HOME")?;
    Ok(dir.join("relay").join("config.toml"))
}

impl Settings {
    /// Reads `path`; a missing file is an empty config.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Writes `path` atomically (temp file + rename), readable by the user
    /// only, since it may hold a token.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let text = toml::to_string(self).context("serialising settings")?;
        let tmp = path.with_extension("toml.tmp");
        {
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            let mut f = opts
                .open(&tmp)
                .with_context(|| format!("writing {}", tmp.display()))?;
            std::io::Write::write_all(&mut f, text.as_bytes())?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_missing_file_is_empty() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("sub").join("config.toml");
        assert_eq!(
            Settings::load(&path).expect("missing is ok"),
            Settings::default()
        );
        let s = Settings {
            server: Some("http://x:1".into()),
            token: Some("rly_t".into()),
            name: Some("brisk-otter-1234".into()),
            client_id: Some("abc".into()),
            last_target: Some("http://localhost:4000".into()),
            last_server: Some("http://x:1".into()),
            last_name: Some("app".into()),
            // A hand-written table survives the client saving the file.
            profiles: [(
                "default".to_owned(),
                crate::fresh_token::Profile {
                    token_url: "https://t.example/oauth/token".into(),
                    client_id: "cid".into(),
                    client_secret: None,
                    client_secret_env: Some("SECRET".into()),
                    audience: Some("https://api".into()),
                    scope: None,
                },
            )]
            .into(),
        };
        s.save(&path).expect("saves");
        assert_eq!(Settings::load(&path).expect("loads"), s);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn bad_file_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "name = [").expect("write");
        let err = Settings::load(&path).expect_err("must fail");
        assert!(format!("{err:#}").contains("config.toml"));
    }
}
