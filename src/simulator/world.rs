//! The pure simulated world: apiserver instances with their counters and
//! token caches, scripted clients, events, and the ground truth log.
//!
//! Nothing here reads a clock or touches the network: [`World::advance`]
//! moves it to a given time, so a 7-day scenario runs in a test without
//! sleeping. The servers lock it, advance it to `clock.now()` and render.

use std::collections::HashMap;
use std::time::Duration;

use crate::families::TokenKind;
use crate::time::{Timestamp, duration_millis};

use super::scenario::{Action, Client, ClientKind, KubeVersion, OutageMode, Scenario, Targets};

/// One counter increment, as the ground truth records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Increment {
    /// When it happened (simulated).
    pub at: Timestamp,
    /// Instance index.
    pub instance: usize,
    /// The counter family.
    pub kind: TokenKind,
    /// By how much (always 1 today; kept for clarity of sums).
    pub amount: u64,
}

/// Whether an instance exists at the current time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Presence {
    /// Added by a later event.
    Pending,
    /// Serving.
    Up,
    /// Removed by an event.
    Removed,
}

/// A token cache key: a scripted client, or a bearer token seen by a server
/// (identified by a hash, so the world never holds a token).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CacheKey {
    /// Scripted client by index.
    Client(usize),
    /// A presented bearer token, by hash.
    Token(u64),
}

/// What an authentication attempt resulted in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthOutcome {
    /// Authenticated (from the cache or not).
    Ok,
    /// Rejected (e.g. an invalidated legacy token).
    Rejected,
}

/// What one instance shows on its page right now.
#[derive(Clone, Debug, PartialEq)]
pub struct InstanceView {
    /// Instance index.
    pub index: usize,
    /// Emulated version.
    pub version: KubeVersion,
    /// `process_start_time_seconds`.
    pub start_time: Timestamp,
    /// Counter values of the families this version has, in [`TokenKind::ALL`] order.
    pub counters: Vec<(TokenKind, u64)>,
    /// `authentication_token_cache_request_total{status="hit"}`.
    pub cache_hits: u64,
    /// `authentication_token_cache_request_total{status="miss"}`.
    pub cache_misses: u64,
    /// Presence.
    pub presence: Presence,
    /// The current outage, if any: mode and (for `slow`) the page delay.
    pub outage: Option<(OutageMode, Duration)>,
}

/// The simulated world.
#[derive(Debug)]
pub struct World {
    origin: Timestamp,
    now: Timestamp,
    cache_ttl: i64,
    scraper_kind: Option<ClientKind>,
    clients: Vec<ClientState>,
    events: Vec<(Timestamp, Action)>,
    next_event: usize,
    instances: Vec<Instance>,
    log: Vec<Increment>,
    rotations: u64,
}

impl World {
    /// A world at the scenario's start `origin`, every initial instance up.
    pub fn new(scenario: &Scenario, origin: Timestamp) -> World {
        let mut instances: Vec<Instance> = scenario
            .instances
            .iter()
            .enumerate()
            .map(|(i, v)| {
                // Distinct, realistic uptimes: a fleet whose members started hours apart.
                let uptime = Duration::from_millis(3 * 3_600_000 + i as u64 * 1_020_000 + 370);
                Instance::new(*v, origin - uptime, Presence::Up)
            })
            .collect();
        for e in &scenario.events {
            if let Action::AddInstance { version, .. } = e.action {
                instances.push(Instance::new(version, origin, Presence::Pending));
            }
        }
        let clients = scenario
            .clients
            .iter()
            .map(|c| ClientState {
                client: c.clone(),
                next_tick: Some(origin + c.from),
                cursor: 0,
            })
            .collect();
        World {
            origin,
            now: origin,
            cache_ttl: duration_millis(scenario.cache_ttl),
            scraper_kind: scenario.scraper_counts_as,
            clients,
            events: scenario
                .events
                .iter()
                .map(|e| ((origin + e.at), e.action.clone()))
                .collect(),
            next_event: 0,
            instances,
            log: Vec::new(),
            rotations: 0,
        }
    }

    /// The scenario start.
    pub fn origin(&self) -> Timestamp {
        self.origin
    }

    /// The time the world has been advanced to.
    pub fn now(&self) -> Timestamp {
        self.now
    }

    /// Runs every client tick and event up to and including `to`. Never
    /// goes backwards: an earlier `to` does nothing.
    pub fn advance(&mut self, to: Timestamp) {
        loop {
            let event_at = self.events.get(self.next_event).map(|e| e.0);
            let (client_at, client) = self
                .clients
                .iter()
                .enumerate()
                .filter_map(|(i, c)| c.next_tick.map(|t| (t, i)))
                .min()
                .map_or((None, 0), |(t, i)| (Some(t), i));
            // Events first at equal times: a restart at 40m happens before a tick at 40m.
            match (event_at, client_at) {
                (Some(e), c) if e <= to && c.is_none_or(|c| e <= c) => {
                    let action = self.events[self.next_event].1.clone();
                    self.next_event += 1;
                    self.now = self.now.max(e);
                    self.apply(e, action);
                }
                (_, Some(c)) if c <= to => {
                    self.now = self.now.max(c);
                    self.tick(client, c);
                }
                _ => break,
            }
        }
        self.now = self.now.max(to);
    }

    /// Number of instances that ever exist in the scenario (pending ones included).
    pub fn instance_count(&self) -> usize {
        self.instances.len()
    }

    /// What instance `i` shows now; `None` if there is no such instance.
    pub fn view(&self, i: usize) -> Option<InstanceView> {
        let inst = self.instances.get(i)?;
        let counters = TokenKind::ALL
            .into_iter()
            .filter(|k| family_exists(inst.version, *k))
            .map(|k| (k, inst.counters[k as usize]))
            .collect();
        Some(InstanceView {
            index: i,
            version: inst.version,
            start_time: inst.start_time,
            counters,
            cache_hits: inst.cache_hits,
            cache_misses: inst.cache_misses,
            presence: inst.presence,
            outage: inst
                .outage
                .filter(|o| o.until > self.now)
                .map(|o| (o.mode, o.delay)),
        })
    }

    /// A request from the auditor (or any bearer token the servers accepted)
    /// on instance `i` at the current time: it goes through the token cache,
    /// and a miss moves the counter of the configured scraper kind.
    pub fn scraper_request(&mut self, i: usize, token_hash: u64) -> AuthOutcome {
        match self.scraper_kind {
            Some(kind) => self.authenticate(i, CacheKey::Token(token_hash), kind, self.now),
            None => {
                if let Some(inst) = self.instances.get_mut(i) {
                    let ttl = self.cache_ttl;
                    if !inst.cache_lookup(CacheKey::Token(token_hash), self.now, ttl) {
                        inst.cache_misses += 1;
                    }
                }
                AuthOutcome::Ok
            }
        }
    }

    /// A request with an unknown bearer token: a token-cache miss (failures
    /// are not cached) that moves no ServiceAccount counter.
    pub fn failed_authentication(&mut self, i: usize) {
        if let Some(inst) = self.instances.get_mut(i) {
            inst.cache_misses += 1;
        }
    }

    /// `DELETE /metrics` on instance `i`: every counter resets, the start time stays.
    pub fn delete_metrics(&mut self, i: usize) {
        if let Some(inst) = self.instances.get_mut(i) {
            inst.counters = [0; 6];
            inst.cache_hits = 0;
            inst.cache_misses = 0;
        }
    }

    /// Ground truth: the increments of `kind` on instance `i` in `(t0, t1]`.
    pub fn increments(&self, i: usize, kind: TokenKind, t0: Timestamp, t1: Timestamp) -> u64 {
        let lo = self.log.partition_point(|e| e.at <= t0);
        let hi = self.log.partition_point(|e| e.at <= t1);
        self.log[lo..hi]
            .iter()
            .filter(|e| e.instance == i && e.kind == kind)
            .map(|e| e.amount)
            .sum()
    }

    /// Ground truth: the increments of `kind` on every instance in `(t0, t1]`.
    pub fn increments_all(&self, kind: TokenKind, t0: Timestamp, t1: Timestamp) -> u64 {
        (0..self.instances.len())
            .map(|i| self.increments(i, kind, t0, t1))
            .sum()
    }

    /// Ground truth: the last increment of `kind` on any instance at or before `t`.
    pub fn last_increment(&self, kind: TokenKind, t: Timestamp) -> Option<Timestamp> {
        let hi = self.log.partition_point(|e| e.at <= t);
        self.log[..hi]
            .iter()
            .rev()
            .find(|e| e.kind == kind)
            .map(|e| e.at)
    }

    /// Every increment so far, in time order.
    pub fn log(&self) -> &[Increment] {
        &self.log
    }

    /// How many `rotate_token` events have fired; the server layer writes a
    /// new token whenever this grows.
    pub fn rotations(&self) -> u64 {
        self.rotations
    }

    fn apply(&mut self, at: Timestamp, action: Action) {
        match action {
            Action::Restart { instance } => {
                if let Some(inst) = self.instances.get_mut(instance) {
                    inst.restart(at);
                }
            }
            Action::DeleteMetrics { instance } => self.delete_metrics(instance),
            Action::AddInstance { .. } => {
                // Pending instances were created in order; the first one still pending joins.
                if let Some(inst) = self
                    .instances
                    .iter_mut()
                    .find(|i| i.presence == Presence::Pending)
                {
                    inst.presence = Presence::Up;
                    inst.restart(at);
                }
            }
            Action::RemoveInstance { instance } => {
                if let Some(inst) = self.instances.get_mut(instance) {
                    inst.presence = Presence::Removed;
                }
            }
            Action::Outage {
                instance,
                mode,
                duration,
                delay,
            } => {
                if let Some(inst) = self.instances.get_mut(instance) {
                    inst.outage = Some(Outage {
                        mode,
                        until: (at + duration),
                        delay,
                    });
                }
            }
            Action::RotateToken => self.rotations += 1,
        }
    }

    fn tick(&mut self, c: usize, at: Timestamp) {
        let offset = at.since(self.origin);
        let state = &self.clients[c];
        let client = state.client.clone();
        let up: Vec<usize> = (0..self.instances.len())
            .filter(|i| self.reachable(*i, at))
            .collect();
        if client.active_at(offset) {
            let targets: Vec<usize> = match client.targets {
                Targets::All => up,
                Targets::RoundRobin if up.is_empty() => Vec::new(),
                Targets::RoundRobin => vec![up[state.cursor % up.len()]],
                Targets::One(i) => up.into_iter().filter(|u| *u == i).collect(),
            };
            for i in targets {
                self.authenticate(i, CacheKey::Client(c), client.kind, at);
            }
            self.clients[c].cursor += 1;
        }
        self.clients[c].next_tick = next_tick(&client, self.origin, at);
    }

    /// Requests reach an instance unless it is absent or its port refuses or hangs.
    fn reachable(&self, i: usize, at: Timestamp) -> bool {
        let inst = &self.instances[i];
        inst.presence == Presence::Up
            && !inst
                .outage
                .is_some_and(|o| o.until > at && o.mode.unreachable())
    }

    fn authenticate(
        &mut self,
        i: usize,
        key: CacheKey,
        kind: ClientKind,
        at: Timestamp,
    ) -> AuthOutcome {
        let ttl = self.cache_ttl;
        let Some(inst) = self.instances.get_mut(i) else {
            return AuthOutcome::Rejected;
        };
        let v = inst.version;
        let rejected = kind == ClientKind::InvalidLegacyAuto && v.at_least(29);
        // Failures are not cached (failure TTL 0), so a rejected token misses every time.
        if !rejected && inst.cache_lookup(key, at, ttl) {
            return AuthOutcome::Ok;
        }
        inst.cache_misses += 1;
        if !rejected {
            inst.cache
                .insert(key, at + Duration::from_millis(ttl.max(0) as u64));
        }
        for k in counted(kind, v) {
            inst.counters[*k as usize] += 1;
            self.log.push(Increment {
                at,
                instance: i,
                kind: *k,
                amount: 1,
            });
        }
        if rejected {
            AuthOutcome::Rejected
        } else {
            AuthOutcome::Ok
        }
    }
}

/// True if instances of version `v` expose the family of `kind`.
pub fn family_exists(v: KubeVersion, kind: TokenKind) -> bool {
    match kind {
        TokenKind::Legacy | TokenKind::Stale | TokenKind::Valid => v.at_least(19),
        TokenKind::LegacyAuto | TokenKind::LegacyManual | TokenKind::InvalidLegacyAuto => {
            v.at_least(29)
        }
    }
}

/// The counters one cache-missing authentication of `kind` moves on version `v`.
pub fn counted(kind: ClientKind, v: KubeVersion) -> &'static [TokenKind] {
    use TokenKind as T;
    let new = v.at_least(29);
    if !v.at_least(19) {
        return &[];
    }
    match kind {
        ClientKind::Legacy => &[T::Legacy],
        ClientKind::LegacyAuto | ClientKind::InvalidLegacyAuto if !new => &[T::Legacy],
        ClientKind::LegacyAuto => &[T::Legacy, T::LegacyAuto],
        ClientKind::LegacyManual if !new => &[T::Legacy],
        ClientKind::LegacyManual => &[T::Legacy, T::LegacyManual],
        ClientKind::InvalidLegacyAuto => &[T::Legacy, T::InvalidLegacyAuto],
        ClientKind::Stale => &[T::Stale],
        ClientKind::Valid => &[T::Valid],
    }
}

#[derive(Debug)]
struct ClientState {
    client: Client,
    next_tick: Option<Timestamp>,
    cursor: usize,
}

#[derive(Clone, Copy, Debug)]
struct Outage {
    mode: OutageMode,
    until: Timestamp,
    delay: Duration,
}

#[derive(Debug)]
struct Instance {
    version: KubeVersion,
    start_time: Timestamp,
    counters: [u64; 6],
    cache_hits: u64,
    cache_misses: u64,
    cache: HashMap<CacheKey, Timestamp>,
    presence: Presence,
    outage: Option<Outage>,
}

impl Instance {
    fn new(version: KubeVersion, start_time: Timestamp, presence: Presence) -> Instance {
        Instance {
            version,
            start_time: round_to_centis(start_time),
            counters: [0; 6],
            cache_hits: 0,
            cache_misses: 0,
            cache: HashMap::new(),
            presence,
            outage: None,
        }
    }

    /// A new process: new start time, empty counters and cache.
    fn restart(&mut self, at: Timestamp) {
        *self = Instance {
            presence: self.presence,
            outage: self.outage,
            ..Instance::new(self.version, at, self.presence)
        };
    }

    /// True (and counts a hit) if `key` is cached at `at`.
    fn cache_lookup(&mut self, key: CacheKey, at: Timestamp, ttl: i64) -> bool {
        match self.cache.get(&key) {
            Some(expiry) if at < *expiry => {
                self.cache_hits += 1;
                true
            }
            _ => {
                if ttl > 0 {
                    self.cache
                        .insert(key, at + Duration::from_millis(ttl as u64));
                }
                false
            }
        }
    }
}

/// Process start times come from `/proc` in clock ticks: 10 ms resolution.
fn round_to_centis(t: Timestamp) -> Timestamp {
    Timestamp(t.0.div_euclid(10) * 10)
}

/// The next tick of `client` after one at `at`, skipping inactive periods.
fn next_tick(client: &Client, origin: Timestamp, at: Timestamp) -> Option<Timestamp> {
    let interval = duration_millis(client.interval).max(1);
    let from = (origin + client.from).0;
    let mut next = at.0 + interval;
    if let Some((every, active)) = client.every {
        let (every, active) = (duration_millis(every).max(1), duration_millis(active));
        let into = (next - from).rem_euclid(every);
        if into >= active {
            // Jump to the first tick of the next active period, on the tick grid.
            let period_start = next - into + every;
            let ticks = (period_start - from + interval - 1) / interval;
            next = from + ticks * interval;
        }
    }
    let next = Timestamp(next);
    match client.until {
        Some(u) if next >= (origin + u) => None,
        _ => Some(next),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn world(text: &str) -> World {
        let s = Scenario::parse(text).expect("valid scenario");
        World::new(&s, Timestamp::from_secs(1_000_000))
    }

    #[test]
    fn cache_rule_limits_successes_and_not_failures() {
        let mut w = world(
            r#"
            [[instances]]
            version = "1.35.0"
            [[instances]]
            version = "1.28.3"
            [[clients]]
            kind = "legacy_auto"
            interval = "1s"
            [[clients]]
            kind = "invalid_legacy_auto"
            interval = "2s"
            "#,
        );
        let t0 = w.origin();
        w.advance(t0 + Duration::from_secs(60));
        let t1 = w.now();
        let n = |i, k| w.increments(i, k, t0 - Duration::from_secs(1), t1);
        // legacy_auto: 1 req/s, cached 10 s => ticks 0,10,...,60 => 7 misses.
        // invalid: every 2 s, never cached on 1.35 => 31; cached like legacy_auto on 1.28.
        assert_eq!(n(0, TokenKind::LegacyAuto), 7);
        assert_eq!(n(0, TokenKind::InvalidLegacyAuto), 31);
        assert_eq!(n(0, TokenKind::Legacy), 7 + 31);
        assert_eq!(n(1, TokenKind::LegacyAuto), 0);
        assert_eq!(n(1, TokenKind::Legacy), 7 + 7);
        let v = w.view(1).expect("instance 1");
        assert_eq!(v.counters.len(), 3, "1.28 has three families");
        assert_eq!(w.view(0).expect("instance 0").counters.len(), 6);
    }
}
