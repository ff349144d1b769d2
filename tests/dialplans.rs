//! Every dialplan in `dialplans/` is loaded and routed through its
//! `*.cases.toml` table, and the `causeway dialplan` commands are run on good
//! and broken files (exit codes, messages with line and column).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use causeway::dialplan::{LoadContext, cases, load};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Trunks the shipped examples may name.
fn context() -> LoadContext {
    LoadContext {
        trunks: vec!["carrier".into()],
        policy_url: false,
    }
}

fn plan_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_str().unwrap().to_string();
        if p.is_dir() {
            plan_files(&p, out);
        } else if name.ends_with(".toml") && !name.ends_with(".cases.toml") {
            out.push(p);
        }
    }
}

#[test]
fn every_shipped_dialplan_passes_its_cases() {
    let mut files = vec![];
    plan_files(&common::root().join("dialplans"), &mut files);
    files.sort();
    assert!(files.len() >= 2, "{files:?}");
    for f in files {
        let plan = load::load_path(&f, &context()).unwrap_or_else(|e| {
            panic!(
                "{}",
                e.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        });
        assert!(!plan.is_empty(), "{}", f.display());
        let cases_path = f.with_extension("cases.toml");
        let src = std::fs::read_to_string(&cases_path)
            .unwrap_or_else(|_| panic!("{} has no {}", f.display(), cases_path.display()));
        let results = cases::run(&plan, &src, &cases_path.display().to_string()).unwrap();
        assert!(
            results.len() >= 3,
            "{}: too few cases",
            cases_path.display()
        );
        for r in &results {
            assert!(
                r.passed(),
                "{}:{} {}: {:?}",
                cases_path.display(),
                r.line,
                r.name,
                r.failures
            );
        }
    }
}

#[test]
fn the_embedded_default_is_the_shipped_file() {
    let shipped = std::fs::read_to_string(common::root().join("dialplans/default.toml")).unwrap();
    assert_eq!(shipped, causeway::dialplan::DEFAULT_PLAN);
}

fn causeway(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_causeway"))
        .args(args)
        .current_dir(common::root())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn cli_check_reports_errors_with_line_and_column() {
    let (code, out, _) = causeway(&["dialplan", "check", "dialplans/default.toml"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("dialplans/default.toml: ok, 2 rule(s)"),
        "{out}"
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = common::write(
        dir.path(),
        "bad.toml",
        "[[rule]]\nname = \"all\"\npriority = 1\ntarget = { type = \"echo\" }\n\n\
         [[rule]]\nname = \"never\"\npriority = 2\nmatch.to = '[a-'\ntarget = { type = \"echo\" }\n",
    );
    let (code, _, err) = causeway(&["dialplan", "check", bad.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("bad.toml:9:12: rule `never`: bad regex \"[a-\""),
        "{err}"
    );
    assert!(
        err.contains("bad.toml:7:8: rule `never`: unreachable: rule `all`"),
        "{err}"
    );
    assert!(err.contains("2 error(s)"), "{err}");

    // A trunk needs the gateway config that defines it.
    let office = "dialplans/examples/office.toml";
    let (code, _, err) = causeway(&["dialplan", "check", office]);
    assert_eq!(code, 2);
    assert!(
        err.contains("office.toml:53:10: rule `outside-line`: unknown trunk \"carrier\""),
        "{err}"
    );
    let cfg = common::write(
        dir.path(),
        "gw.toml",
        "[[trunks]]\nname = \"carrier\"\nuri = \"sip:carrier.example\"\n",
    );
    let (code, out, err) = causeway(&["dialplan", "check", "-c", cfg.to_str().unwrap(), office]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ok, 9 rule(s)"), "{out}");

    let (code, _, err) = causeway(&["dialplan", "check", "/nonexistent/plan.toml"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("/nonexistent/plan.toml:0:0: cannot read"),
        "{err}"
    );
}

#[test]
fn cli_route_explains_the_verdict() {
    let (code, out, _) = causeway(&[
        "dialplan",
        "route",
        "dialplans/default.toml",
        "--to",
        "echo",
        "--protocol",
        "webrtc",
    ]);
    assert_eq!(code, 0);
    assert!(
        out.contains("rule     echo (priority 10, dialplans/default.toml:"),
        "{out}"
    );
    assert!(out.contains("target   echo"), "{out}");

    let dir = tempfile::tempdir().unwrap();
    let plan = common::write(
        dir.path(),
        "p.toml",
        "[[rule]]\nname = \"lan\"\npriority = 1\nmatch.to = '9(\\d+)'\nmatch.source_net = [\"10.0.0.0/8\"]\n\
         transform.to = { with = '+1${1}' }\ntarget = { type = \"sip\", uri = \"sip:gw.example\" }\n",
    );
    let p = plan.to_str().unwrap();
    let (code, out, _) = causeway(&[
        "dialplan",
        "route",
        p,
        "--to",
        "9555",
        "--source-ip",
        "10.1.1.1",
    ]);
    assert_eq!(code, 0);
    assert!(out.contains("to       9555 -> +1555"), "{out}");
    assert!(out.contains("target   sip sip:gw.example"), "{out}");

    let (code, out, _) = causeway(&[
        "dialplan",
        "route",
        p,
        "--to",
        "9555",
        "--source-ip",
        "192.0.2.1",
    ]);
    assert_eq!(code, 1);
    assert!(out.contains("no rule matched: the call gets 404"), "{out}");
    assert!(
        out.contains("lan (") && out.contains("the source address is not in match.source_net"),
        "{out}"
    );
    let (code, _, err) = causeway(&["dialplan", "route", p, "--to", "x", "--protocol", "xmpp"]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn cli_test_runs_case_tables() {
    let (code, out, _) = causeway(&[
        "dialplan",
        "test",
        "dialplans/default.toml",
        "dialplans/default.cases.toml",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("5 passed, 0 failed"), "{out}");

    let dir = tempfile::tempdir().unwrap();
    let cases = common::write(
        dir.path(),
        "c.toml",
        "[[case]]\nto = \"echo\"\nexpect = { rule = \"echo\" }\n\n\
         [[case]]\nname = \"wrong on purpose\"\nto = \"bob\"\nexpect = { target = \"echo\" }\n",
    );
    let (code, out, _) = causeway(&[
        "dialplan",
        "test",
        "dialplans/default.toml",
        cases.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAIL  wrong on purpose"), "{out}");
    assert!(
        out.contains("target: expected \"echo\", got \"fallback\""),
        "{out}"
    );
    assert!(out.contains("1 passed, 1 failed"), "{out}");

    let broken = common::write(
        dir.path(),
        "b.toml",
        "[[case]]\nto = \"x\"\nexpect = { colour = \"red\" }\n",
    );
    let (code, _, err) = causeway(&[
        "dialplan",
        "test",
        "dialplans/default.toml",
        broken.to_str().unwrap(),
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("b.toml:3:12: unknown field `colour`"), "{err}");
}
