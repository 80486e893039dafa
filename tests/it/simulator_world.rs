//! The pure simulated world against counts computed by hand from the cache
//! rule (facts doc §1.3): no sockets, no sleeping, a week in milliseconds.

use std::path::Path;
use std::time::Duration;

use cutover_auditor::families::TokenKind;
use cutover_auditor::simulator::scenario::Scenario;
use cutover_auditor::simulator::world::{Presence, World};
use cutover_auditor::time::Timestamp;

const ORIGIN: Timestamp = Timestamp::from_secs(1_780_000_000);
const H: u64 = 3600;
const D: u64 = 86_400;

/// One expectation: increments of `kind` on `instance` in `(from, to]`,
/// offsets in seconds from the scenario start.
struct Want {
    instance: usize,
    kind: TokenKind,
    from: u64,
    to: u64,
    count: u64,
}

fn want(instance: usize, kind: TokenKind, from: u64, to: u64, count: u64) -> Want {
    Want {
        instance,
        kind,
        from,
        to,
        count,
    }
}

/// Runs `scenario` to `until` seconds and checks every expectation against
/// the ground truth, and the ground truth against the page counters.
fn check(scenario: &str, until: u64, wants: &[Want]) -> World {
    let s = Scenario::parse(scenario).expect("valid scenario");
    let mut world = World::new(&s, ORIGIN);
    world.advance(ORIGIN + Duration::from_secs(until));
    let at = |secs: u64| ORIGIN + Duration::from_secs(secs);
    // Offset 0 is inside the first interval: (start - 1 ms, t].
    let lower = |secs: u64| {
        if secs == 0 {
            Timestamp(ORIGIN.0 - 1)
        } else {
            at(secs)
        }
    };
    for w in wants {
        let got = world.increments(w.instance, w.kind, lower(w.from), at(w.to));
        assert_eq!(
            got, w.count,
            "instance {} {} in ({}s, {}s]",
            w.instance, w.kind, w.from, w.to
        );
    }
    world
}

#[test]
fn seven_days_follow_the_cache_rule() {
    let scenario = r#"
        [[instances]]
        version = "1.35.0"
        count = 3

        # Active 1h..1h05m on day 0 and day 7: 1 req/s on every instance,
        # cached 10 s => 30 misses per instance per activity.
        [[clients]]
        kind = "legacy_manual"
        interval = "1s"
        from = "1h"
        every = "7d"
        for = "5m"

        # Every 2 s to the next instance: each instance sees a request every
        # 6 s, so every second one misses the 10 s cache.
        [[clients]]
        kind = "valid"
        interval = "2s"
        targets = "round_robin"

        # Rejected tokens are never cached: every request counts.
        [[clients]]
        kind = "invalid_legacy_auto"
        interval = "30s"
        from = "2d"
        until = "2d 1h"

        [[clients]]
        kind = "stale"
        interval = "1m"
        targets = 2
    "#;
    let week = 7 * D;
    let world = check(
        scenario,
        week,
        &[
            want(0, TokenKind::LegacyManual, 0, week, 30),
            want(1, TokenKind::LegacyManual, 0, week, 30),
            want(2, TokenKind::LegacyManual, H - 1, H + 300, 30),
            want(2, TokenKind::LegacyManual, H + 300, week, 0),
            // Ticks k = 0..=302400 at 2 s, instance k % 3; every second request misses.
            want(0, TokenKind::Valid, 0, week, 50_401),
            want(1, TokenKind::Valid, 0, week, 50_400),
            want(2, TokenKind::Valid, 0, week, 50_400),
            want(0, TokenKind::InvalidLegacyAuto, 0, week, 120),
            want(1, TokenKind::InvalidLegacyAuto, 2 * D, 2 * D + H, 119),
            want(0, TokenKind::LegacyAuto, 0, week, 0),
            // legacy = manual + invalid on every instance.
            want(1, TokenKind::Legacy, 0, week, 30 + 120),
            want(2, TokenKind::Stale, 0, week, 7 * 24 * 60 + 1),
            want(0, TokenKind::Stale, 0, week, 0),
        ],
    );
    // The page counters equal the sum of the ground truth (no reset happened).
    for i in 0..3 {
        let view = world.view(i).expect("instance");
        for (kind, value) in view.counters {
            assert_eq!(
                value,
                world.increments(i, kind, Timestamp(ORIGIN.0 - 1), world.now()),
                "{i} {kind}"
            );
        }
    }
    assert_eq!(
        world.last_increment(TokenKind::LegacyManual, world.now()),
        Some(ORIGIN + Duration::from_secs(H + 290))
    );
}

#[test]
fn kinds_map_to_the_families_of_each_version() {
    let scenario = r#"
        [[instances]]
        version = "1.19.16"
        [[instances]]
        version = "1.28.3"
        [[instances]]
        version = "1.29.5"

        [[clients]]
        kind = "legacy"
        interval = "10s"
        until = "1m"
        [[clients]]
        kind = "legacy_auto"
        interval = "10s"
        until = "1m"
        [[clients]]
        kind = "invalid_legacy_auto"
        interval = "10s"
        until = "1m"
    "#;
    // 6 ticks (0..50 s) per client; on 1.29 the invalid one is rejected but still counts.
    let world = check(
        scenario,
        120,
        &[
            want(0, TokenKind::Legacy, 0, 120, 18),
            want(0, TokenKind::LegacyAuto, 0, 120, 0),
            want(1, TokenKind::Legacy, 0, 120, 18),
            want(2, TokenKind::Legacy, 0, 120, 18),
            want(2, TokenKind::LegacyAuto, 0, 120, 6),
            want(2, TokenKind::InvalidLegacyAuto, 0, 120, 6),
            want(2, TokenKind::LegacyManual, 0, 120, 0),
        ],
    );
    assert_eq!(world.view(1).expect("1.28").counters.len(), 3);
    assert_eq!(world.view(2).expect("1.29").counters.len(), 6);
}

#[test]
fn events_reset_remove_add_and_interrupt() {
    let scenario = r#"
        [[instances]]
        version = "1.33.1"
        count = 2

        [[clients]]
        kind = "valid"
        interval = "10s"

        [[events]]
        at = "10m"
        action = "delete_metrics"
        instance = 0
        [[events]]
        at = "20m"
        action = "restart"
        instance = 1
        [[events]]
        at = "30m"
        action = "outage"
        instance = 0
        mode = "refuse"
        for = "10m"
        [[events]]
        at = "50m"
        action = "add_instance"
        version = "1.35.0"
        [[events]]
        at = "55m"
        action = "remove_instance"
        instance = 1
        [[events]]
        at = "40m"
        action = "outage"
        instance = 1
        mode = "http_500"
        for = "5m"
    "#;
    // 10 s ticks with a 10 s cache: every tick misses.
    let world = check(
        scenario,
        H,
        &[
            // The tick at 30m comes after the event at 30m: refused.
            want(0, TokenKind::Valid, 0, 1800, 180),
            // Refused: no request reaches instance 0 in [30m, 40m).
            want(0, TokenKind::Valid, 1800, 2400 - 1, 0),
            want(0, TokenKind::Valid, 2400 - 1, H, 121),
            // A 500 happens after authentication: counters still move.
            want(1, TokenKind::Valid, 2400, 2700, 30),
            // Removed at 55m.
            want(1, TokenKind::Valid, 3300 - 1, H, 0),
            // Joined at 50m.
            want(2, TokenKind::Valid, 0, 3000 - 1, 0),
            want(2, TokenKind::Valid, 3000 - 1, H, 61),
        ],
    );
    let v0 = world.view(0).expect("0");
    let v1 = world.view(1).expect("1");
    let v2 = world.view(2).expect("2");
    // DELETE keeps the start time; the page shows only what came after it.
    assert!(v0.start_time < ORIGIN);
    let since_delete = world.increments(
        0,
        TokenKind::Valid,
        ORIGIN + Duration::from_secs(600 - 1),
        world.now(),
    );
    assert_eq!(v0.counters[2], (TokenKind::Valid, since_delete));
    // A restart gives a new start time.
    assert_eq!(v1.start_time, ORIGIN + Duration::from_secs(1200));
    assert_eq!(v1.presence, Presence::Removed);
    assert_eq!(v2.start_time, ORIGIN + Duration::from_secs(3000));
    assert_eq!(v2.presence, Presence::Up);
}

#[test]
fn every_example_scenario_loads_and_runs() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("tests/scenarios") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            let s = Scenario::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let mut world = World::new(&s, ORIGIN);
            world.advance(ORIGIN + Duration::from_secs(2 * H));
            assert!(
                !world.log().is_empty(),
                "{} moves no counter",
                path.display()
            );
            names.push(s.name);
        }
    }
    names.sort();
    assert_eq!(
        names,
        ["churn", "demo", "outages", "versions", "weekly-job"]
    );
}

#[test]
fn demo_world_shows_both_cutovers() {
    let s =
        Scenario::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios/demo.toml"))
            .expect("demo");
    assert_eq!(s.speed, 60.0);
    let mut world = World::new(&s, ORIGIN);
    world.advance(ORIGIN + Duration::from_secs(3 * H));
    let total = |kind, from: u64, to: u64| {
        world.increments_all(
            kind,
            ORIGIN + Duration::from_secs(from),
            ORIGIN + Duration::from_secs(to),
        )
    };
    assert!(total(TokenKind::LegacyAuto, 120, 1200) > 0);
    assert_eq!(total(TokenKind::LegacyAuto, 1200, 3 * H), 0);
    assert_eq!(total(TokenKind::Legacy, 1200, 3 * H), 0);
    assert!(total(TokenKind::Stale, 120, 900) > 0);
    assert_eq!(total(TokenKind::Stale, 900, 3 * H), 0);
    assert!(total(TokenKind::Valid, 2 * H, 3 * H) > 0);
    assert_eq!(world.rotations(), 1);
}

#[test]
fn every_outage_mode_keeps_or_stops_the_counters_as_documented() {
    use cutover_auditor::simulator::scenario::OutageMode;
    // One instance per mode plus a control (last), each from 0s for longer
    // than the scenario lasts; a 1 req/s client on all of them.
    let mut scenario = String::from(
        "duration = \"10m\"\n[[instances]]\nversion = \"1.35.0\"\ncount = 9\n\
         [[clients]]\nkind = \"legacy_auto\"\ninterval = \"1s\"\n",
    );
    for (i, mode) in OutageMode::ALL.iter().enumerate() {
        scenario.push_str(&format!(
            "[[events]]\nat = \"0s\"\naction = \"outage\"\ninstance = {i}\nmode = \"{}\"\nfor = \"30d\"\n",
            mode.name()
        ));
    }
    // 1 h = 3600 s at 1 req/s, cached 10 s: 361 misses from the tick at 0 on.
    let world = check(&scenario, H, &[want(8, TokenKind::LegacyAuto, 0, H, 361)]);
    for (i, mode) in OutageMode::ALL.iter().enumerate() {
        let view = world.view(i).expect("instance");
        assert_eq!(view.outage.map(|o| o.0), Some(*mode), "still on after 1h");
        let uses = world.increments(
            i,
            TokenKind::LegacyAuto,
            Timestamp(ORIGIN.0 - 1),
            world.now(),
        );
        let want = if mode.unreachable() { 0 } else { 361 };
        assert_eq!(uses, want, "{}", mode.name());
        // The counter on the page is the ground truth, whatever is served.
        assert_eq!(
            view.counters
                .iter()
                .find(|(k, _)| *k == TokenKind::LegacyAuto)
                .map(|c| c.1),
            Some(want),
            "{}",
            mode.name()
        );
    }
}

#[test]
fn an_instance_joins_and_fails_at_the_same_time() {
    let scenario = r#"
        [[instances]]
        version = "1.35.0"
        [[clients]]
        kind = "valid"
        interval = "1s"
        [[events]]
        at = "30m"
        action = "add_instance"
        version = "1.35.0"
        cert_name = "wrong.example"
        [[events]]
        at = "30m"
        action = "outage"
        instance = 1
        mode = "no_families"
        for = "1h"
    "#;
    let s = Scenario::parse(scenario).expect("valid");
    assert_eq!(s.cert_name(0), None);
    assert_eq!(s.cert_name(1), Some("wrong.example"));
    // From 30m (its first tick) to 2h: 541 misses of the 10 s cache.
    let world = check(
        scenario,
        2 * H,
        &[
            want(1, TokenKind::Valid, 0, 30 * 60 - 1, 0),
            want(1, TokenKind::Valid, 30 * 60 - 1, 2 * H, 541),
        ],
    );
    let view = world.view(1).expect("instance 1");
    assert_eq!(view.presence, Presence::Up);
    assert_eq!(view.outage, None, "over after 1h");
    let mut world = World::new(&s, ORIGIN);
    world.advance(ORIGIN + Duration::from_secs(30 * 60));
    let view = world.view(1).expect("instance 1");
    assert_eq!(view.presence, Presence::Up);
    assert_eq!(
        view.outage.map(|o| o.0),
        Some(cutover_auditor::simulator::scenario::OutageMode::NoFamilies),
        "failing from the moment it joins"
    );
    assert_eq!(view.start_time, ORIGIN + Duration::from_secs(30 * 60));
}
