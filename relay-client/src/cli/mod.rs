//! Command line of `relay`. A flag's doc comment is its `--help`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

mod edge;
pub use edge::{inspect_at, parse_basic_auth, EdgeArgs};
use relay_shared::protocol::WhenOffline;

/// How `relay requests` and `relay replay` pick their tunnel; part of
/// their `--help`.
const WHICH_TUNNEL: &str = "Which tunnel: --name, else the tunnel of the `relay connect` running \
with this config file, else the one the last `relay connect` served.";

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
    /// Run the tunnels of relay.toml (next to the config file) in one
    /// process: all of them, or those named.
    Start(StartArgs),
    /// List the tunnel's captured requests, newest first (also those that
    /// arrived while no client was connected), follow new ones, or show one.
    #[command(after_help = WHICH_TUNNEL)]
    Requests(RequestsArgs),
    /// Send a captured request to the local app again, or deliver the
    /// requests that arrived while no client was connected.
    #[command(after_help = WHICH_TUNNEL)]
    Replay(ReplayArgs),
    /// Check a token with the server, then save server URL and token in the
    /// config file for later runs.
    Login {
        /// Server URL, e.g. https://relay.example.com
        #[arg(long)]
        server: String,
        /// Token from `relay-server token create`.
        #[arg(long)]
        token: String,
        /// PEM file with a CA certificate to trust for an https:// server
        /// (its private CA, or its self-signed certificate).
        #[arg(long, env = "RELAY_CA_CERT")]
        ca_cert: Option<PathBuf>,
    },
    /// Show the server, whether it accepts your token, the token's names,
    /// and the tunnels running with this config. Exits 1 when the server
    /// cannot be reached or refuses the token.
    Status {
        #[command(flatten)]
        server: ServerArgs,
    },
}

/// Which server and tunnel, and as whom.
#[derive(Debug, Args)]
pub struct TunnelArgs {
    /// Tunnel name (a DNS label). Default: a name generated once and kept in
    /// the config file, so the URL stays the same on every run.
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Which tunnel's captures `requests` and `replay` work on.
#[derive(Debug, Args)]
pub struct PickArgs {
    /// Tunnel name [default: the tunnel of the `relay connect` running with
    /// this config file, else the one the last `relay connect` served].
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// The server and the identity to use there.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Relay server URL [default: the config file's, else http://localhost:8080].
    #[arg(long, env = "RELAY_SERVER")]
    pub server: Option<String>,
    /// Token for servers that are not --open [default: the config file's].
    #[arg(long, env = "RELAY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM file with a CA certificate to trust for an https:// server: the
    /// private CA that signed the server's certificate, or a self-signed
    /// server certificate (one not marked as a CA).
    #[arg(long, env = "RELAY_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// The local app: PORT, HOST:PORT or http://HOST:PORT.
    pub target: String,
    #[command(flatten)]
    pub tunnel: TunnelArgs,
    /// Address of the local inspector page (loopback only; port 0 picks a
    /// free port). Default: 127.0.0.1:4040, or the next free port up to
    /// 4049 when another `relay connect` has it. The address is printed on
    /// start.
    #[arg(long, value_name = "ADDR")]
    pub inspect: Option<SocketAddr>,
    /// First port tried when no --inspect is given (tests run several
    /// clients at once and must not meet a real 4040).
    #[arg(long, env = "RELAY_INSPECT_FIRST_PORT", default_value_t = crate::inspector::DEFAULT_PORT, hide = true)]
    pub inspect_first_port: u16,
    /// Do not start the local inspector page.
    #[arg(long)]
    pub no_inspect: bool,
    /// After every (re)connect, send the requests that arrived while no
    /// client was connected to the local app, oldest first, one at a time;
    /// stop at the first it does not accept (refused, timed out or 5xx),
    /// which stays waiting for the next run or `relay replay --missed`.
    #[arg(long)]
    pub deliver_missed: bool,
    /// What your public URL answers while no `relay connect` serves it
    /// (kept by the server until the next connect). Either way the request
    /// is captured and waits to be delivered.
    #[arg(long, value_enum, default_value_t = OfflineAnswer::Reject)]
    pub when_offline: OfflineAnswer,
    #[command(flatten)]
    pub edge: EdgeArgs,
    /// Print NDJSON events on stdout instead of the banner and request
    /// lines (ready, request, missed, reconnecting, reconnected, error),
    /// one object a line, for scripts.
    #[arg(long)]
    pub json: bool,
    /// Mark every exchange whose answer took longer than this (e.g. 10s):
    /// the caller would have given up. Shown in the request line, the
    /// inspector and `relay requests`.
    #[arg(long, value_parser = crate::forward_opts::parse_deadline, conflicts_with = "caller")]
    pub deadline: Option<std::time::Duration>,
    /// The caller's deadline by name: auth0 (10s per call), hasura (30s).
    #[arg(long, value_enum)]
    pub caller: Option<Caller>,
    /// Answer as a broken app would, to see what the caller does then:
    /// delay=DURATION (wait, then ask the app), status=CODE (answer CODE
    /// without asking the app) or reset (drop the caller's connection).
    /// Every such exchange is marked.
    #[arg(long, value_parser = crate::forward_opts::parse_fault)]
    pub fault: Option<relay_shared::fault::Fault>,
    /// Share of requests --fault is played for, above 0 and at most 1.
    #[arg(long, requires = "fault", default_value = "1",
          value_parser = crate::forward_opts::parse_rate)]
    pub fault_rate: f64,
    /// The Host header the local app gets: `rewrite` for the target's own
    /// host:port (for dev servers that check it), or a value to send
    /// [default: the public host].
    #[arg(long, value_parser = crate::forward_opts::HostHeader::parse)]
    pub host_header: Option<crate::forward_opts::HostHeader>,
    /// For an https:// local app: accept any certificate it shows (a
    /// self-signed one). Applies to the local app only.
    #[arg(long)]
    pub insecure_local: bool,
}

/// `--caller` (and `caller` in relay.toml): a caller whose deadline is
/// known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Caller {
    /// Auth0 Actions: 10 s per outbound call (within the flow's 20 s).
    Auth0,
    /// Hasura Actions: 30 s by default.
    Hasura,
}

impl Caller {
    pub fn deadline(self) -> crate::forward_opts::CallerDeadline {
        let (secs, name) = match self {
            Self::Auth0 => (10, "auth0"),
            Self::Hasura => (30, "hasura"),
        };
        crate::forward_opts::CallerDeadline {
            limit: std::time::Duration::from_secs(secs),
            caller: Some(name),
        }
    }
}

impl ConnectArgs {
    /// What the forwarder does besides forwarding, from the flags.
    pub fn forward_options(&self) -> crate::forward_opts::ForwardOptions {
        use crate::forward_opts::{CallerDeadline, FaultPlan, ForwardOptions};
        ForwardOptions {
            deadline: match (self.deadline, self.caller) {
                (Some(limit), _) => Some(CallerDeadline {
                    limit,
                    caller: None,
                }),
                (None, Some(c)) => Some(c.deadline()),
                (None, None) => None,
            },
            fault: self.fault.map(|fault| FaultPlan {
                fault,
                rate: self.fault_rate,
            }),
        }
    }
}

#[derive(Debug, Args)]
pub struct StartArgs {
    /// Tunnels to run (the keys of their [tunnels.NAME] tables) [default:
    /// all of them].
    pub names: Vec<String>,
    /// Server and token for tunnels whose table names none [then the
    /// config file's].
    #[command(flatten)]
    pub server: ServerArgs,
    /// Address of the local inspector page, one for all the tunnels
    /// (loopback only; port 0 picks a free port) [default: the first free
    /// port from 127.0.0.1:4040].
    #[arg(long)]
    pub inspect: Option<SocketAddr>,
    /// First port tried when no --inspect is given (tests).
    #[arg(long, env = "RELAY_INSPECT_FIRST_PORT", default_value_t = crate::inspector::DEFAULT_PORT, hide = true)]
    pub inspect_first_port: u16,
    /// Do not start the local inspector page.
    #[arg(long)]
    pub no_inspect: bool,
    /// Print NDJSON events on stdout (as `relay connect --json`), each
    /// naming its tunnel.
    #[arg(long)]
    pub json: bool,
}

/// `--when-offline`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OfflineAnswer {
    /// 503 `tunnel_offline` with `Retry-After`: callers that retry will.
    Reject,
    /// 202 `{"queued": true, "request_id": ...}`: callers go on (an Auth0
    /// Action's login succeeds); use with --deliver-missed.
    Accept,
}

impl From<OfflineAnswer> for WhenOffline {
    fn from(a: OfflineAnswer) -> Self {
        match a {
            OfflineAnswer::Reject => Self::Reject,
            OfflineAnswer::Accept => Self::Accept,
        }
    }
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct RequestsArgs {
    #[command(subcommand)]
    pub command: Option<RequestsCommand>,
    /// How many to show.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: u32,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Only this method.
    #[arg(long)]
    pub method: Option<String>,
    /// Only this status.
    #[arg(long)]
    pub status: Option<u16>,
    /// Only this outcome (delivered, offline, local_unreachable, timeout, ...).
    #[arg(long)]
    pub outcome: Option<String>,
    /// Only paths containing this.
    #[arg(long)]
    pub path: Option<String>,
    /// Only missed requests still waiting to be delivered (they arrived
    /// while no client was connected).
    #[arg(long)]
    pub missed: bool,
    /// Keep printing new captures as they arrive, until Ctrl-C; the list
    /// is then printed oldest first, so the newest is at the bottom.
    #[arg(long)]
    pub follow: bool,
    #[command(flatten)]
    pub tunnel: PickArgs,
}

#[derive(Debug, Subcommand)]
pub enum RequestsCommand {
    /// One captured request: request and response heads and bodies (JSON
    /// pretty-printed, binary as hex), secrets masked.
    Show(ShowArgs),
    /// Captured requests as curl commands (to send them to the local app
    /// again), one HAR 1.2 document (browser devtools) or NDJSON records.
    Export(ExportArgs),
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Ids of the captured requests, in the order to export [default: the
    /// newest --limit requests visitors sent, oldest first].
    pub ids: Vec<String>,
    /// Without ids: how many of the newest requests.
    #[arg(long, default_value_t = 20, conflicts_with = "ids",
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: u32,
    /// What to write.
    #[arg(long, value_enum)]
    pub format: crate::export::Format,
    /// curl: the local app to send to: PORT, HOST:PORT or URL [default: the
    /// target of the tunnel's running `relay connect`, else of the last
    /// one]. har: the URL used when a capture does not say the public one.
    #[arg(long)]
    pub to: Option<String>,
    /// curl: where bodies that cannot go on the command line (binary, with
    /// CR or other control characters, or over 64 KiB) are written, as
    /// ID.body, for `--data-binary @FILE`.
    #[arg(long, default_value = ".")]
    pub out_dir: PathBuf,
    #[command(flatten)]
    pub tunnel: PickArgs,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Id of the captured request (from `relay requests` or the inspector).
    pub id: String,
    /// The full record as one JSON object (bodies in base64).
    #[arg(long, conflicts_with = "raw")]
    pub json: bool,
    /// The exact captured HTTP text, secrets and binary bodies included.
    #[arg(long)]
    pub raw: bool,
    #[command(flatten)]
    pub tunnel: PickArgs,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Id of the captured request (from `relay requests` or the inspector).
    #[arg(required_unless_present_any = ["last", "missed"], conflicts_with_all = ["last", "missed"])]
    pub id: Option<String>,
    /// Replay the newest request a visitor sent (never a replay's own entry).
    #[arg(long, conflicts_with = "missed")]
    pub last: bool,
    /// Deliver the requests that arrived while no client was connected,
    /// oldest first, one at a time; stops at the first the local app does
    /// not accept (refused, timed out or 5xx) and says how many are left.
    #[arg(long)]
    pub missed: bool,
    /// With --missed: only those that arrived within this time (e.g. 2h, 30min).
    // (Not `requires = "missed"`: clap counts a flag's default as present.
    // One of ID, --last, --missed is required, so this means the same.)
    #[arg(long, conflicts_with_all = ["id", "last"])]
    pub since: Option<humantime::Duration>,
    /// Local app to send it to: PORT, HOST:PORT or URL [default: the target
    /// of the tunnel's running `relay connect`, else of the last one].
    #[arg(long)]
    pub to: Option<String>,
    /// For an https:// local app: accept any certificate it shows (a
    /// self-signed one).
    #[arg(long)]
    pub insecure_local: bool,
    /// Print the result as one JSON object (with --missed: one per line).
    #[arg(long)]
    pub json: bool,
    /// Replay even if the captured body was truncated (sends the part kept).
    #[arg(long)]
    pub force: bool,
    /// After the replay, print what differs from the original's response:
    /// status, headers (volatile ones such as Date ignored) and body (JSON
    /// by path, text as a unified diff, binary by size and hash); kept
    /// with the replay's entry, and in --json as `diff`.
    #[arg(long, conflicts_with = "missed")]
    pub diff: bool,
    /// Send a new access token instead of the captured `Authorization`:
    /// got by the OAuth2 client-credentials grant with the config file's
    /// `[profiles.PROFILE]` (`token_url`, `client_id`, `client_secret` or
    /// `client_secret_env`, optional `audience`, `scope`); without PROFILE,
    /// the one named `default` or the only one. The secret is never printed.
    #[arg(long, value_name = "PROFILE", num_args = 0..=1, default_missing_value = "")]
    pub fresh_token: Option<String>,
    #[command(flatten)]
    pub edit: EditArgs,
    #[command(flatten)]
    pub tunnel: PickArgs,
}

/// `relay replay`'s edits to the captured request; not with --missed.
/// `Content-Length` always follows the body sent.
#[derive(Debug, Args)]
pub struct EditArgs {
    /// Set a header: replaces every value of that name (any case), or adds it.
    #[arg(long = "header", value_name = "'NAME: VALUE'", conflicts_with = "missed",
          value_parser = crate::edit::parse_header_arg)]
    pub headers: Vec<(String, String)>,
    /// Remove every value of a header (any case).
    #[arg(long = "remove-header", value_name = "NAME", conflicts_with = "missed")]
    pub remove_headers: Vec<String>,
    /// Send with this method instead.
    #[arg(long, value_name = "M", conflicts_with = "missed")]
    pub method: Option<String>,
    /// Send to this path and query instead (starts with /).
    #[arg(long, value_name = "PATH", conflicts_with = "missed")]
    pub path: Option<String>,
    /// Send this body instead: @FILE (its exact bytes), - (standard input)
    /// or the text itself.
    #[arg(
        long,
        value_name = "@FILE|-|TEXT",
        conflicts_with = "missed",
        allow_hyphen_values = true
    )]
    pub body: Option<String>,
    /// Open the request (after the flags above) as HTTP/1.1 text in
    /// $VISUAL or $EDITOR, and send what is saved; nothing is sent if the
    /// editor fails or the text is not a request. A newline the editor adds
    /// at the end of a body that had none is dropped.
    #[arg(long, conflicts_with = "missed")]
    pub edit: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("relay").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn connect_takes_the_offline_answer_and_deliver_missed() {
        let Command::Connect(c) = parse(&["connect", "4000"]).expect("parses").command else {
            panic!("not connect");
        };
        assert_eq!(c.when_offline, OfflineAnswer::Reject);
        assert!(!c.deliver_missed);
        let Command::Connect(c) = parse(&[
            "connect",
            "4000",
            "--when-offline",
            "accept",
            "--deliver-missed",
        ])
        .expect("parses")
        .command
        else {
            panic!("not connect");
        };
        assert_eq!(WhenOffline::from(c.when_offline), WhenOffline::Accept);
        assert!(c.deliver_missed);
        assert!(parse(&["connect", "4000", "--when-offline", "queue"]).is_err());
        let help = Cli::command()
            .find_subcommand_mut("connect")
            .expect("connect")
            .render_long_help()
            .to_string();
        assert!(
            help.contains("503") && help.contains("Retry-After"),
            "{help}"
        );
        assert!(help.contains("202") && help.contains("queued"), "{help}");
    }

    fn connect(args: &[&str]) -> Result<ConnectArgs, String> {
        let all: Vec<&str> = ["connect", "4000"].iter().chain(args).copied().collect();
        match parse(&all).map_err(|e| e.to_string())?.command {
            Command::Connect(c) => Ok(c),
            _ => Err("not connect".into()),
        }
    }

    #[test]
    fn connect_takes_deadlines_faults_and_the_host_header() {
        use crate::forward_opts::HostHeader;
        use relay_shared::fault::Fault;
        let plain = connect(&[]).expect("parses").forward_options();
        assert!(plain.deadline.is_none() && plain.fault.is_none());
        let o = connect(&["--caller", "auth0"])
            .expect("parses")
            .forward_options();
        let d = o.deadline.expect("a deadline");
        assert_eq!((d.millis(), d.caller), (10_000, Some("auth0")));
        let d = connect(&["--caller", "hasura"])
            .expect("parses")
            .forward_options();
        assert_eq!(d.deadline.map(|d| d.millis()), Some(30_000));
        let d = connect(&["--deadline", "1500ms"])
            .expect("parses")
            .forward_options();
        assert_eq!(
            d.deadline.map(|d| (d.millis(), d.caller)),
            Some((1500, None))
        );
        let both = connect(&["--deadline", "5s", "--caller", "auth0"]).expect_err("conflict");
        assert!(both.contains("cannot be used with"), "{both}");
        let o = connect(&["--fault", "status=500", "--fault-rate", "0.5"])
            .expect("parses")
            .forward_options();
        let plan = o.fault.expect("a fault");
        assert_eq!((plan.fault, plan.rate), (Fault::Status(500), 0.5));
        let o = connect(&["--fault", "reset"])
            .expect("parses")
            .forward_options();
        assert_eq!(o.fault.map(|p| p.rate), Some(1.0));
        for (bad, says) in [
            (&["--fault", "status=99"][..], "200 to 599"),
            (&["--fault", "bogus"][..], "not a fault"),
            (&["--fault", "reset", "--fault-rate", "2"][..], "at most 1"),
            (&["--fault-rate", "0.5"][..], "--fault"),
            (&["--deadline", "soon"][..], "10s"),
            (&["--caller", "stripe"][..], "auth0"),
            (&["--host-header", "a b"][..], "not a Host value"),
        ] {
            let err = connect(bad).expect_err("refused");
            assert!(err.contains(says), "{bad:?}: {err}");
        }
        let o = connect(&["--host-header", "rewrite", "--insecure-local"]).expect("parses");
        assert!(o.insecure_local);
        assert_eq!(o.host_header, Some(HostHeader::Rewrite));
    }

    #[test]
    fn start_takes_names_and_json() {
        let Command::Start(s) = parse(&["start", "api", "web", "--json", "--no-inspect"])
            .expect("parses")
            .command
        else {
            panic!("not start");
        };
        assert_eq!(s.names, ["api", "web"]);
        assert!(s.json && s.no_inspect);
        let Command::Start(s) = parse(&["start"]).expect("parses").command else {
            panic!("not start");
        };
        assert!(s.names.is_empty() && !s.json);
        let Command::Connect(c) = parse(&["connect", "4000", "--json"])
            .expect("parses")
            .command
        else {
            panic!("not connect");
        };
        assert!(c.json);
    }

    #[test]
    fn requests_has_show_and_keeps_its_flags() {
        let Command::Requests(r) = parse(&[
            "requests", "--missed", "--follow", "--json", "--name", "app",
        ])
        .expect("parses")
        .command
        else {
            panic!("not requests");
        };
        assert!(r.missed && r.follow && r.json && r.command.is_none());
        assert_eq!(r.tunnel.name.as_deref(), Some("app"));
        let Command::Requests(r) = parse(&["requests", "show", "01abc", "--raw", "--name", "app"])
            .expect("parses")
            .command
        else {
            panic!("not requests");
        };
        let Some(RequestsCommand::Show(s)) = r.command else {
            panic!("not show");
        };
        assert!(s.raw && !s.json && s.id == "01abc");
        assert_eq!(s.tunnel.name.as_deref(), Some("app"));
        assert!(parse(&["requests", "show", "01abc", "--raw", "--json"]).is_err());
        assert!(parse(&["requests", "show"]).is_err(), "show needs an id");
        assert!(parse(&["requests", "--limit", "5", "show", "01abc"]).is_err());
        let help = Cli::command()
            .find_subcommand_mut("requests")
            .expect("requests")
            .render_long_help()
            .to_string();
        assert!(help.contains("running") && help.contains("last"), "{help}");
    }

    #[test]
    fn requests_export_takes_ids_or_a_limit_and_a_format() {
        let Command::Requests(r) = parse(&[
            "requests", "export", "01a", "01b", "--format", "curl", "--to", "4000",
        ])
        .expect("parses")
        .command
        else {
            panic!("not requests");
        };
        let Some(RequestsCommand::Export(e)) = r.command else {
            panic!("not export");
        };
        assert_eq!(e.ids, ["01a", "01b"]);
        assert_eq!(e.format, crate::export::Format::Curl);
        assert_eq!((e.to.as_deref(), e.limit), (Some("4000"), 20));
        assert!(parse(&["requests", "export", "--format", "har", "--limit", "5"]).is_ok());
        assert!(parse(&["requests", "export", "--format", "ndjson"]).is_ok());
        assert!(
            parse(&["requests", "export", "01a"]).is_err(),
            "a format is required"
        );
        assert!(parse(&["requests", "export", "--format", "xml"]).is_err());
        assert!(parse(&["requests", "export", "01a", "--limit", "5", "--format", "har"]).is_err());
    }

    #[test]
    fn replay_takes_one_of_id_last_missed() {
        let Command::Replay(r) = parse(&["replay", "--missed", "--since", "2h"])
            .expect("parses")
            .command
        else {
            panic!("not replay");
        };
        assert!(r.missed && r.id.is_none());
        let since: std::time::Duration = r.since.expect("since").into();
        assert_eq!(since.as_secs(), 7200);
        assert!(parse(&["replay", "01abc"]).is_ok());
        assert!(parse(&["replay", "--last"]).is_ok());
        assert!(parse(&["replay"]).is_err());
        assert!(parse(&["replay", "01abc", "--missed"]).is_err());
        assert!(parse(&["replay", "--last", "--missed"]).is_err());
        assert!(
            parse(&["replay", "01abc", "--since", "2h"]).is_err(),
            "--since needs --missed"
        );
        assert!(parse(&["replay", "--missed", "--since", "soon"]).is_err());
    }

    #[test]
    fn replay_takes_edits_but_not_with_missed() {
        let Command::Replay(r) = parse(&[
            "replay",
            "01abc",
            "--header",
            "X-A: 1",
            "--header",
            "x-b:2",
            "--remove-header",
            "Cookie",
            "--method",
            "PUT",
            "--path",
            "/v2",
            "--body",
            "-",
            "--edit",
        ])
        .expect("parses")
        .command
        else {
            panic!("not replay");
        };
        let e = r.edit;
        assert_eq!(
            e.headers,
            [("X-A".into(), "1".into()), ("x-b".into(), "2".into())]
        );
        assert_eq!(e.remove_headers, ["Cookie"]);
        assert_eq!(e.body.as_deref(), Some("-"));
        assert!(e.edit && e.method.as_deref() == Some("PUT") && e.path.as_deref() == Some("/v2"));
        assert!(
            parse(&["replay", "--last", "--body", "-x"]).is_ok(),
            "a body may start with -"
        );
        assert!(parse(&["replay", "--last", "--header", "no colon"]).is_err());
        assert!(parse(&["replay", "--last", "--header", "bad name: x"]).is_err());
        assert!(parse(&["replay", "--missed", "--edit"]).is_err());
        assert!(parse(&["replay", "--missed", "--body", "x"]).is_err());
        assert!(parse(&["replay", "--last", "--diff"])
            .is_ok_and(|c| matches!(c.command, Command::Replay(ReplayArgs { diff: true, .. }))));
        assert!(parse(&["replay", "--missed", "--diff"]).is_err());
    }
}
