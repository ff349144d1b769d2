use super::*;
use crate::dialplan::cases::DEFAULT_AT;

fn plan(src: &str) -> Dialplan {
    plan_ctx(src, &LoadContext::default())
}

fn plan_ctx(src: &str, ctx: &LoadContext) -> Dialplan {
    load::from_sources(&[("t.toml".into(), src.into())], ctx).unwrap_or_else(|e| panic!("{}", e[0]))
}

fn errors(src: &str) -> Vec<DialplanError> {
    load::from_sources(&[("t.toml".into(), src.into())], &LoadContext::default()).unwrap_err()
}

fn call(to: &str) -> CallInfo {
    CallInfo {
        to: to.into(),
        from: "alice".into(),
        protocol: Protocol::Sip,
        source_ip: Some("192.0.2.10".parse().unwrap()),
        transport: Some(Transport::Udp),
        registered: false,
        at: DEFAULT_AT,
    }
}

fn routed(p: &Dialplan, c: &CallInfo) -> Route {
    match p.route(c) {
        Verdict::Route(r) => *r,
        Verdict::NoMatch => panic!("no match for {c:?}"),
    }
}

#[test]
fn embedded_default_routes_echo_and_everything_else() {
    let p = Dialplan::embedded_default().unwrap();
    assert_eq!(routed(&p, &call("echo")).target, Target::Echo);
    let r = routed(&p, &call("bob"));
    assert_eq!(r.rule, "local");
    let Target::Fallback { targets } = &r.target else {
        panic!("{:?}", r.target)
    };
    assert_eq!(targets[0], Target::Registered);
    assert_eq!(targets[1].rejection(), Some((404, "Not Found".into())));
}

#[test]
fn first_match_by_priority_not_file_order() {
    let p = plan(
        r#"
        [[rule]]
        name = "late"
        priority = 20
        match.to = '\d+'
        target = { type = "reject", status = 486 }
        [[rule]]
        name = "early"
        priority = 5
        match.to = '12.*'
        target = { type = "echo" }
        "#,
    );
    assert_eq!(routed(&p, &call("1234")).rule, "early");
    assert_eq!(routed(&p, &call("999")).rule, "late");
    assert_eq!(
        routed(&p, &call("999")).target.rejection(),
        Some((486, "Busy Here".into()))
    );
    assert_eq!(p.route(&call("abc")), Verdict::NoMatch);
    assert_eq!(p.summary()[0].name, "early");
}

#[test]
fn conditions_all_must_hold() {
    let p = plan(
        r#"
        [[rule]]
        name = "office"
        priority = 1
        match.from = 'a.*'
        match.protocol = ["sip", "webrtc"]
        match.source_net = ["192.0.2.0/24", "2001:db8::1"]
        match.transport = ["udp"]
        match.registered = true
        target = { type = "echo" }
        "#,
    );
    let mut c = call("x");
    assert_eq!(p.route(&c), Verdict::NoMatch, "not registered");
    c.registered = true;
    assert_eq!(routed(&p, &c).rule, "office");
    for change in [
        |c: &mut CallInfo| c.from = "bob".into(),
        |c: &mut CallInfo| c.protocol = Protocol::H323,
        |c: &mut CallInfo| c.source_ip = Some("198.51.100.1".parse().unwrap()),
        |c: &mut CallInfo| c.source_ip = None,
        |c: &mut CallInfo| c.transport = Some(Transport::Tcp),
    ] {
        let mut d = c.clone();
        change(&mut d);
        assert_eq!(p.route(&d), Verdict::NoMatch, "{d:?}");
    }
    c.source_ip = Some("2001:db8::1".parse().unwrap());
    assert_eq!(routed(&p, &c).rule, "office");
}

#[test]
fn transforms_rewrite_with_captures_prefixes_and_domains() {
    let p = plan(
        r#"
        [[rule]]
        name = "outside-line"
        priority = 1
        match.to = '9(\d+)'
        transform.to = { with = '+44$1', domain = "carrier.example" }
        transform.from = { add_prefix = "+1", strip_domain = true }
        target = { type = "sip", uri = "sip:gw.example.com;transport=tcp" }
        [[rule]]
        name = "dots"
        priority = 2
        match.to = '.*@old\.example'
        transform.to = { replace = 'old\.example$', with = 'new.example', strip_prefix = "meet." }
        target = { type = "registered" }
        "#,
    );
    let mut c = call("90201");
    c.from = "555@somewhere".into();
    let r = routed(&p, &c);
    assert_eq!(r.to, "+440201@carrier.example");
    assert_eq!(r.from, "+1555");
    let r = routed(&p, &call("meet.bob@old.example"));
    assert_eq!(r.to, "bob@new.example");
}

#[test]
fn time_windows_in_their_zone() {
    let p = plan(
        r#"
        timezone = "Europe/Paris"
        [[rule]]
        name = "office-hours"
        priority = 1
        match.days = ["weekdays"]
        match.time = "08:00-18:00"
        target = { type = "registered" }
        [[rule]]
        name = "night-shift"
        priority = 2
        match.time = "22:00-06:00"
        match.timezone = "UTC"
        target = { type = "echo" }
        "#,
    );
    let at = |s: &str| s.parse::<jiff::Timestamp>().unwrap().as_second();
    let mut c = call("x");
    // Monday 07:30 UTC is 08:30 in Paris (winter): open.
    c.at = at("2026-01-05T07:30:00Z");
    assert_eq!(routed(&p, &c).rule, "office-hours");
    // 06:59 UTC is 07:59 Paris: closed, and not night in UTC either.
    c.at = at("2026-01-05T06:59:00Z");
    assert_eq!(p.route(&c), Verdict::NoMatch);
    // Saturday noon: closed.
    c.at = at("2026-01-10T12:00:00Z");
    assert_eq!(p.route(&c), Verdict::NoMatch);
    // Summer time: 16:30 UTC is 18:30 in Paris: closed.
    c.at = at("2026-07-06T16:30:00Z");
    assert_eq!(p.route(&c), Verdict::NoMatch);
    // Past midnight UTC: the wrapping window.
    c.at = at("2026-01-06T01:00:00Z");
    assert_eq!(routed(&p, &c).rule, "night-shift");
}

#[test]
fn policy_continue_resumes_after_the_rule() {
    let ctx = LoadContext {
        trunks: vec!["carrier".into()],
        policy_url: true,
    };
    let p = plan_ctx(
        r#"
        [[rule]]
        name = "ask"
        priority = 1
        target = { type = "policy", on_failure = "continue" }
        [[rule]]
        name = "trunk"
        priority = 2
        target = { type = "sip", trunk = "carrier" }
        "#,
        &ctx,
    );
    let r = routed(&p, &call("x"));
    assert_eq!(r.rule, "ask");
    let Verdict::Route(next) = p.route_from(&call("x"), r.next_rule.unwrap()) else {
        panic!()
    };
    assert_eq!(next.rule, "trunk");
}

#[test]
fn ephemeral_aliases_win_while_valid() {
    let p = Dialplan::embedded_default().unwrap();
    let mut t = AliasTable::default();
    t.insert(EphemeralAlias {
        alias: "meet-42".into(),
        target: Target::Echo,
        valid_from: Some(DEFAULT_AT - 10),
        valid_until: DEFAULT_AT + 60,
        pin: Some("1234".into()),
        created_at: DEFAULT_AT - 100,
    });
    let mut c = call("meet-42");
    let Verdict::Route(r) = route(&p, &t, &c) else {
        panic!()
    };
    assert_eq!((r.target, r.pin.as_deref()), (Target::Echo, Some("1234")));
    for at in [DEFAULT_AT - 11, DEFAULT_AT + 60] {
        c.at = at;
        let Verdict::Route(r) = route(&p, &t, &c) else {
            panic!()
        };
        assert_eq!(r.rule, "local", "at {at}: the plan, not the alias");
    }
}

#[test]
fn errors_carry_file_line_column_and_rule() {
    let e = errors(
        "[[rule]]\nname = \"r1\"\npriority = 1\nmatch.to = '(unclosed'\ntarget = { type = \"echo\" }\n",
    );
    assert_eq!(e.len(), 1);
    assert_eq!((e[0].line, e[0].column), (4, 12));
    assert_eq!(e[0].rule.as_deref(), Some("r1"));
    assert!(e[0].message.contains("bad regex"), "{}", e[0]);
    assert!(
        e[0].to_string()
            .starts_with("t.toml:4:12: rule `r1`: bad regex")
    );

    let e = errors("[[rule]]\nname = \"r1\"\npriority = 1\ntarget = { type = \"voicemail\" }\n");
    assert_eq!(e[0].line, 4);
    assert!(
        e[0].message.contains("unknown variant `voicemail`"),
        "{}",
        e[0]
    );

    let e = errors(
        "[[rule]]\nname = \"r1\"\npriority = 1\nmatch.tooo = 'x'\ntarget = { type = \"echo\" }\n",
    );
    assert!(e[0].message.contains("unknown field `tooo`"), "{}", e[0]);
}

#[test]
fn semantic_errors_are_all_reported() {
    let src = r#"
[[rule]]
name = "catch-all"
priority = 10
target = { type = "echo" }

[[rule]]
name = "shadowed"
priority = 20
match.to = 'x'
target = { type = "echo" }

[[rule]]
name = "twin"
priority = 10
match.to = 'y'
target = { type = "sip", trunk = "nope" }

[[rule]]
name = "bad-bits"
priority = 5
match.source_net = ["10.0.0.0/33"]
match.days = ["funday"]
match.time = "25:00-26:00"
match.timezone = "Mars/Olympus"
media.codecs = ["speex"]
target = { type = "reject", status = 200 }
"#;
    let e = errors(src);
    let text: Vec<String> = e.iter().map(ToString::to_string).collect();
    let has = |needle: &str| {
        assert!(
            text.iter().any(|t| t.contains(needle)),
            "{needle:?} not in {text:#?}"
        )
    };
    has("rule `shadowed`: unreachable: rule `catch-all`");
    has("rule `twin`: unknown trunk \"nope\"");
    has("rule `twin`: duplicate priority 10");
    has("bad network \"10.0.0.0/33\"");
    has("unknown day \"funday\"");
    has("bad time window \"25:00-26:00\"");
    has("unknown time zone \"Mars/Olympus\"");
    has("unknown codec \"speex\"");
    has("reject status 200 is not 400-699");
    // The shadowed rule is located at its name.
    let shadowed = e
        .iter()
        .find(|e| e.rule.as_deref() == Some("shadowed"))
        .unwrap();
    assert_eq!((shadowed.line, shadowed.column), (8, 8));
}

#[test]
fn policy_needs_a_url_and_fallback_stays_flat() {
    let e = errors("[[rule]]\nname = \"p\"\npriority = 1\ntarget = { type = \"policy\" }\n");
    assert!(e[0].message.contains("no [policy] url"), "{}", e[0]);
    let e = errors(
        "[[rule]]\nname = \"f\"\npriority = 1\ntarget = { type = \"fallback\", targets = [{ type = \"fallback\", targets = [] }] }\n",
    );
    assert!(
        e[0].message.contains("cannot appear inside a fallback"),
        "{}",
        e[0]
    );
}

#[test]
fn a_catch_all_policy_that_continues_does_not_shadow() {
    let ctx = LoadContext {
        trunks: vec![],
        policy_url: true,
    };
    let src = "[[rule]]\nname = \"p\"\npriority = 1\ntarget = { type = \"policy\", on_failure = \"continue\" }\n\
               [[rule]]\nname = \"q\"\npriority = 2\ntarget = { type = \"echo\" }\n";
    assert_eq!(plan_ctx(src, &ctx).len(), 2);
}

#[test]
fn rules_from_several_files_merge_and_clash() {
    let a = (
        "a.toml".to_string(),
        "[[rule]]\nname = \"a\"\npriority = 1\nmatch.to = 'a'\ntarget = { type = \"echo\" }\n"
            .to_string(),
    );
    let b = (
        "b.toml".to_string(),
        "[[rule]]\nname = \"b\"\npriority = 1\nmatch.to = 'b'\ntarget = { type = \"echo\" }\n"
            .to_string(),
    );
    let e = load::from_sources(&[a.clone(), b], &LoadContext::default()).unwrap_err();
    assert_eq!(e[0].file, "b.toml");
    assert!(
        e[0].message.contains("also rule `a` at a.toml:2"),
        "{}",
        e[0]
    );
    let c = (
        "c.toml".to_string(),
        "[[rule]]\nname = \"c\"\npriority = 0\nmatch.to = 'a'\ntarget = { type = \"webrtc\" }\n"
            .to_string(),
    );
    let p = load::from_sources(&[a, c], &LoadContext::default()).unwrap();
    assert_eq!(routed(&p, &call("a")).rule, "c");
    assert_eq!(p.sources(), ["a.toml", "c.toml"]);
}

#[test]
fn an_empty_plan_matches_nothing() {
    let p = plan("");
    assert!(p.is_empty());
    assert_eq!(p.route(&call("x")), Verdict::NoMatch);
}

fn route_to(target: Target) -> Route {
    Route {
        rule: "r".into(),
        origin: "test".into(),
        priority: None,
        to: "alice".into(),
        from: "bob".into(),
        target,
        media: MediaOptions::default(),
        auth: false,
        pin: None,
        next_rule: None,
    }
}

#[test]
fn reach_walks_fallbacks_and_asks_about_registrations_once() {
    let local = route_to(Target::Fallback {
        targets: vec![
            Target::Registered,
            Target::Reject {
                status: 404,
                reason: None,
            },
        ],
    });
    assert!(local.has_registered_target());
    let mut asked = 0;
    let nobody = local.reach(|| {
        asked += 1;
        false
    });
    assert_eq!(nobody, Reach::Reject(404, "Not Found".into()));
    assert_eq!(asked, 1);
    assert_eq!(local.reach(|| true), Reach::Bridge(Target::Registered));

    let echo = route_to(Target::Echo);
    assert!(!echo.has_registered_target());
    assert_eq!(echo.reach(|| panic!("not asked")), Reach::Echo);
    let browsers = route_to(Target::Fallback {
        targets: vec![Target::Webrtc, Target::H323],
    });
    assert_eq!(browsers.reach(|| false), Reach::Nobody);
    let trunk = route_to(Target::Sip {
        uri: None,
        trunk: Some("carrier".into()),
    });
    assert!(matches!(
        trunk.reach(|| false),
        Reach::Bridge(Target::Sip { .. })
    ));
}
