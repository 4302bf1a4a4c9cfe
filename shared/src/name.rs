//! Tunnel names: one DNS label, so a name works both as `NAME.DOMAIN` and
//! as `/t/NAME`.

use std::fmt;

/// Names no tunnel may take: they are, or will be, the server's own hosts.
pub const RESERVED: &[&str] = &["www", "api", "admin", "relay"];

/// A validated tunnel name: `[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?`, not
/// reserved, not starting with `_`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TunnelName(String);

/// Why a string is not a tunnel name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("a tunnel name cannot be empty")]
    Empty,
    #[error("a tunnel name is at most 63 characters (got {0})")]
    TooLong(usize),
    #[error("a tunnel name may only hold a-z, 0-9 and '-' (found {0:?})")]
    BadChar(char),
    #[error("a tunnel name cannot start or end with '-'")]
    EdgeHyphen,
    #[error("the name {0:?} is reserved")]
    Reserved(String),
}

impl TunnelName {
    /// Validates `s` exactly as given: no lowercasing, so what the user
    /// typed is what the URL shows.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        if s.is_empty() {
            return Err(NameError::Empty);
        }
        if s.len() > 63 {
            return Err(NameError::TooLong(s.len()));
        }
        if s.starts_with('_') {
            return Err(NameError::Reserved(s.to_owned()));
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(NameError::BadChar(c));
        }
        if s.starts_with('-') || s.ends_with('-') {
            return Err(NameError::EdgeHyphen);
        }
        if RESERVED.contains(&s) {
            return Err(NameError::Reserved(s.to_owned()));
        }
        Ok(Self(s.to_owned()))
    }

    /// A fresh readable name such as `brisk-otter-4k2p`, for clients that
    /// were given none. 32 × 32 × 36⁴ ≈ 1.7 billion choices keeps collisions
    /// on one server unlikely; the server refuses a taken one anyway.
    pub fn generate() -> Self {
        const ADJ: &[&str] = &[
            "amber", "bold", "brisk", "calm", "clever", "cosy", "crisp", "eager", "fair", "fancy",
            "gentle", "glad", "grand", "happy", "jolly", "keen", "kind", "lively", "lucky",
            "merry", "mild", "neat", "noble", "proud", "quick", "quiet", "rapid", "sharp", "shy",
            "sunny", "swift", "witty",
        ];
        const NOUN: &[&str] = &[
            "badger", "bison", "crane", "dingo", "eagle", "falcon", "ferret", "gecko", "heron",
            "ibis", "koala", "lemur", "lynx", "marten", "moose", "newt", "otter", "owl", "panda",
            "puffin", "quail", "raven", "robin", "seal", "shrew", "stoat", "swan", "tapir",
            "tiger", "vole", "walrus", "wren",
        ];
        const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        use rand::RngExt;
        let mut rng = rand::rng();
        let suffix: String = (0..4)
            .map(|_| ALNUM[rng.random_range(0..ALNUM.len())] as char)
            .collect();
        let name = format!(
            "{}-{}-{}",
            ADJ[rng.random_range(0..ADJ.len())],
            NOUN[rng.random_range(0..NOUN.len())],
            suffix
        );
        Self(name)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TunnelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TunnelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_dns_labels() {
        for ok in ["a", "0", "my-app", "a1-b2", &"x".repeat(63)] {
            assert!(TunnelName::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_bad_names() {
        assert_eq!(TunnelName::parse(""), Err(NameError::Empty));
        assert_eq!(
            TunnelName::parse(&"x".repeat(64)),
            Err(NameError::TooLong(64))
        );
        assert_eq!(TunnelName::parse("My"), Err(NameError::BadChar('M')));
        assert_eq!(TunnelName::parse("a.b"), Err(NameError::BadChar('.')));
        assert_eq!(TunnelName::parse("-a"), Err(NameError::EdgeHyphen));
        assert_eq!(TunnelName::parse("a-"), Err(NameError::EdgeHyphen));
        assert!(matches!(
            TunnelName::parse("_x"),
            Err(NameError::Reserved(_))
        ));
        for r in RESERVED {
            assert!(matches!(TunnelName::parse(r), Err(NameError::Reserved(_))));
        }
    }

    #[test]
    fn generated_names_are_valid() {
        for _ in 0..200 {
            let n = TunnelName::generate();
            assert_eq!(TunnelName::parse(n.as_str()).as_ref(), Ok(&n));
        }
    }
}
