//! The `strait-cp` command: run the control plane, or check its config.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use strait_control_plane::server::{ControlPlane, Options};

#[derive(Debug, Parser)]
#[command(
    name = "strait-cp",
    version,
    about = "Strait's control plane: service discovery, health checking and xDS"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve xDS (ADS) for the config file; SIGHUP re-reads it.
    Run {
        /// The YAML or JSON config file (the proxy's format, plus xds, registry, discovery and
        /// health_check).
        #[arg(long, short)]
        config: PathBuf,
        /// Where xDS listens (overrides `xds.address`; default 127.0.0.1:18000).
        #[arg(long)]
        xds: Option<SocketAddr>,
        /// Where the admin API listens (overrides `admin.address`; default 127.0.0.1:9902).
        #[arg(long)]
        admin: Option<SocketAddr>,
        /// Where the registration API listens (overrides `registry.address`; off without one).
        #[arg(long)]
        registry: Option<SocketAddr>,
    },
    /// Check a config file; print every problem and exit non-zero if there is any.
    Validate {
        /// The YAML or JSON config file.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_env("STRAIT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Validate { file } => match strait_config::load(&file) {
            Ok(_) => {
                println!("{}: ok", file.display());
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("{}", err.render(&file.display().to_string()));
                ExitCode::FAILURE
            }
        },
        Command::Run {
            config,
            xds,
            admin,
            registry,
        } => match run(
            &config,
            &Options {
                xds,
                admin,
                registry,
            },
        ) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("error: {err:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn load(path: &Path) -> anyhow::Result<strait_config::Config> {
    strait_config::load(path)
        .map_err(|err| anyhow::anyhow!("{}", err.render(&path.display().to_string())))
}

fn run(path: &Path, options: &Options) -> anyhow::Result<()> {
    let config = load(path)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let control_plane = ControlPlane::start(config, options).await?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        loop {
            tokio::select! {
                _ = term.recv() => break,
                result = tokio::signal::ctrl_c() => {
                    result?;
                    break;
                }
                _ = hup.recv() => match load(path) {
                    Ok(config) => {
                        tracing::info!(path = %path.display(), "SIGHUP: config reloaded");
                        control_plane.set_config(config);
                    }
                    Err(err) => tracing::warn!("SIGHUP: config rejected; the previous one keeps serving:\n{err}"),
                },
            }
        }
        tracing::info!("shutting down");
        control_plane.shutdown().await;
        Ok(())
    })
}
