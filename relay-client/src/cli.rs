//! Command line of `relay`. A flag's doc comment is its `--help`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// relay: a stable public URL for an app on your laptop.
#[derive(Debug, Parser)]
#[command(name = "relay", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Expose a local app: every request to your public URL is forwarded to it.
    Connect(ConnectArgs),
    /// Save a server URL and token in the config file for later runs.
    Login {
        /// Server URL, e.g. https://relay.example.com
        #[arg(long)]
        server: String,
        /// Token from `relay-server token create`.
        #[arg(long)]
        token: String,
    },
}

#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// The local app: PORT, HOST:PORT or http://HOST:PORT.
    pub target: String,
    /// Tunnel name (a DNS label). Default: a name generated once and kept in
    /// the config file, so the URL stays the same on every run.
    #[arg(long)]
    pub name: Option<String>,
    /// Relay server URL [default: the config file's, else http://localhost:8080].
    #[arg(long, env = "RELAY_SERVER")]
    pub server: Option<String>,
    /// Token for servers that are not --open [default: the config file's].
    #[arg(long, env = "RELAY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Address of the local inspector page (served from the capture
    /// release onwards; accepted now so scripts need not change).
    #[arg(long, default_value = "127.0.0.1:4040")]
    pub inspect: SocketAddr,
    /// Do not start the local inspector page.
    #[arg(long)]
    pub no_inspect: bool,
    /// PEM file with a CA certificate to trust for an https:// server, for
    /// servers with a private or self-signed certificate.
    #[arg(long, env = "RELAY_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
}
