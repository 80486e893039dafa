//! Leader election on a `coordination.k8s.io/v1` Lease (`[leader_election]`).
//!
//! Only the leader scrapes, writes the state and pushes alerts. A follower
//! reloads the shared state every `state.write_interval`, so it is ready to
//! take over with the evidence. A leader is one only until its last
//! successful renewal plus `renew_deadline`: [`Leadership::is_leader`] reads
//! the clock, so a leader that cannot renew stops writing at once, before
//! its Lease (`lease_duration`, longer) can go to another replica. On
//! becoming leader, the state is read again first, then written at once:
//! that write moves the ConfigMap's resourceVersion, which fences off any
//! late write of the previous leader (409).
//!
//! [`decide`] is the pure part: given the Lease, this identity and `now`,
//! whether to create, renew, acquire or follow.

// Shell (I/O allowed, see clippy.toml): the Lease loop: the API, the clock and timers.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{error, info, warn};

use super::Shared;
use crate::clock::Clock;
use crate::config::LeaderElectionConfig;
use crate::kubeapi::{KubeClient, KubeError};
use crate::time::Timestamp;

/// Whether this replica is the leader, and until when at most.
#[derive(Debug)]
pub struct Leadership {
    enabled: bool,
    flag: watch::Sender<bool>,
    /// Milliseconds (daemon clock): leadership ends here unless renewed.
    valid_until: AtomicI64,
    clock: Clock,
}

impl Leadership {
    /// No election: this replica always leads.
    pub fn always(clock: Clock) -> Leadership {
        Leadership {
            enabled: false,
            flag: watch::Sender::new(true),
            valid_until: AtomicI64::new(i64::MAX),
            clock,
        }
    }

    /// Elected: a follower until the Lease is won.
    pub fn elected(clock: Clock) -> Leadership {
        Leadership {
            enabled: true,
            flag: watch::Sender::new(false),
            valid_until: AtomicI64::new(i64::MIN),
            clock,
        }
    }

    /// Whether election is on.
    pub fn is_elected(&self) -> bool {
        self.enabled
    }

    /// Whether this replica leads now: it won the Lease and its last
    /// renewal is less than `renew_deadline` old.
    pub fn is_leader(&self) -> bool {
        !self.enabled
            || (*self.flag.borrow()
                && self.clock.now().as_millis() < self.valid_until.load(Ordering::SeqCst))
    }

    /// Completes once this replica leads.
    pub async fn wait_leader(&self) {
        let mut rx = self.flag.subscribe();
        loop {
            if self.is_leader() {
                return;
            }
            if *rx.borrow_and_update() {
                // Won, but the renewal is overdue: the Lease loop decides soon.
                self.clock.sleep(Duration::from_millis(200)).await;
            } else if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Completes once this replica stops leading (never without election).
    pub async fn wait_lost(&self) {
        if !self.enabled {
            return std::future::pending().await;
        }
        let mut rx = self.flag.subscribe();
        loop {
            if !self.is_leader() {
                return;
            }
            let until = self.valid_until.load(Ordering::SeqCst);
            let left = Duration::from_millis(
                until
                    .saturating_sub(self.clock.now().as_millis())
                    .clamp(1, 60_000) as u64,
            );
            tokio::select! {
                _ = rx.changed() => {}
                () = self.clock.sleep(left) => {}
            }
        }
    }

    fn grant(&self, until: Timestamp) {
        self.valid_until.store(until.as_millis(), Ordering::SeqCst);
        self.flag.send_replace(true);
    }

    fn revoke(&self) {
        self.valid_until.store(i64::MIN, Ordering::SeqCst);
        self.flag.send_replace(false);
    }
}

/// The `spec` of a `coordination.k8s.io/v1` Lease.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseSpec {
    /// Who holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder_identity: Option<String>,
    /// How long it stays with its holder after a renewal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_duration_seconds: Option<i64>,
    /// When the holder acquired it (RFC 3339, microseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acquire_time: Option<String>,
    /// When the holder last renewed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renew_time: Option<String>,
    /// How many times it changed holder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_transitions: Option<i64>,
}

/// A Lease object (what the loop reads and writes).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Lease {
    /// `coordination.k8s.io/v1`.
    #[serde(default)]
    pub api_version: String,
    /// `Lease`.
    #[serde(default)]
    pub kind: String,
    /// Name, namespace, resourceVersion.
    pub metadata: crate::state_store::ObjectMeta,
    /// The spec.
    #[serde(default)]
    pub spec: LeaseSpec,
}

/// What to do with the Lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// There is none: create it, held by us.
    Create(LeaseSpec),
    /// We hold it: renew it.
    Renew(LeaseSpec),
    /// Free or expired: take it.
    Acquire(LeaseSpec),
    /// Someone else holds it until `expires`.
    Follow {
        /// The holder.
        holder: String,
        /// When it expires unless renewed.
        expires: Timestamp,
    },
}

/// `t` as a Kubernetes MicroTime.
pub fn micro_time(t: Timestamp) -> String {
    let st = UNIX_EPOCH + Duration::from_millis(t.as_millis().max(0) as u64);
    humantime::format_rfc3339_micros(st).to_string()
}

fn parse_micro_time(text: &str) -> Option<Timestamp> {
    let st: SystemTime = humantime::parse_rfc3339_weak(text.trim_end_matches('Z'))
        .or_else(|_| humantime::parse_rfc3339(text))
        .ok()?;
    Some(Timestamp::from_system_time(st))
}

/// Decides what to do with the Lease `lease` (`None`: it does not exist)
/// as `identity` at `now`. A Lease without a holder, or whose renewal is
/// older than its duration (ours when it gives none), or whose renew time
/// does not parse, is free.
pub fn decide(
    lease: Option<&LeaseSpec>,
    identity: &str,
    now: Timestamp,
    lease_duration: Duration,
) -> Decision {
    let ours = |acquired: Option<String>, transitions: i64| LeaseSpec {
        holder_identity: Some(identity.to_owned()),
        lease_duration_seconds: Some(lease_duration.as_secs().max(1) as i64),
        acquire_time: acquired.or_else(|| Some(micro_time(now))),
        renew_time: Some(micro_time(now)),
        lease_transitions: Some(transitions),
    };
    let Some(lease) = lease else {
        return Decision::Create(ours(None, 0));
    };
    let transitions = lease.lease_transitions.unwrap_or(0);
    let holder = lease.holder_identity.as_deref().unwrap_or("");
    if holder == identity {
        return Decision::Renew(ours(lease.acquire_time.clone(), transitions));
    }
    let duration = lease
        .lease_duration_seconds
        .filter(|s| *s > 0)
        .map_or(lease_duration, |s| Duration::from_secs(s as u64));
    let expires = lease
        .renew_time
        .as_deref()
        .and_then(parse_micro_time)
        .map(|renewed| renewed + duration);
    match expires {
        Some(expires) if !holder.is_empty() && now < expires => Decision::Follow {
            holder: holder.to_owned(),
            expires,
        },
        _ => Decision::Acquire(ours(None, transitions + 1)),
    }
}

/// Runs the Lease loop until aborted: every `retry_period`, acquire or
/// renew the Lease, or follow its holder (reloading the shared state every
/// `state.write_interval`).
pub(super) async fn run(
    shared: Arc<Shared>,
    client: KubeClient,
    le: LeaderElectionConfig,
    namespace: String,
) {
    let item = format!(
        "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{}",
        le.lease_name
    );
    let collection = format!("/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases");
    let object = format!("{namespace}/{}", le.lease_name);
    let leadership = Arc::clone(&shared.leader);
    let mut last_sync: Option<Timestamp> = None;
    let mut last_holder: Option<String> = None;
    loop {
        let now = shared.clock.now();
        let current = match client.get::<Lease>(&item).await {
            Ok(lease) => Ok(Some(lease)),
            Err(KubeError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        };
        let outcome = match current {
            Err(e) => Err(e),
            Ok(lease) => {
                let decision = decide(
                    lease.as_ref().map(|l| &l.spec),
                    &le.identity,
                    now,
                    le.lease_duration,
                );
                let write = |spec: LeaseSpec| {
                    let mut body = lease.clone().unwrap_or_default();
                    body.api_version = "coordination.k8s.io/v1".into();
                    body.kind = "Lease".into();
                    body.metadata.name = le.lease_name.clone();
                    body.metadata.namespace = Some(namespace.clone());
                    body.spec = spec;
                    body
                };
                match decision {
                    Decision::Create(spec) => client
                        .post::<_, Lease>(&collection, &write(spec))
                        .await
                        .map(|_| None),
                    Decision::Renew(spec) | Decision::Acquire(spec) => client
                        .put::<_, Lease>(&item, &write(spec))
                        .await
                        .map(|_| None),
                    Decision::Follow { holder, expires } => Ok(Some((holder, expires))),
                }
            }
        };
        match outcome {
            Ok(None) => {
                if leadership.is_leader() {
                    leadership.grant(now + le.renew_deadline);
                } else {
                    if *leadership.flag.borrow() {
                        // Renewed, but only after the renew deadline: that
                        // term ended; a new one starts as any other.
                        leadership.revoke();
                        shared.metrics.observe_leadership(false);
                    }
                    // Won: read the shared state again before anything else,
                    // then write it at once to fence off the previous leader.
                    match shared.reload().await {
                        Ok(()) => {
                            leadership.grant(now + le.renew_deadline);
                            shared.metrics.observe_leadership(true);
                            info!(lease = %object, identity = %le.identity, previous = last_holder.as_deref().unwrap_or(""),
                                  "became the leader: state read again; scraping, writing the state and pushing alerts");
                            let _ = shared.persist().await;
                        }
                        Err(e) => {
                            error!(lease = %object, error = %super::run::chain(&e),
                                   "won the Lease but cannot read the shared state: not leading yet, retrying");
                        }
                    }
                }
                last_holder = Some(le.identity.clone());
            }
            Ok(Some((holder, _expires))) => {
                if leadership.is_elected() && *leadership.flag.borrow() {
                    leadership.revoke();
                    shared.metrics.observe_leadership(false);
                    warn!(lease = %object, holder = %holder, "lost the Lease: stopped scraping, writing and pushing");
                }
                if last_holder.as_deref() != Some(holder.as_str()) {
                    info!(lease = %object, holder = %holder, "following the leader");
                    last_holder = Some(holder);
                }
                let due =
                    last_sync.is_none_or(|t| now.since(t) >= shared.config.state.write_interval);
                if due {
                    last_sync = Some(now);
                    if let Err(e) = shared.reload().await {
                        warn!(error = %super::run::chain(&e), "follower: cannot load the shared state; not ready until it can");
                    }
                }
            }
            Err(e) => {
                let expired = !leadership.is_leader() && *leadership.flag.borrow();
                warn!(lease = %object, error = %super::run::chain(&e), "cannot acquire or renew the Lease");
                if expired {
                    leadership.revoke();
                    shared.metrics.observe_leadership(false);
                    error!(lease = %object, renew_deadline = ?le.renew_deadline,
                           "the Lease was not renewed before the renew deadline: stopped scraping, writing and pushing");
                }
            }
        }
        // Past the deadline without a successful renewal: no longer leading.
        if *leadership.flag.borrow() && !leadership.is_leader() {
            leadership.revoke();
            shared.metrics.observe_leadership(false);
            error!(lease = %object, "the Lease was not renewed before the renew deadline: stopped scraping, writing and pushing");
        }
        shared.clock.sleep(le.retry_period).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Duration = Duration::from_secs(15);

    fn held_by(who: &str, renewed: Timestamp) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(who.into()),
            lease_duration_seconds: Some(15),
            acquire_time: Some(micro_time(Timestamp::from_secs(1_000))),
            renew_time: Some(micro_time(renewed)),
            lease_transitions: Some(3),
        }
    }

    #[test]
    fn micro_times_round_trip() {
        let t = Timestamp::from_millis(1_764_871_200_123);
        assert_eq!(micro_time(t), "2025-12-04T18:00:00.123000Z");
        assert_eq!(parse_micro_time(&micro_time(t)), Some(t));
        assert_eq!(parse_micro_time("yesterday"), None);
    }

    #[test]
    fn no_lease_is_created_held_by_us() {
        let now = Timestamp::from_secs(2_000);
        match decide(None, "a", now, D) {
            Decision::Create(spec) => {
                assert_eq!(spec.holder_identity.as_deref(), Some("a"));
                assert_eq!(spec.lease_duration_seconds, Some(15));
                assert_eq!(spec.renew_time, Some(micro_time(now)));
                assert_eq!(spec.lease_transitions, Some(0));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn our_lease_is_renewed_keeping_its_acquire_time() {
        let now = Timestamp::from_secs(2_000);
        let lease = held_by("a", Timestamp::from_secs(1_990));
        match decide(Some(&lease), "a", now, D) {
            Decision::Renew(spec) => {
                assert_eq!(spec.acquire_time, lease.acquire_time);
                assert_eq!(spec.renew_time, Some(micro_time(now)));
                assert_eq!(spec.lease_transitions, Some(3), "not a transition");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_live_lease_of_another_is_followed_until_it_expires() {
        let renewed = Timestamp::from_secs(1_990);
        let lease = held_by("b", renewed);
        let expires = renewed + D;
        // Just before expiry: follow.
        assert_eq!(
            decide(Some(&lease), "a", expires - Duration::from_millis(1), D),
            Decision::Follow {
                holder: "b".into(),
                expires
            }
        );
        // At expiry: take it, one more transition, our acquire time.
        match decide(Some(&lease), "a", expires, D) {
            Decision::Acquire(spec) => {
                assert_eq!(spec.holder_identity.as_deref(), Some("a"));
                assert_eq!(spec.lease_transitions, Some(4));
                assert_eq!(spec.acquire_time, Some(micro_time(expires)));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_lease_duration_written_in_the_lease_wins() {
        let renewed = Timestamp::from_secs(1_990);
        let mut lease = held_by("b", renewed);
        lease.lease_duration_seconds = Some(60);
        assert!(matches!(
            decide(Some(&lease), "a", renewed + Duration::from_secs(30), D),
            Decision::Follow { .. }
        ));
    }

    #[test]
    fn a_free_or_unreadable_lease_is_acquired() {
        let now = Timestamp::from_secs(2_000);
        let mut empty = held_by("", now);
        empty.holder_identity = None;
        assert!(matches!(
            decide(Some(&empty), "a", now, D),
            Decision::Acquire(_)
        ));
        let mut garbled = held_by("b", now);
        garbled.renew_time = Some("not a time".into());
        assert!(matches!(
            decide(Some(&garbled), "a", now, D),
            Decision::Acquire(_)
        ));
    }

    #[tokio::test]
    async fn leadership_ends_at_the_renew_deadline_without_the_loop() {
        let clock = Clock::manual(Timestamp::from_secs(100));
        let l = Leadership::elected(clock.clone());
        assert!(!l.is_leader());
        l.grant(Timestamp::from_secs(110));
        assert!(l.is_leader());
        clock.advance(Duration::from_millis(9_999));
        assert!(l.is_leader());
        clock.advance(Duration::from_millis(1));
        assert!(!l.is_leader(), "no write after the renew deadline");
        tokio::time::timeout(Duration::from_secs(5), l.wait_lost())
            .await
            .expect("wait_lost completes past the deadline");
        let always = Leadership::always(clock);
        assert!(always.is_leader());
    }
}
