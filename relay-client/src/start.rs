//! `relay start [NAME ...]`: the tunnels of `relay.toml` (see
//! [`crate::config`]) in one process, run by [`crate::tunnels::serve`].

use std::path::Path;

use crate::cli::StartArgs;
use crate::config::TunnelsFile;
use crate::output::Mode;
use crate::tunnels::{serve, ServeOptions, Spec};

/// Runs the tunnels `args` names (all without names) of the `relay.toml`
/// next to the config file `config`.
pub fn start(args: &StartArgs, config: &Path) -> anyhow::Result<()> {
    let file = TunnelsFile::load(&crate::config::path_for(config))?;
    let specs = file
        .select(&args.names)?
        .into_iter()
        .map(|t| Spec {
            name: Some(t.name),
            target: t.target,
            // The table is the more specific: it wins over --server /
            // RELAY_SERVER, which win over config.toml.
            server: t.server.or_else(|| args.server.server.clone()),
            token: t.token.or_else(|| args.server.token.clone()),
            ca_cert: t.ca_cert.or_else(|| args.server.ca_cert.clone()),
            when_offline: t.when_offline.map(Into::into).unwrap_or_default(),
            deliver_missed: t.deliver_missed,
            edge: t.edge,
            forward: t.forward,
        })
        .collect();
    let opts = ServeOptions {
        inspect: crate::cli::inspect_at(args.no_inspect, args.inspect, args.inspect_first_port),
        mode: if args.json { Mode::Json } else { Mode::Human },
    };
    serve(specs, config, opts)
}
