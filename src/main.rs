//! `edge-ingester`: parse the command line, load config, set up logging,
//! handle signals, map outcomes to exit codes (0 ok, 1 runtime, 2 usage/config).

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use edge_ingester::cli::{self, Cli, Command, DeadLetterCommand, QueueCommand, ServeArgs};
use edge_ingester::config::{Config, LogFormat};
use edge_ingester::reload::Reloader;

mod alloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve(cli.serve)) {
        Command::Serve(args) => serve(args),
        Command::CheckConfig { config } => check_config(config),
        Command::Stats {
            url,
            api_key,
            ca_cert,
        } => {
            let key = api_key.unwrap_or_else(|| edge_ingester::config::DEFAULT_API_KEY.into());
            let out = runtime().and_then(|rt| {
                rt.block_on(cli::stats(&url, &key, ca_cert.as_deref()))
                    .map_err(anyhow::Error::msg)
            });
            print_or_fail(out)
        }
        Command::Queue { command } => print_or_fail(
            match command {
                QueueCommand::Inspect {
                    data_dir,
                    json,
                    config,
                } => cli::queue_inspect(&data_dir, json, config.as_deref()),
                QueueCommand::DeadLetter {
                    command: DeadLetterCommand::List { data_dir },
                } => cli::dead_letter_list(&data_dir),
                QueueCommand::DeadLetter {
                    command: DeadLetterCommand::Replay { data_dir, config },
                } => cli::dead_letter_replay(&data_dir, config.as_deref()),
            }
            .map_err(anyhow::Error::msg),
        ),
        Command::Bench(args) => print_or_fail(edge_ingester::bench::run(args)),
        Command::Agent { command } => ExitCode::from(edge_ingester::agent::main(command)),
        Command::Top(args) => ExitCode::from(edge_ingester::top::main(args)),
    }
}

fn print_or_fail(out: anyhow::Result<String>) -> ExitCode {
    match out {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn check_config(path: Option<std::path::PathBuf>) -> ExitCode {
    let checked = cli::load_config(path.as_deref()).and_then(|c| c.validate().map(|_| c));
    match checked {
        Ok(cfg) => {
            print!("{}", cfg.redacted_toml());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Sets up logging; the returned function changes the level while running
/// (a SIGHUP reload of `log.level`).
fn init_tracing(cfg: &Config) -> SetLogLevel {
    use tracing_subscriber::filter::LevelFilter;
    use tracing_subscriber::prelude::*;
    let level: tracing::Level = cfg.log.level.parse().unwrap_or(tracing::Level::INFO);
    let (filter, handle) = tracing_subscriber::reload::Layer::new(LevelFilter::from_level(level));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(filter);
    match cfg.log.format {
        LogFormat::Json => registry.with(fmt.json()).init(),
        LogFormat::Text => registry.with(fmt.with_ansi(false)).init(),
    }
    Box::new(move |level| {
        handle
            .modify(|f| *f = LevelFilter::from_level(level))
            .map_err(|e| e.to_string())
    })
}

type SetLogLevel = Box<dyn Fn(tracing::Level) -> Result<(), String> + Send + Sync>;

fn serve(args: ServeArgs) -> ExitCode {
    // First of all: SIGHUP's default action ends the process, and SPEC §9
    // says it never does. Until the runtime's handler (which reloads) is
    // installed, a SIGHUP only sets this unread flag.
    let _ = signal_hook::flag::register(
        signal_hook::consts::SIGHUP,
        std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
    );
    let cfg = match args.resolve() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let set_log_level = init_tracing(&cfg);
    match edge_ingester::fd_limit::raise_and_check(cfg.server.max_connections) {
        Ok(limit) => tracing::debug!(limit, "open-file limit"),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    }
    let reloader = Reloader {
        load: Box::new(move || args.resolve()),
        set_log_level,
    };
    match runtime().and_then(|rt| rt.block_on(serve_until_signal(cfg, reloader))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn serve_until_signal(cfg: Config, reloader: Reloader) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    // First, so that from here on SIGHUP reloads instead of killing us (its
    // default action).
    let hangups = signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?;
    let listener = tokio::net::TcpListener::bind(&cfg.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.server.listen))?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot install the SIGTERM handler")?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("shutdown requested: finishing in-flight requests");
    };
    edge_ingester::run_with_reload(cfg, listener, shutdown, Some((reloader, hangups))).await?;
    Ok(())
}
