//! Routing decision cost for a 1,000-rule dialplan (criterion).
//!
//! `cargo bench --bench dialplan`. The plan mixes what real plans hold:
//! meeting-room aliases with a domain, dial prefixes with captures and
//! rewrites, rules limited to source networks, protocols, registered callers
//! and office hours. Calls hit the first rule, one in the middle, the last,
//! and none (the worst case: every rule considered).

use causeway::dialplan::{CallInfo, Dialplan, LoadContext, Protocol, Verdict, load};
use criterion::{Criterion, criterion_group, criterion_main};
use std::fmt::Write;
use std::hint::black_box;

fn plan(rules: usize) -> Dialplan {
    let mut src = String::from("timezone = \"Europe/London\"\n");
    for i in 0..rules {
        let _ = write!(src, "[[rule]]\nname = \"r{i}\"\npriority = {i}\n");
        match i % 4 {
            0 => {
                let _ = writeln!(src, "match.to = 'room{i}(\\.[a-z]+)?@example\\.com'");
                let _ = writeln!(src, "target = {{ type = \"registered\" }}");
            }
            1 => {
                let _ = writeln!(src, "match.to = '9{i:04}(\\d{{6}})'");
                let _ = writeln!(src, "transform.to = {{ with = '+44{i}${{1}}' }}");
                let _ = writeln!(src, "match.registered = true");
                let _ = writeln!(
                    src,
                    "target = {{ type = \"sip\", uri = \"sip:gw.example.com\" }}"
                );
            }
            2 => {
                let _ = writeln!(src, "match.to = 'ext{i}'");
                let _ = writeln!(
                    src,
                    "match.source_net = [\"10.{}.0.0/16\", \"192.168.0.0/24\"]",
                    i % 256
                );
                let _ = writeln!(src, "match.protocol = [\"sip\", \"webrtc\"]");
                let _ = writeln!(src, "target = {{ type = \"echo\" }}");
            }
            _ => {
                let _ = writeln!(src, "match.to = 'desk{i}|reception{i}'");
                let _ = writeln!(src, "match.days = [\"weekdays\"]");
                let _ = writeln!(src, "match.time = \"08:00-18:00\"");
                let _ = writeln!(src, "target = {{ type = \"reject\", status = 480 }}");
            }
        }
    }
    load::from_sources(&[("bench.toml".into(), src)], &LoadContext::default())
        .unwrap_or_else(|e| panic!("{}", e[0]))
}

fn call(to: &str) -> CallInfo {
    CallInfo {
        to: to.into(),
        from: "alice".into(),
        protocol: Protocol::Sip,
        source_ip: Some(
            "10.2.3.4"
                .parse()
                .unwrap_or(std::net::Ipv4Addr::LOCALHOST.into()),
        ),
        transport: None,
        registered: true,
        at: 1_767_614_400, // Monday 12:00 UTC
    }
}

fn bench(c: &mut Criterion) {
    let p = plan(1000);
    assert_eq!(p.len(), 1000);
    let cases = [
        ("first", "room0.blue@example.com", Some("r0")),
        ("middle", "90501123456", Some("r501")),
        ("last", "desk999", Some("r999")),
        ("none", "nobody@nowhere.example", None),
    ];
    for (name, to, want) in cases {
        let c_info = call(to);
        match (p.route(&c_info), want) {
            (Verdict::Route(r), Some(w)) => assert_eq!(r.rule, w),
            (Verdict::NoMatch, None) => {}
            (v, w) => panic!("{name}: {v:?}, wanted {w:?}"),
        }
        c.bench_function(&format!("route_1000_rules_{name}"), |b| {
            b.iter(|| p.route(black_box(&c_info)))
        });
    }
}

/// Distinct aliases across the whole plan, so the automaton meets new input
/// all the time (a warm cache on one alias would flatter it).
fn bench_mixed(c: &mut Criterion) {
    let p = plan(1000);
    let calls: Vec<CallInfo> = (0..4096)
        .map(|n| {
            let i = (n * 7) % 1000;
            let to = match i % 4 {
                0 => format!("room{i}.{}@example.com", ["blue", "red", "green"][n % 3]),
                1 => format!("9{i:04}{:06}", n * 13 % 1_000_000),
                2 => format!("ext{i}"),
                _ if n % 5 == 0 => format!("unknown{n}@elsewhere.example"),
                _ => format!("desk{i}"),
            };
            call(&to)
        })
        .collect();
    let mut k = 0;
    c.bench_function("route_1000_rules_mixed_4096_aliases", |b| {
        b.iter(|| {
            k = (k + 1) % calls.len();
            p.route(black_box(&calls[k]))
        })
    });
}

criterion_group!(benches, bench, bench_mixed);
criterion_main!(benches);
