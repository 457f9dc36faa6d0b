//! `edge-ingester`: parse the command line, load config, set up logging,
//! handle signals, map outcomes to exit codes (0 ok, 1 runtime, 2 usage/config).

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use edge_ingester::cli::{self, Cli, Command, DeadLetterCommand, QueueCommand, ServeArgs};
use edge_ingester::config::{Config, LogFormat};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve(cli.serve)) {
        Command::Serve(args) => serve(args),
        Command::CheckConfig { config } => check_config(config),
        Command::Stats { url, api_key } => {
            let key = api_key.unwrap_or_else(|| edge_ingester::config::DEFAULT_API_KEY.into());
            let out = runtime().and_then(|rt| {
                rt.block_on(cli::stats(&url, &key))
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

fn init_tracing(cfg: &Config) {
    let level: tracing::Level = cfg.log.level.parse().unwrap_or(tracing::Level::INFO);
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr);
    match cfg.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.with_ansi(false).init(),
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let cfg = match args.resolve() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    init_tracing(&cfg);
    match edge_ingester::fd_limit::raise_and_check(cfg.server.max_connections) {
        Ok(limit) => tracing::debug!(limit, "open-file limit"),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    }
    match runtime().and_then(|rt| rt.block_on(serve_until_signal(cfg))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn serve_until_signal(cfg: Config) -> anyhow::Result<()> {
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
    edge_ingester::run(cfg, listener, shutdown).await?;
    Ok(())
}
