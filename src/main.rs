//! The `wsus-edge` binary: parse the command line, read the environment (the only place that
//! does), set up logging and the runtime, run the subcommand, map its result to an exit code.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = wsus_edge::cli::Cli::parse();
    // WSUS_EDGE_LOG (or RUST_LOG) selects what is logged, e.g. "warn" or "wsus_edge=debug".
    // The demo tells its own story on stdout; its nodes' access lines would drown it.
    let default = match cli.command {
        wsus_edge::cli::Command::Demo { .. } => "warn",
        _ => "info",
    };
    let pinned = std::env::var("WSUS_EDGE_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .ok();
    // WSUS_EDGE_LOG_FORMAT=json: one JSON object per line, for log shippers (as log.format).
    let format = std::env::var("WSUS_EDGE_LOG_FORMAT").ok();
    let logging = wsus_edge::logging::Logging::init(wsus_edge::logging::Options {
        filter_pinned: pinned.is_some(),
        filter: pinned.unwrap_or_else(|| default.into()),
        json: format
            .as_deref()
            .is_some_and(|f| f.eq_ignore_ascii_case("json")),
        format_pinned: format.is_some(),
        ansi: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        journald: wsus_edge::logging::stderr_is_journal(
            std::env::var("JOURNAL_STREAM").ok().as_deref(),
        ),
    });
    // Only ring is compiled in; installing it makes the choice explicit for any code that asks
    // rustls for "the default" provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with("WSUS_EDGE_"))
        .collect();
    // The load generator's threads each want an arena of their own: two shared by every core
    // it is given would serialise its allocations (a node's memory is what the limit is for).
    if !matches!(cli.command, wsus_edge::cli::Command::Simulate { .. }) {
        wsus_edge::allocator::limit_arenas();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wsus-edge: cannot start the runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let exit = runtime.block_on(wsus_edge::cli::run(cli, env, logging));
    std::process::ExitCode::from(exit as u8)
}
