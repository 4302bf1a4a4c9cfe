//! The `relay` client as a library; `main.rs` parses the command line and
//! calls in here.
//!
//! Module map, in the order a request meets them:
//! - [`session`]: connect (TLS via [`net`]), handshake, the frame loop,
//!   reconnect with jittered backoff; [`session::TunnelStatus`] is what it
//!   knows of the tunnel.
//! - [`forward`]: one task per stream, a pooled hyper client to the local
//!   app ([`target`] parses where it listens, [`fds`] budgets descriptors).
//! - [`output`]: the banner and one line per request.
//! - [`inspector`]: the 127.0.0.1:4040 page (one for every tunnel of the
//!   process); it reads the sessions' status, and nothing on the data path
//!   depends on it.
//! - [`api`], [`replay`]: the server's capture API, `relay requests` and
//!   `relay replay` ([`edit`]: its edit flags and `--edit`; [`diff`]:
//!   `--diff`); [`missed`] delivers missed requests (for `connect
//!   --deliver-missed`, `replay --missed` and the inspector);
//!   [`requests`] and [`events`] list and follow captures, [`show`] and
//!   [`secrets`] print one, [`provider`] reads a bearer JWT's claims and
//!   a Hasura Action call out of it; [`export`] writes captures as curl,
//!   HAR or NDJSON.
//! - [`cli`], [`settings`]: flags and the user's config file;
//!   [`running`] and [`resolve`]: which tunnel a command acts for;
//!   [`account`]: `relay login` and `relay status`; [`fresh_token`]: an
//!   OAuth2 access token for `relay replay --fresh-token`.
//! - [`tunnels`]: one tunnel's setup and run, shared by `relay connect`
//!   and `relay start` ([`start`], reading [`config`]'s `relay.toml`);
//!   [`output`] prints for them, as lines or `--json` events.
//! - [`localtime`]: times in the user's zone for the terminal.

pub mod account;
pub mod api;
pub mod cli;
pub mod config;
pub mod diff;
pub mod edit;
pub mod events;
pub mod export;
pub mod fds;
#[cfg(test)]
mod fixtures;
pub mod forward;
pub mod forward_opts;
pub mod fresh_token;
pub mod inspector;
pub mod localtime;
pub mod missed;
pub mod net;
pub mod output;
pub mod provider;
pub mod replay;
pub mod requests;
pub mod resolve;
pub mod running;
pub mod secrets;
pub mod session;
pub mod settings;
pub mod show;
pub mod start;
pub mod target;
pub mod tunnels;
