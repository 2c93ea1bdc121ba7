//! The `routebackup` command line: `run`, `check`, `status`, `reload`, `completions`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use routebackup::config::{Config, DEFAULT_CONTROL_SOCKET};
use routebackup::control;
use routebackup::daemon::lock::AgentLocks;
use routebackup::daemon::{self, ActionSink};
use routebackup::dataplane::{Dataplane, Mode};
use routebackup::error::Report;
use routebackup::kernel::{parse_features, Kernel, UnknownFeature, WITHOUT_ENV};

use routebackup::paths::{dry_run_socket, DEFAULT_CONFIG};

/// Dynamic route backup: brings up backup links when the primary routes to
/// monitored segments vanish, and steers their traffic on the XDP/TC fast path.
#[derive(Parser)]
#[command(name = "routebackup", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent (needs root / CAP_NET_ADMIN).
    Run {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// error, warn, info, debug, trace, or syslog's names (warning, err,
        /// notice, ...); per module: `routebackup=debug,info` (RUST_LOG overrides).
        #[arg(long, default_value = "info")]
        log_level: String,
        /// On stop, leave the programs attached, the maps pinned, the links and
        /// kernel routes as they are, so traffic keeps flowing; the next start
        /// adopts them without flapping any link.
        #[arg(long)]
        keep_fastpath: bool,
        /// Run the engine without the fast path, link drivers, hooks and
        /// metrics endpoint: decisions are only logged (for trying a config
        /// on a live box). Its control socket is the config's with
        /// `-dry-run` added (/run/routebackup-dry-run.sock by default), so
        /// it runs beside the live agent.
        #[arg(long)]
        dry_run: bool,
        /// Kernel features to treat as absent, comma-separated (see
        /// `routebackup kernel`): to work around a feature that misbehaves
        /// on a box, and for tests of every fallback.
        #[arg(long, env = WITHOUT_ENV, value_delimiter = ',')]
        kernel_without: Vec<String>,
    },
    /// Probe what this kernel can do for the agent, like `bpftool feature`
    /// for what routebackup needs: each feature, the oldest Linux that has
    /// it, and what its absence costs. Needs no running agent (run as root:
    /// the probes load programs). Exit 1 when the agent cannot run here, or
    /// nothing could be probed.
    Kernel {
        /// Print the JSON document instead of a table.
        #[arg(long)]
        json: bool,
        /// Features to treat as absent, comma-separated (as `run` does).
        #[arg(long, env = WITHOUT_ENV, value_delimiter = ',')]
        without: Vec<String>,
    },
    /// Validate a config file and print its normalised form; on stderr, what
    /// the kernel offers the agent (exit 1 if it could not run here).
    Check {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Show the running agent's groups, segments and links.
    Status {
        /// Print the JSON document instead of tables.
        #[arg(long)]
        json: bool,
        /// Control socket (default: the config's control_socket, else /run/routebackup.sock).
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Read the control socket path from this config.
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Print the metrics in the Prometheus text format instead: what
        /// `[metrics] listen` serves at /metrics (e.g. for a textfile collector).
        #[arg(long, conflicts_with = "json")]
        prometheus: bool,
    },
    /// Make the running agent re-read its config file and apply the
    /// difference (like SIGHUP). Exits non-zero, printing why, when the
    /// agent refused the new config (it keeps running the old one).
    Reload {
        /// Control socket (default: the config's control_socket, else /run/routebackup.sock).
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Read the control socket path from this config.
        #[arg(short, long, conflicts_with = "socket")]
        config: Option<PathBuf>,
    },
    /// Print a shell completion script (e.g. `routebackup completions bash
    /// > /etc/bash_completion.d/routebackup`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages (routebackup.1, routebackup-run.1, ...),
    /// generated from these definitions, into a directory (`cargo xtask dist`).
    #[command(hide = true)]
    Manpage { dir: PathBuf },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run {
            config,
            log_level,
            keep_fastpath,
            dry_run,
            kernel_without,
        } => run(&config, &log_level, keep_fastpath, dry_run, &kernel_without),
        Command::Kernel { json, without } => kernel(json, &without),
        Command::Check { config } => match Config::load(&config) {
            Ok(c) => {
                print!("{}", c.normalised());
                check_kernel()
            }
            Err(e) => {
                eprintln!("{}", Report(&e));
                ExitCode::FAILURE
            }
        },
        Command::Status {
            json,
            socket,
            config,
            prometheus,
        } => status(json, prometheus, socket, config),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "routebackup",
                &mut std::io::stdout(),
            );
            ExitCode::SUCCESS
        }
        Command::Manpage { dir } => match clap_mangen::generate_to(Cli::command(), &dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!(
                    "routebackup: cannot write the man pages into {}: {}",
                    dir.display(),
                    Report(&e)
                );
                ExitCode::FAILURE
            }
        },
        Command::Reload { socket, config } => reload(socket, config),
    }
}

fn reload(socket: Option<PathBuf>, config: Option<PathBuf>) -> ExitCode {
    let socket = match control_socket(socket, config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    match control::request_reload(&socket) {
        Ok(r) if r.ok => {
            println!("routebackup: reloaded: {}", r.summary);
            ExitCode::SUCCESS
        }
        Ok(r) => {
            eprintln!("routebackup: reload {}", r.summary);
            for e in &r.errors {
                eprintln!("{e}");
            }
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("routebackup: {}", Report(&e));
            ExitCode::FAILURE
        }
    }
}

/// The control socket: `--socket`, else the one of `--config`, else the default.
fn control_socket(socket: Option<PathBuf>, config: Option<PathBuf>) -> Result<PathBuf, ExitCode> {
    match (socket, config) {
        (Some(s), _) => Ok(s),
        (None, Some(c)) => match Config::load(&c) {
            Ok(c) => Ok(c.agent.control_socket),
            Err(e) => {
                eprintln!("{}", Report(&e));
                Err(ExitCode::FAILURE)
            }
        },
        (None, None) => Ok(PathBuf::from(DEFAULT_CONTROL_SOCKET)),
    }
}

/// The host kernel with the named features forced off.
fn probed_kernel(without: &[String]) -> Result<Kernel, UnknownFeature> {
    let off = parse_features(&without.join(","))?;
    Ok(Kernel::host().without(&off))
}

/// Prints `value` as pretty JSON on stdout.
fn print_json(value: &impl serde::Serialize) -> Result<(), ExitCode> {
    match serde_json::to_string_pretty(value) {
        Ok(s) => {
            println!("{s}");
            Ok(())
        }
        Err(e) => {
            eprintln!("routebackup: {e}");
            Err(ExitCode::FAILURE)
        }
    }
}

/// `check`'s word on the kernel, on stderr (stdout is the normalised config):
/// what the agent would find here at start, and a refusal when it could not
/// run at all. Without the right to probe it says so and leaves it there.
fn check_kernel() -> ExitCode {
    let kernel = match Kernel::host().without_from_env() {
        Ok(k) => k,
        Err(e) => {
            eprintln!("routebackup: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(why) = kernel.not_probed() {
        eprintln!("routebackup: the kernel was not checked: {why}");
        return ExitCode::SUCCESS;
    }
    eprintln!("routebackup: {}", kernel.start_line());
    match kernel.check_essential() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("routebackup: {e}");
            ExitCode::FAILURE
        }
    }
}

fn kernel(json: bool, without: &[String]) -> ExitCode {
    let kernel = match probed_kernel(without) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("routebackup: {e}");
            return ExitCode::FAILURE;
        }
    };
    if json {
        if let Err(code) = print_json(&kernel) {
            return code;
        }
    } else {
        print!("{}", kernel.table());
    }
    // Nothing probed (no right to load programs) answers nothing either way.
    if kernel.not_probed().is_none() && kernel.check_essential().is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn run(
    config_path: &Path,
    log_level: &str,
    keep_fastpath: bool,
    dry_run: bool,
    kernel_without: &[String],
) -> ExitCode {
    // RUST_LOG wins, as everywhere in Rust; both take syslog's level names.
    let (source, spec) = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => ("RUST_LOG", v),
        _ => ("--log-level", log_level.to_string()),
    };
    let filter = match routebackup::logging::filter(&spec) {
        Ok(f) => f,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "routebackup: bad {source} {e}");
            return ExitCode::FAILURE;
        }
    };
    routebackup::logging::init(filter);
    let mut config = match Config::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{}", Report(&e));
            return ExitCode::FAILURE;
        }
    };
    if dry_run {
        // Beside a live agent: its own socket, no hooks, no metrics port.
        config.agent.control_socket = dry_run_socket(&config.agent.control_socket);
        config.agent.on_change.clear();
        for g in config.groups.values_mut() {
            g.on_change = None;
        }
        config.metrics = None;
    }
    // Held until the agent exits (the kernel releases it however it exits).
    let pin_path = (!dry_run).then_some(config.agent.pin_path.as_path());
    let _locks = match AgentLocks::acquire(&config.agent.control_socket, pin_path) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("{}", Report(&e));
            return ExitCode::FAILURE;
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let kernel = if dry_run {
        None
    } else {
        let kernel = match probed_kernel(kernel_without) {
            Ok(k) => k,
            Err(e) => {
                tracing::error!("{e}");
                return ExitCode::FAILURE;
            }
        };
        tracing::info!("{}", kernel.start_line());
        if let Err(e) = kernel.check_essential() {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
        Some(kernel)
    };
    let sink_config = config.clone();
    // --dry-run touches no fast path: it neither probes nor refuses a kernel.
    let kernel = kernel.unwrap_or_else(Kernel::full);
    let mode = if dry_run {
        Mode::DryRun
    } else {
        Mode::Live {
            keep: keep_fastpath,
        }
    };
    let result = rt.block_on(daemon::run(
        config,
        config_path.to_path_buf(),
        kernel,
        move |kernel| {
            if mode == Mode::DryRun {
                tracing::warn!(
                    "--dry-run: nothing is steered and no link is touched; actions are only logged"
                );
            }
            Ok(Box::new(Dataplane::open(&sink_config, mode, kernel)?) as Box<dyn ActionSink>)
        },
    ));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The whole chain: what failed, then what the kernel or OS said.
            tracing::error!("{}", Report(&e));
            ExitCode::FAILURE
        }
    }
}

fn status(
    json: bool,
    prometheus: bool,
    socket: Option<PathBuf>,
    config: Option<PathBuf>,
) -> ExitCode {
    let socket = match control_socket(socket, config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    if prometheus {
        return match control::request_metrics(&socket) {
            Ok(text) => {
                println!("{}", text.trim_end());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("routebackup: {}", Report(&e));
                ExitCode::FAILURE
            }
        };
    }
    match control::request_status(&socket) {
        Ok(report) => {
            if json {
                if let Err(code) = print_json(&report) {
                    return code;
                }
            } else {
                print!("{}", report.render());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("routebackup: {}", Report(&e));
            ExitCode::FAILURE
        }
    }
}
