//! `estate-gateway` — thin CLI over the library: parse flags, load config, run.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use estate_config::Config;
use estate_gateway::telemetry::{init_logging, LogFormat};

#[derive(Debug, Parser)]
#[command(
    name = "estate-gateway",
    version,
    about = "Edge gateway for residential-estate safety sensors"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Log level or filter (RUST_LOG overrides it).
    #[arg(long, global = true, default_value = "info,rumqttd=off")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway.
    Run {
        /// Configuration file.
        #[arg(long, short, default_value = "/etc/estate-gateway/gateway.toml")]
        config: PathBuf,
        /// Where the store lives (overrides gateway.data_dir).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// After SIGTERM/SIGINT, how long forwarding may continue before exit.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        grace: Duration,
        /// Listen address for the local API (overrides api.listen).
        #[arg(long)]
        api_listen: Option<std::net::SocketAddr>,
    },
    /// Validate a configuration file; report every problem with its location, then the
    /// warnings (insecure but valid settings; they do not fail the check).
    CheckConfig {
        /// Configuration file.
        file: PathBuf,
    },
    /// Run a whole simulated estate on this machine: embedded broker, gateway, devices,
    /// and a reference city-platform subscriber. Nothing to install.
    #[cfg(feature = "demo")]
    Demo(estate_gateway::demo::DemoArgs),
    /// (A field build has no demo: this only says so.)
    #[cfg(not(feature = "demo"))]
    #[command(hide = true)]
    Demo {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
        args: Vec<String>,
    },
    /// Modbus tools for installers: `probe` reads a configured device once and prints
    /// every decoded point; `write` writes one coil or register. No daemon needed.
    Modbus(estate_gateway::ingest::modbus::cli::ModbusArgs),
    /// List the gateway's alerts (open ones; `--all` adds the history), most urgent
    /// first; `--follow` then keeps printing changes (repeats fold).
    Alerts(estate_gateway::alerts::cli::ListArgs),
    /// Acknowledge an alert (needs the API token: --token or ESTATE_API_TOKEN).
    Ack(estate_gateway::alerts::cli::AckArgs),
    /// Close an alert with a disposition: real, false_alarm, test or maintenance.
    Close(estate_gateway::alerts::cli::CloseArgs),
    /// Store tools: `verify DIR` says whether a store opens and what it holds.
    #[command(subcommand)]
    Store(StoreCommand),
    /// Audit tools: `verify` checks the audit trail's hash chain.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Accounts that sign in to the console and named API tokens: `add NAME --role ROLE`,
    /// `passwd NAME`, `remove NAME`, `list`, `token add NAME --role ROLE`, `token remove
    /// NAME` (in the data folder's users.json; works while the gateway runs).
    Users(estate_gateway::auth::cli::UsersArgs),
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Check the audit hash chain (docs/alerts-and-api.md, "Audit chain"): print the
    /// entries checked, pruned and unhashed, and the head; exit 1 naming the first broken
    /// entry unless it is intact. Stop the gateway first (the store is locked while it
    /// runs), or pass --copy.
    Verify {
        /// The data folder (holding `store/`), or the store folder itself.
        #[arg(long, default_value = "/var/lib/estate-gateway")]
        data_dir: PathBuf,
        /// Verify a copy (in the temporary folder) and leave the store exactly as it is.
        #[arg(long)]
        copy: bool,
    },
}

#[derive(Debug, Subcommand)]
enum StoreCommand {
    /// Open a store (a store folder, or a data folder holding `store/`), read every
    /// record, compare it with its high-water mark; exit 1 unless all is well. Stop the
    /// gateway first (the store is locked while it runs).
    Verify {
        dir: PathBuf,
        /// Verify a copy (in the temporary folder) and leave DIR exactly as it is, e.g. a
        /// quarantined store kept for diagnosis. sled may otherwise finish its own crash
        /// recovery in DIR, as the gateway's next start would.
        #[arg(long)]
        copy: bool,
    },
}

fn main() -> ExitCode {
    let malloc_tuned = tune_malloc();
    let cli = Cli::parse();
    init_logging(cli.log_format, &cli.log_level);
    match execute(cli.command, malloc_tuned) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", estate_gateway::error_chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

/// Runs one subcommand: its exit status, or the error to print (exit status 1).
fn execute(command: Command, malloc_tuned: bool) -> anyhow::Result<ExitCode> {
    match command {
        Command::CheckConfig { file } => check_config(&file)?,
        Command::Run {
            config,
            data_dir,
            grace,
            api_listen,
        } => {
            if malloc_tuned {
                spawn_heap_trimmer();
            }
            runtime()?.block_on(run(config, data_dir, grace, api_listen))?;
        }
        #[cfg(feature = "demo")]
        Command::Demo(args) => runtime()?
            .block_on(estate_gateway::demo::run(args))
            .context("demo failed")?,
        #[cfg(not(feature = "demo"))]
        Command::Demo { .. } => bail!(
            "this estate-gateway was built without the `demo` cargo feature (a field build); \
             run the demo from a source checkout: cargo run --release -p estate-gateway -- demo"
        ),
        Command::Modbus(args) => {
            let text = runtime()?
                .block_on(estate_gateway::ingest::modbus::cli::run(args))
                .map_err(anyhow::Error::msg)?;
            print!("{text}");
        }
        Command::Alerts(args) => runtime()?
            .block_on(estate_gateway::alerts::cli::list(args))
            .map_err(anyhow::Error::msg)?,
        Command::Ack(args) => runtime()?
            .block_on(estate_gateway::alerts::cli::ack(args))
            .map_err(anyhow::Error::msg)?,
        Command::Close(args) => runtime()?
            .block_on(estate_gateway::alerts::cli::close(args))
            .map_err(anyhow::Error::msg)?,
        Command::Audit(AuditCommand::Verify { data_dir, copy }) => {
            let (report, intact) = estate_gateway::alerts::chain::verify_dir(&data_dir, copy)
                .map_err(anyhow::Error::msg)?;
            print!("{report}");
            if !intact {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Users(args) => {
            print!(
                "{}",
                estate_gateway::auth::cli::run(args).map_err(anyhow::Error::msg)?
            );
        }
        Command::Store(StoreCommand::Verify { dir, copy }) => {
            let (report, sound) =
                estate_gateway::store::verify::verify(&dir, copy).map_err(anyhow::Error::msg)?;
            print!("{report}");
            if !sound {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// glibc's malloc, left to itself, keeps what sled frees: the pages sled reads back from a
/// large stored backlog are freed in small pieces between live ones, in a heap and in one
/// arena per thread. Two arenas, blocks of 64 KiB and more in their own mappings, and the
/// heap trimmed from 128 KiB free: measured 57–73 MB → 31–32 MB RSS on a 1 M-event
/// backlog (docs/footprint.md). An operator's `MALLOC_*` environment takes precedence.
/// The static musl build keeps musl's allocator as it is (not measured).
///
/// Returns whether this tuning is in effect (glibc, and no `MALLOC_*` set).
fn tune_malloc() -> bool {
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let env_set = [
            "MALLOC_ARENA_MAX",
            "MALLOC_MMAP_THRESHOLD_",
            "MALLOC_TRIM_THRESHOLD_",
        ]
        .iter()
        .any(|v| std::env::var_os(v).is_some());
        if !env_set {
            // SAFETY: mallopt only sets allocator parameters; this runs first in main,
            // before any other thread exists. With `malloc_trim` below, the only unsafe code
            // in the workspace.
            #[allow(unsafe_code)]
            unsafe {
                libc::mallopt(libc::M_ARENA_MAX, 2);
                libc::mallopt(libc::M_MMAP_THRESHOLD, 64 * 1024);
                libc::mallopt(libc::M_TRIM_THRESHOLD, 128 * 1024);
            }
        }
        !env_set
    }
}

/// How often the daemon hands free heap pages back to the kernel.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const HEAP_TRIM_EVERY: Duration = Duration::from_millis(250);

/// glibc gives memory back to the kernel only from the top of a heap (`M_TRIM_THRESHOLD`
/// above); what is freed between live blocks stays in the process. While the uplink
/// drains a backlog, sled reads pages back and drops them at a high rate, and RSS then
/// stayed at 38–40 MB after the drain. `malloc_trim` releases every free page in every
/// arena; the daemon calls it from its own thread every `HEAP_TRIM_EVERY` (250 ms):
/// 22–24 MB after the same drain (docs/footprint.md). One call measured 0.1–1 ms of
/// that thread's time on this 2-core VM; it holds an arena's lock only while it walks
/// that arena.
fn spawn_heap_trimmer() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let trimmer = std::thread::Builder::new()
            .name("heap-trim".into())
            .stack_size(64 * 1024)
            .spawn(|| loop {
                std::thread::sleep(HEAP_TRIM_EVERY);
                // SAFETY: malloc_trim only returns free pages to the kernel; glibc takes
                // each arena's lock while it walks it. No pointers change hands.
                #[allow(unsafe_code)]
                unsafe {
                    libc::malloc_trim(0);
                }
            });
        if let Err(e) = trimmer {
            tracing::warn!(error = %e, "Cannot start the heap trimmer; running without it.");
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")
}

fn check_config(file: &std::path::Path) -> anyhow::Result<()> {
    match Config::load(file) {
        Ok(cfg) => {
            // The verdict first, then the warnings. Secrets never reach this output:
            // warnings name keys and files, not values.
            let warnings = cfg.warnings();
            println!(
                "{}: OK (gateway {}, estate {}, {} devices{})",
                file.display(),
                cfg.gateway.id,
                cfg.gateway.estate_id,
                cfg.devices.len(),
                match warnings.len() {
                    0 => String::new(),
                    n => format!(", {n} warning(s)"),
                }
            );
            for w in &warnings {
                println!("warning: {w}");
            }
            Ok(())
        }
        Err(errors) => {
            for p in &errors.0 {
                println!("{p}");
            }
            bail!("{} problem(s) in {}", errors.0.len(), file.display())
        }
    }
}

async fn run(
    config: PathBuf,
    data_dir: Option<PathBuf>,
    grace: Duration,
    api_listen: Option<std::net::SocketAddr>,
) -> anyhow::Result<()> {
    let cfg = Config::load(&config).map_err(|e| anyhow!("invalid config:\n{e}"))?;
    for w in cfg.warnings() {
        tracing::warn!(key = %w.path, "{}", w.message);
    }
    let data_dir = data_dir
        .or_else(|| cfg.gateway.data_dir.clone())
        .context("no data directory: pass --data-dir or set gateway.data_dir")?;
    let api_listener = match api_listen {
        Some(addr) => Some(
            std::net::TcpListener::bind(addr)
                .with_context(|| format!("cannot bind the API on {addr}"))?,
        ),
        None => None,
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<estate_gateway::Running>();
    let shown_dir = data_dir.display().to_string();
    let scheme = if cfg.api.tls_cert.is_some() {
        "https"
    } else {
        "http"
    };
    tokio::spawn(async move {
        if let Ok(r) = ready_rx.await {
            // One machine-readable line on stdout for supervisors and tests.
            println!(
                "estate-gateway ready api={scheme}://{} data_dir={} store_epoch={} boot_id={}",
                r.api_addr,
                shown_dir,
                r.reader.epoch(),
                r.boot_id
            );
        }
    });
    estate_gateway::run(
        cfg,
        estate_gateway::RunOptions {
            data_dir,
            grace,
            api_listener,
            on_ready: Some(ready_tx),
        },
        shutdown,
    )
    .await?;
    Ok(())
}

/// SIGTERM or SIGINT → orderly shutdown.
async fn stop_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("Cannot install signal handlers; stop with SIGKILL only.");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping."),
        _ = int.recv() => tracing::info!("SIGINT: stopping."),
    }
    shutdown.cancel();
}
