//! Waiting on a simulation driven by a manual clock.

use std::time::{Duration, Instant};

use cutover_auditor::simulator::Simulation;
use cutover_auditor::simulator::scenario::OutageMode;
use cutover_auditor::simulator::world::Presence;

/// Advances the simulation's manual clock by `d`, then waits until every
/// instance's port is open exactly when the world says it listens (up and
/// not refusing): the listeners notice a change on their own schedule, so
/// the wait is on what they do, not on a guess of how long it takes.
pub async fn advance(sim: &Simulation, d: Duration) {
    sim.clock().advance(d);
    let deadline = Instant::now() + Duration::from_secs(10);
    for (i, addr) in sim.instance_addresses().iter().enumerate() {
        let listens = sim.world().view(i).is_some_and(|v| {
            v.presence == Presence::Up && !matches!(v.outage, Some((OutageMode::Refuse, _)))
        });
        while tokio::net::TcpStream::connect(addr).await.is_ok() != listens {
            assert!(
                Instant::now() < deadline,
                "instance {i} ({addr}) still {} after 10 s",
                if listens { "closed" } else { "open" }
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
