//! The `causeway` command: run the gateway, check a config file, and check,
//! query and test dialplans.

#![forbid(unsafe_code)]

use causeway::config::Config;
use causeway::dialplan::{self, CallInfo, Dialplan, LoadContext, Protocol, Verdict};
use causeway::runtime;
use causeway::sip::Transport;
use clap::{Parser, Subcommand};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// mimalloc rather than glibc's allocator: the signalling path allocates and
/// frees many small buffers, often on different threads, and glibc's malloc
/// and free took about a quarter of the gateway's CPU at 2,000 call setups
/// a second (bench/RESULTS.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "causeway",
    version,
    about = "SIP/H.323-to-WebRTC interop gateway"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start the gateway (the default).
    Run {
        /// Configuration file; embedded defaults when absent.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Configuration commands.
    Config {
        #[command(subcommand)]
        cmd: ConfigCmd,
    },
    /// Dialplan commands: validate, ask where a call goes, run test tables.
    ///
    /// Exit codes: 0 success, 1 no match or a failed case, 2 invalid files.
    Dialplan {
        #[command(subcommand)]
        cmd: DialplanCmd,
    },
}

#[derive(Subcommand)]
enum DialplanCmd {
    /// Validate dialplan files (or directories of them); each is checked on its own.
    Check {
        /// Files or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Gateway config naming the trunks and policy server rules may use.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Show which rule a call would match, the rewritten aliases and the target.
    Route {
        /// Dialplan file or directory.
        path: PathBuf,
        /// Called alias.
        #[arg(long)]
        to: String,
        /// Calling alias.
        #[arg(long, default_value = "")]
        from: String,
        /// sip, h323 or webrtc.
        #[arg(long, default_value = "sip")]
        protocol: Protocol,
        /// Source address of the call.
        #[arg(long)]
        source_ip: Option<IpAddr>,
        /// SIP transport: udp, tcp, tls, ws, wss.
        #[arg(long, value_parser = parse_transport)]
        transport: Option<Transport>,
        /// The caller is a registered or authenticated user.
        #[arg(long)]
        registered: bool,
        /// When the call happens (RFC 3339); now by default.
        #[arg(long)]
        at: Option<String>,
        /// Gateway config naming the trunks and policy server rules may use.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Run a table of expected routes (`[[case]]` entries) against a dialplan.
    Test {
        /// Dialplan file or directory.
        path: PathBuf,
        /// The cases file.
        cases: PathBuf,
        /// Gateway config naming the trunks and policy server rules may use.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

fn parse_transport(s: &str) -> Result<Transport, String> {
    Transport::parse(s).ok_or_else(|| format!("unknown transport {s:?}"))
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Validate a configuration file without starting.
    Check {
        /// The file; the embedded defaults when absent.
        path: Option<PathBuf>,
    },
}

fn load(path: Option<&PathBuf>) -> Result<Config, causeway::config::ConfigError> {
    match path {
        Some(p) => Config::load(p),
        None => Config::parse("", "<embedded defaults>"),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd.unwrap_or(Cmd::Run { config: None }) {
        Cmd::Config {
            cmd: ConfigCmd::Check { path },
        } => match load(path.as_ref()) {
            Ok(_) => {
                println!("{}: ok", runtime::describe(path.as_deref()));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Cmd::Dialplan { cmd } => dialplan_cmd(cmd),
        Cmd::Run { config } => {
            let cfg = match load(config.as_ref()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            run(cfg, config)
        }
    }
}

/// The dialplan context a gateway config gives, or the exit code after
/// printing why the config is unusable.
fn context(config: Option<&PathBuf>) -> Result<LoadContext, ExitCode> {
    load(config)
        .map(|c| LoadContext::from_config(&c))
        .map_err(|e| {
            eprintln!("{e}");
            ExitCode::from(2)
        })
}

fn load_plan(path: &std::path::Path, ctx: &LoadContext) -> Result<Dialplan, ExitCode> {
    dialplan::load::load_path(path, ctx).map_err(|errors| {
        for e in &errors {
            eprintln!("{e}");
        }
        eprintln!("{}: {} error(s)", path.display(), errors.len());
        ExitCode::from(2)
    })
}

fn dialplan_cmd(cmd: DialplanCmd) -> ExitCode {
    let outcome = match cmd {
        DialplanCmd::Check { paths, config } => context(config.as_ref()).map(|ctx| {
            let mut ok = true;
            for p in &paths {
                match load_plan(p, &ctx) {
                    Ok(plan) => println!("{}: ok, {} rule(s)", p.display(), plan.len()),
                    Err(_) => ok = false,
                }
            }
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            }
        }),
        DialplanCmd::Route {
            path,
            to,
            from,
            protocol,
            source_ip,
            transport,
            registered,
            at,
            config,
        } => context(config.as_ref()).and_then(|ctx| {
            let plan = load_plan(&path, &ctx)?;
            let at = match at {
                Some(t) => dialplan::TimeArg::Text(t).unix().map_err(|e| {
                    eprintln!("--at: {e}");
                    ExitCode::from(2)
                })?,
                None => runtime::wall_i64(),
            };
            let call = CallInfo {
                to,
                from,
                protocol,
                source_ip,
                transport,
                registered,
                at,
            };
            Ok(print_route(&plan, &call))
        }),
        DialplanCmd::Test {
            path,
            cases,
            config,
        } => context(config.as_ref()).and_then(|ctx| {
            let plan = load_plan(&path, &ctx)?;
            let file = cases.display().to_string();
            let src = std::fs::read_to_string(&cases).map_err(|e| {
                eprintln!("{file}: cannot read: {e}");
                ExitCode::from(2)
            })?;
            let results = dialplan::cases::run(&plan, &src, &file).map_err(|e| {
                eprintln!("{e}");
                ExitCode::from(2)
            })?;
            let failed = results.iter().filter(|r| !r.passed()).count();
            for r in &results {
                if r.passed() {
                    println!("ok    {}", r.name);
                } else {
                    println!("FAIL  {} ({file}:{})", r.name, r.line);
                    for f in &r.failures {
                        println!("        {f}");
                    }
                }
            }
            println!("{} passed, {failed} failed", results.len() - failed);
            Ok(if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }),
    };
    outcome.unwrap_or_else(|code| code)
}

fn print_route(plan: &Dialplan, call: &CallInfo) -> ExitCode {
    match plan.route(call) {
        Verdict::Route(r) => {
            println!(
                "rule     {} (priority {}, {})",
                r.rule,
                r.priority.unwrap_or_default(),
                r.origin
            );
            if r.to != call.to {
                println!("to       {} -> {}", call.to, r.to);
            } else {
                println!("to       {}", r.to);
            }
            if r.from != call.from {
                println!("from     {} -> {}", call.from, r.from);
            }
            println!("target   {}", r.target);
            if r.media != dialplan::MediaOptions::default() {
                println!(
                    "media    {}",
                    serde_json::to_string(&r.media).unwrap_or_default()
                );
            }
            ExitCode::SUCCESS
        }
        Verdict::NoMatch => {
            println!("no rule matched: the call gets 404 Not Found");
            for (rule, miss) in plan.explain(call) {
                if let Some(m) = miss {
                    println!("  {} ({}): {m}", rule.name, rule.origin);
                }
            }
            ExitCode::from(1)
        }
    }
}

fn run(cfg: Config, path: Option<PathBuf>) -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&cfg.log.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi)
        .init();
    // Signalling on this thread's own runtime, everything else on the
    // workers (see `runtime::run`).
    let runtimes = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .and_then(|workers| {
            let signalling = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            Ok((workers, signalling))
        });
    let (workers, signalling) = match runtimes {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let source = runtime::describe(path.as_deref());
    let result = signalling.block_on(runtime::run(
        cfg,
        workers.handle().clone(),
        |l| {
            println!("causeway {} running ({source})", env!("CARGO_PKG_VERSION"));
            for (t, a) in &l.sip {
                println!("  SIP {:<4} {a}", t.as_str());
            }
            println!(
                "  HTTP     http://{}/ (web client; client API under /api/client/v1, WHIP under /whip, admin API under /api/admin/v1)",
                l.http
            );
            println!("  WebRTC   UDP {}", l.webrtc);
            println!("  media    UDP ports {}-{}", l.media.0, l.media.1);
            let note = if l.token_generated {
                " (generated, stored in the data dir)"
            } else {
                ""
            };
            println!("  admin token: {}{note}", l.admin_token);
        },
        runtime::shutdown_signal(),
    ));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("causeway: {e}");
            ExitCode::FAILURE
        }
    }
}
