//! The `causeway` command: run the gateway, or check a config file.

#![forbid(unsafe_code)]

use causeway::config::Config;
use causeway::runtime;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

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
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let source = runtime::describe(path.as_deref());
    let result = rt.block_on(runtime::run(
        cfg,
        |l| {
            println!("causeway {} running ({source})", env!("CARGO_PKG_VERSION"));
            for (t, a) in &l.sip {
                println!("  SIP {:<4} {a}", t.as_str());
            }
            println!(
                "  HTTP     http://{}/ (admin API under /api/admin/v1)",
                l.http
            );
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
