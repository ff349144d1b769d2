//! Dialplan loading: any text either loads into a plan that routes without
//! panicking, or gives located errors (line and column inside the file).
#![no_main]

use causeway::dialplan::{CallInfo, LoadContext, Protocol, load};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    let ctx = LoadContext {
        trunks: vec!["carrier".into()],
        policy_url: true,
    };
    match load::from_sources(&[("f.toml".into(), src.into())], &ctx) {
        Ok(plan) => {
            let tail: String = src.chars().rev().take(24).collect();
            for to in ["echo", "1234", "alice@example.com", "", tail.as_str()] {
                for protocol in [Protocol::Sip, Protocol::Webrtc] {
                    let call = CallInfo {
                        to: to.into(),
                        from: "x".into(),
                        protocol,
                        source_ip: Some(std::net::Ipv4Addr::new(10, 1, 2, 3).into()),
                        transport: None,
                        registered: true,
                        at: i64::from(data.len() as u32) * 7919,
                    };
                    let _ = plan.route(&call);
                    assert_eq!(plan.explain(&call).len(), plan.len());
                }
            }
        }
        Err(errors) => {
            assert!(!errors.is_empty());
            let lines = src.lines().count().max(1) + 1;
            for e in &errors {
                assert!(e.line >= 1 && e.line <= lines, "{e} (file has {lines} lines)");
                let _ = e.to_string();
            }
        }
    }
});
