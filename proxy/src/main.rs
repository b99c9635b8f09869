//! The `strait` command: run the proxy, validate a config, or run the built-in demo.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use clap::{Parser, Subcommand};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use strait_proxy::admin::ConfigSource;
use strait_proxy::reload::watch::FileWatcher;
use strait_proxy::server::Inherited;
use strait_proxy::upgrade::{Takeover, UpgradeServer};
use strait_proxy::{IoMode, Options, Server, demo, xds_client};
use tokio::signal::unix::{SignalKind, signal};

/// mimalloc instead of glibc's malloc: size-segregated pages that go back to the kernel once
/// empty, so the buffers of a burst of connections do not stay resident after the connections
/// park (glibc's arenas kept ~3 KiB per idle connection), and a cheaper thread-local fast path.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Debug, Parser)]
#[command(name = "strait", version, about = "Strait: a thread-per-core L7 proxy")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the proxy from a config file (SIGHUP, or a change to the file, reloads it), or
    /// following a control plane over xDS (`--xds`).
    Run {
        /// The YAML or JSON config file.
        #[arg(long, short, required_unless_present = "xds", conflicts_with = "xds")]
        config: Option<PathBuf>,
        /// Follow the control plane(s) at these `host:port` addresses over ADS, trying the next
        /// one when a stream fails, instead of reading a file.
        #[arg(long, value_delimiter = ',', requires = "node_id")]
        xds: Vec<String>,
        /// This proxy's node id, as the control plane sees it (with --xds).
        #[arg(long)]
        node_id: Option<String>,
        /// This proxy's node cluster (with --xds; default: the node id).
        #[arg(long)]
        node_cluster: Option<String>,
        /// Do not reload the config when the file changes (SIGHUP and `PUT /config` still do).
        #[arg(long)]
        no_watch: bool,
        /// Accept binary upgrades on this UNIX socket: a new `strait run --upgrade-from PATH`
        /// takes over the listening sockets and this process drains and exits.
        #[arg(long, value_name = "PATH")]
        upgrade_socket: Option<PathBuf>,
        /// Take the listening sockets of the `strait` listening for upgrades on PATH, start
        /// serving on them, then tell it to drain and exit.
        #[arg(long, value_name = "PATH")]
        upgrade_from: Option<PathBuf>,
        #[command(flatten)]
        process: ProcessArgs,
    },
    /// Check a config file; print every problem and exit non-zero if there is any.
    Validate {
        /// The YAML or JSON config file.
        file: PathBuf,
    },
    /// Run the proxy and two built-in backends on loopback, and print what to try.
    Demo {
        /// Where the demo proxy listens (default 127.0.0.1:8080, or a free port if taken).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Send requests through the demo, print what answered, and exit.
        #[arg(long)]
        check: bool,
        #[command(flatten)]
        process: ProcessArgs,
    },
}

#[derive(Debug, clap::Args)]
struct ProcessArgs {
    /// Worker threads (default: one per CPU the process may run on).
    #[arg(long, default_value_t = 0)]
    workers: usize,
    /// Seconds in-flight requests get to finish on SIGTERM/SIGINT (and when a reload removes a
    /// listener, or a new binary takes over).
    #[arg(long, default_value_t = 10)]
    drain_timeout: u64,
    /// Seconds `/ready` reports not ready on SIGTERM before the listeners stop accepting, so that
    /// load balancers stop sending first.
    #[arg(long, default_value_t = 0.0)]
    pre_drain_delay: f64,
    /// Where the admin API listens (overrides `admin.address`; default 127.0.0.1:9901).
    #[arg(long)]
    admin: Option<SocketAddr>,
    /// Do not record per-request metrics (to measure what they cost).
    #[arg(long)]
    no_metrics: bool,
    /// Socket I/O backend: auto (io_uring where the kernel allows it, else epoll), uring or
    /// epoll. Overrides the config's `io` (default auto).
    #[arg(long, value_enum)]
    io: Option<IoArg>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum IoArg {
    Auto,
    Uring,
    Epoll,
}

/// The admin API's address when neither the command line nor the config names one.
const DEFAULT_ADMIN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9901);

impl ProcessArgs {
    fn options(&self, config: &strait_config::Config, source: Option<ConfigSource>) -> Options {
        let admin = self
            .admin
            .or_else(|| config.admin().map(strait_config::Admin::address))
            .unwrap_or(DEFAULT_ADMIN);
        Options {
            workers: self.workers,
            drain_timeout: Duration::from_secs(self.drain_timeout),
            metrics: !self.no_metrics,
            io: match self.io {
                Some(IoArg::Auto) => IoMode::Auto,
                Some(IoArg::Uring) => IoMode::Uring,
                Some(IoArg::Epoll) => IoMode::Epoll,
                None => match config.io() {
                    strait_config::IoBackend::Auto => IoMode::Auto,
                    strait_config::IoBackend::Uring => IoMode::Uring,
                    strait_config::IoBackend::Epoll => IoMode::Epoll,
                },
            },
            admin: Some(admin),
            source,
            pre_drain_delay: Duration::try_from_secs_f64(self.pre_drain_delay).unwrap_or_default(),
        }
    }
}

fn main() -> ExitCode {
    init_tracing();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run {
            config,
            xds,
            node_id,
            node_cluster,
            no_watch,
            upgrade_socket,
            upgrade_from,
            process,
        } => match config {
            Some(config) => run(
                &config,
                &process,
                &Upgrades {
                    watch: !no_watch,
                    socket: upgrade_socket,
                    from: upgrade_from,
                },
            ),
            None => {
                let node_id = node_id.unwrap_or_default();
                run_xds(
                    xds_client::Settings {
                        addresses: xds,
                        node_cluster: node_cluster.unwrap_or_else(|| node_id.clone()),
                        node_id,
                    },
                    &process,
                )
            }
        },
        Command::Validate { file } => return validate(&file),
        Command::Demo {
            listen,
            check,
            process,
        } => run_demo(listen, check, &process),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("STRAIT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .init();
}

fn validate(file: &Path) -> ExitCode {
    match strait_config::load(file) {
        Ok(_) => {
            println!("{}: ok", file.display());
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("{}", err.render(&file.display().to_string()));
            ExitCode::FAILURE
        }
    }
}

/// How `run` reloads and upgrades.
struct Upgrades {
    watch: bool,
    socket: Option<PathBuf>,
    from: Option<PathBuf>,
}

fn run(path: &Path, process: &ProcessArgs, upgrades: &Upgrades) -> anyhow::Result<()> {
    let config = strait_config::load(path)
        .map_err(|err| anyhow::anyhow!("{}", err.render(&path.display().to_string())))?;
    let source = std::fs::read_to_string(path).ok().map(|text| ConfigSource {
        text,
        format: strait_config::Format::from_path(path),
    });
    let options = process.options(&config, source);
    let (takeover, inherited) = match &upgrades.from {
        Some(from) => {
            let (takeover, inherited) = Takeover::connect(from)
                .with_context(|| format!("taking the listening sockets from {}", from.display()))?;
            (Some(takeover), inherited)
        }
        None => (None, Inherited::default()),
    };
    let server = Server::start_with(config, &options, inherited)?;
    if let Some(takeover) = takeover {
        takeover
            .finish()
            .context("telling the old process to drain")?;
        tracing::info!("took over from the old process; it drains and exits");
    }
    let (handed_over, mut hand_over) = tokio::sync::mpsc::unbounded_channel();
    let _upgrades = match &upgrades.socket {
        Some(socket) => {
            let admin = server.admin_listener().transpose()?;
            Some(UpgradeServer::start(
                socket,
                Arc::clone(server.reloader()),
                admin,
                handed_over,
            )?)
        }
        None => None,
    };
    let _watcher = if upgrades.watch {
        match FileWatcher::start(path, Arc::clone(server.reloader())) {
            Ok(watcher) => Some(watcher),
            Err(err) => {
                tracing::warn!(error = %err, "the config file cannot be watched; SIGHUP reloads it");
                None
            }
        }
    } else {
        None
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        // SIGHUP reloads run on the blocking pool, at the lowest priority.
        .on_thread_start(strait_proxy::reload::lower_thread_priority)
        .enable_all()
        .build()?;
    let event = runtime.block_on(async {
        let mut term = signal(SignalKind::terminate())?;
        let mut hup = signal(SignalKind::hangup())?;
        loop {
            tokio::select! {
                _ = term.recv() => return Ok::<_, anyhow::Error>(Stop::Shutdown),
                result = tokio::signal::ctrl_c() => {
                    result?;
                    return Ok(Stop::Shutdown);
                }
                Some(()) = hand_over.recv() => return Ok(Stop::HandedOver),
                _ = hup.recv() => {
                    tracing::info!(path = %path.display(), "SIGHUP: reloading the config");
                    let reloader = Arc::clone(server.reloader());
                    let path = path.to_owned();
                    // Problems are logged and counted by the reloader.
                    let _ = tokio::task::spawn_blocking(move || reloader.apply_file(&path)).await;
                }
            }
        }
    })?;
    match event {
        Stop::Shutdown => {
            tracing::info!("shutting down: draining in-flight requests");
            server.shutdown();
        }
        Stop::HandedOver => server.hand_over(),
    }
    tracing::info!("stopped");
    Ok(())
}

/// Applies configs from xDS: the server starts with the first complete one.
struct XdsApplier<'a> {
    server: Option<Server>,
    process: &'a ProcessArgs,
}

impl xds_client::Apply for XdsApplier<'_> {
    fn apply(&mut self, config: strait_config::Config, document: String) -> Result<(), String> {
        let source = ConfigSource {
            text: document,
            format: strait_config::Format::Json,
        };
        match &self.server {
            Some(server) => server
                .reloader()
                .apply_config(config, Some(source))
                .map(|applied| {
                    tracing::info!(version = applied.version, "config from xDS applied");
                })
                .map_err(|err| err.to_string()),
            None => {
                let options = self.process.options(&config, Some(source));
                let server = Server::start(config, &options).map_err(|err| format!("{err:#}"))?;
                tracing::info!("first config from xDS applied; serving");
                self.server = Some(server);
                Ok(())
            }
        }
    }
}

fn run_xds(settings: xds_client::Settings, process: &ProcessArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut applier = XdsApplier {
        server: None,
        process,
    };
    runtime.block_on(async {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut term = signal(SignalKind::terminate())?;
        let follow = xds_client::follow(settings, &mut applier, stopped);
        tokio::pin!(follow);
        tokio::select! {
            () = &mut follow => {}
            _ = term.recv() => {}
            result = tokio::signal::ctrl_c() => result?,
        }
        let _ = stop.send(true);
        Ok::<_, anyhow::Error>(())
    })?;
    if let Some(server) = applier.server.take() {
        tracing::info!("shutting down: draining in-flight requests");
        server.shutdown();
    }
    tracing::info!("stopped");
    Ok(())
}

/// Why `run` stops.
enum Stop {
    Shutdown,
    HandedOver,
}

fn run_demo(listen: Option<SocketAddr>, check: bool, process: &ProcessArgs) -> anyhow::Result<()> {
    let backends = demo::start_backends().context("starting the demo backends")?;
    let text = demo::config(demo::listen_addr(listen), &backends);
    let config = strait_config::parse(&text, strait_config::Format::Yaml)
        .map_err(|err| anyhow::anyhow!("{}", err.render("demo.yaml")))?;
    let mut options = process.options(
        &config,
        Some(ConfigSource {
            text,
            format: strait_config::Format::Yaml,
        }),
    );
    // The demo must start on a fresh machine: take any free port if the usual one is taken.
    if process.admin.is_none() && std::net::TcpListener::bind(DEFAULT_ADMIN).is_err() {
        options.admin = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    }
    let server = Server::start(config, &options)?;
    let addr = server
        .addr("demo")
        .context("the demo listener is missing")?;
    let base = format!("http://{addr}");
    println!(
        "Strait demo: proxy on {base} with {} workers",
        server.workers()
    );
    println!(
        "backends: backend-a on {}, backend-b on {}",
        backends[0], backends[1]
    );
    if let Some(admin) = server.admin_addr() {
        println!("admin API: http://{admin}/metrics /ready /config /clusters /workers");
    }
    if check {
        let outcome = check_demo(addr);
        server.shutdown();
        return outcome;
    }
    println!();
    println!("Try:");
    println!("  curl -i {base}/            # round robin over backend-a and backend-b");
    println!("  curl {base}/a/hello        # routed to backend-a, prefix rewritten to /hello");
    println!("  curl {base}/b/hello        # routed to backend-b");
    println!("  for i in $(seq 10); do curl -s {base}/split; done   # 80/20 weighted split");
    println!("  curl -H 'x-canary: 1' {base}/   # header match: always backend-b");
    println!("  curl -i {base}/health      # direct response from the proxy");
    println!("  curl --http2-prior-knowledge {base}/   # h2c on the same port");
    println!("Press Ctrl-C to stop.");
    wait_for_signal()?;
    server.shutdown();
    Ok(())
}

/// Sends requests through the demo and prints which backend answered each kind.
fn check_demo(addr: SocketAddr) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        for (path, count, canary) in [
            ("/", 10, false),
            ("/split", 100, false),
            ("/a/x", 5, false),
            ("/", 5, true),
        ] {
            let mut seen = BTreeMap::new();
            for _ in 0..count {
                let backend = demo_request(addr, path, canary).await?;
                *seen.entry(backend).or_insert(0) += 1;
            }
            let label = if canary {
                format!("{path} with x-canary: 1")
            } else {
                path.to_owned()
            };
            println!("{label:<24} {count:>3} requests -> {seen:?}");
        }
        Ok(())
    })
}

async fn demo_request(addr: SocketAddr, path: &str, canary: bool) -> anyhow::Result<String> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut request = http::Request::get(path).header("host", "demo.local");
    if canary {
        request = request.header("x-canary", "1");
    }
    let response = tokio::time::timeout(
        Duration::from_secs(5),
        sender.send_request(request.body(Empty::<Bytes>::new())?),
    )
    .await
    .context("demo request timed out")??;
    anyhow::ensure!(
        response.status().is_success(),
        "{path} answered {}",
        response.status()
    );
    let backend = response
        .headers()
        .get("x-backend")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("?")
        .to_owned();
    let _ = response.into_body().collect().await?;
    Ok(backend)
}

/// Blocks until SIGTERM or SIGINT.
fn wait_for_signal() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => {}
            result = tokio::signal::ctrl_c() => result?,
        }
        Ok(())
    })
}
