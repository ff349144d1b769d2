//! `cargo xtask`: the project's two front doors and its chores.
//!
//! - `cargo xtask run [ARGS...]`: install missing system packages, build the
//!   gateway in release, start it (ARGS go to `causeway run`).
//! - `cargo xtask test`: install system and test packages, then fmt, clippy,
//!   docs, and every unit, integration and interop test.
//! - `cargo xtask fuzz [SECONDS] [TARGET...]`: run each (or the named) fuzz target for a bounded time.
//! - `cargo xtask bench-register`: the REGISTER benchmark (`bench/register.sh`).
//!
//! Only std: this must build in seconds on a fresh machine. It must not hold
//! gateway logic; it only orchestrates cargo and the system package manager.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// Debian packages the gateway needs to build and run.
const RUN_PACKAGES: &[&str] = &["pkg-config", "gcc", "ca-certificates", "libopus-dev"];
/// Debian packages the test suite needs on top: the real peers we test against.
const TEST_PACKAGES: &[&str] = &["sip-tester", "baresip", "tshark", "procps", "openssl"];

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let (cmd, rest) = match args.split_first() {
        Some((c, r)) => (c.as_str(), r),
        None => ("help", &[][..]),
    };
    let result = match cmd {
        "run" => run(rest),
        "test" => test(),
        "fuzz" => fuzz(rest),
        "bench-register" => bench_register(rest),
        "deps" => ensure_packages(&[RUN_PACKAGES, TEST_PACKAGES].concat()),
        _ => {
            eprintln!(
                "usage: cargo xtask <run [ARGS...] | test | fuzz [SECONDS] [TARGET...] | bench-register | deps>"
            );
            return if cmd == "help" {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            };
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

type Result<T = ()> = std::result::Result<T, String>;

fn root() -> PathBuf {
    // xtask lives in <root>/xtask; CARGO_MANIFEST_DIR is set by cargo at build time.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn cargo() -> Command {
    let mut c = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

fn status(mut cmd: Command, what: &str) -> Result {
    eprintln!("xtask: {what}");
    let st = cmd
        .status()
        .map_err(|e| format!("{what}: cannot start: {e}"))?;
    if st.success() {
        Ok(())
    } else {
        Err(format!("{what}: failed ({st})"))
    }
}

fn have(bin: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {bin} >/dev/null 2>&1")])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn missing_packages(pkgs: &[&str]) -> Vec<String> {
    pkgs.iter()
        .filter(|p| {
            let out = Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output();
            !matches!(out, Ok(o) if String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .map(|p| p.to_string())
        .collect()
}

/// Installs what is missing with apt-get; elsewhere prints the list and stops.
fn ensure_packages(pkgs: &[&str]) -> Result {
    if !have("dpkg-query") || !have("apt-get") {
        return Err(format!(
            "not a Debian/Ubuntu system: install these packages (Debian names) and retry: {}",
            pkgs.join(" ")
        ));
    }
    let missing = missing_packages(pkgs);
    if missing.is_empty() {
        return Ok(());
    }
    let sudo = if is_root() { None } else { Some("sudo") };
    let apt = |args: &[&str]| {
        let mut c = match sudo {
            Some(s) => {
                let mut c = Command::new(s);
                c.arg("apt-get");
                c
            }
            None => Command::new("apt-get"),
        };
        c.env("DEBIAN_FRONTEND", "noninteractive").args(args);
        c
    };
    status(apt(&["update", "-qq"]), "apt-get update")?;
    let mut install = apt(&["install", "-y", "-qq", "--no-install-recommends"]);
    install.args(&missing);
    status(install, &format!("apt-get install {}", missing.join(" ")))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn run(args: &[String]) -> Result {
    ensure_packages(RUN_PACKAGES)?;
    let mut build = cargo();
    build.args([
        "build",
        "--release",
        "--package",
        "causeway",
        "--bin",
        "causeway",
    ]);
    status(build, "cargo build --release")?;
    let mut gw = Command::new(root().join("target/release/causeway"));
    gw.arg("run").args(args).current_dir(root());
    status(gw, "causeway run")
}

fn test() -> Result {
    ensure_packages(&[RUN_PACKAGES, TEST_PACKAGES].concat())?;
    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--check"]);
    status(fmt, "cargo fmt --check")?;
    let mut clippy = cargo();
    clippy.args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);
    status(clippy, "cargo clippy -D warnings")?;
    let mut doc = cargo();
    doc.args(["doc", "--workspace", "--no-deps"])
        .env("RUSTDOCFLAGS", "-D warnings");
    status(doc, "cargo doc")?;
    if nextest_available() {
        let mut t = cargo();
        t.args(["nextest", "run", "--workspace", "--no-fail-fast"]);
        status(t, "cargo nextest run")?;
        let mut d = cargo();
        d.args(["test", "--workspace", "--doc"]);
        status(d, "cargo test --doc")
    } else {
        let mut t = cargo();
        t.args(["test", "--workspace", "--no-fail-fast"]);
        status(t, "cargo test")
    }
}

fn nextest_available() -> bool {
    cargo()
        .args(["nextest", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn fuzz(args: &[String]) -> Result {
    let secs = args.first().map(String::as_str).unwrap_or("60");
    if !cargo()
        .args(["fuzz", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
    {
        let mut inst = cargo();
        inst.args(["install", "--locked", "cargo-fuzz"]);
        status(inst, "cargo install cargo-fuzz")?;
    }
    let list = cargo()
        .args(["+nightly", "fuzz", "list"])
        .current_dir(root())
        .output()
        .ok()
        .filter(|o| o.status.success());
    // cargo-fuzz needs nightly for sanitizers; fall back to stable with -s none.
    let (toolchain, sanitizer): (Option<&str>, &str) = if list.is_some() {
        (Some("+nightly"), "address")
    } else {
        (None, "none")
    };
    // `cargo xtask fuzz SECS [TARGET...]`: all targets unless some are named.
    let named = args.get(1..).unwrap_or_default();
    let targets = fuzz_targets()?
        .into_iter()
        .filter(|t| named.is_empty() || named.contains(t));
    for t in targets {
        seed_corpus(&t)?;
        let mut c = cargo();
        if let Some(tc) = toolchain {
            c.arg(tc);
        }
        c.args([
            "fuzz",
            "run",
            "-s",
            sanitizer,
            &t,
            "--",
            &format!("-max_total_time={secs}"),
        ]);
        status(c, &format!("fuzz {t} for {secs}s"))?;
    }
    Ok(())
}

/// Seeds `fuzz/corpus/<target>` with real inputs (SIP fixtures, the
/// shipped dialplans for `dialplan_*`, or the packets in `fuzz/seeds/<target>`
/// for the media targets): they make the fuzzer reach deep states quickly.
fn seed_corpus(target: &str) -> Result {
    let dest = root().join("fuzz/corpus").join(target);
    std::fs::create_dir_all(&dest).map_err(|e| format!("{}: {e}", dest.display()))?;
    let seeds = format!("fuzz/seeds/{target}");
    let (dirs, ext): (&[&str], &str) = if target.starts_with("dialplan") {
        (&["dialplans", "dialplans/examples"], "toml")
    } else if target.starts_with("sip") {
        (&["fixtures/sip/vendors", "fixtures/sip/rfc4475"], "sip")
    } else {
        (&[seeds.as_str()], "")
    };
    for sub in dirs {
        let dir = root().join(sub);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if ext.is_empty() || p.extension().is_some_and(|x| x == ext) {
                let name = format!(
                    "{}-{}",
                    sub.replace('/', "-"),
                    e.file_name().to_string_lossy()
                );
                std::fs::copy(&p, dest.join(name)).map_err(|e| format!("{}: {e}", p.display()))?;
            }
        }
    }
    Ok(())
}

fn fuzz_targets() -> Result<Vec<String>> {
    let dir = root().join("fuzz/fuzz_targets");
    let mut v: Vec<String> = std::fs::read_dir(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let p = e.path();
            if p.extension()? != "rs" {
                return None;
            }
            Some(p.file_stem()?.to_string_lossy().into_owned())
        })
        .collect();
    v.sort();
    Ok(v)
}

fn bench_register(args: &[String]) -> Result {
    ensure_packages(&[RUN_PACKAGES, TEST_PACKAGES].concat())?;
    let mut build = cargo();
    build.args([
        "build",
        "--release",
        "--package",
        "causeway",
        "--bin",
        "causeway",
    ]);
    status(build, "cargo build --release")?;
    let mut b = Command::new("bash");
    b.arg(root().join("bench/register.sh"))
        .args(args)
        .current_dir(root());
    status(b, "bench/register.sh")
}
