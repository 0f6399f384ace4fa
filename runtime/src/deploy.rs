//! The deployment figures `cella check-config` prints for the configured plan: the HAProxy
//! `server` line (`deploy/haproxy/haproxy.cfg`) and the memory limit for Kubernetes
//! (`deploy/kubernetes/`) and systemd (`MemoryMax=`, `deploy/systemd/`). docs/operations.md
//! explains both.

#![forbid(unsafe_code)]

use std::net::SocketAddr;

use cella_shared::{Config, MemoryPlan};

/// Memory outside the region that the limit also holds, whatever the plan: the binary and its
/// libraries, the startup heap (connection table, worker tables), the main and worker thread
/// stacks (measured together at about 4MiB resident), and page cache charged to the cgroup.
pub const MEMORY_MARGIN_BYTES: u64 = 32 << 20;

/// And per configured connection: kernel socket memory is charged to the container's cgroup
/// (an idle socket costs a few KiB; one with a response in flight, its send buffer's fill).
pub const MEMORY_MARGIN_PER_CONNECTION_BYTES: u64 = 16 << 10;

const MIB: u64 = 1 << 20;

/// The memory limit for one instance, in whole MiB: the plan plus the margins above.
pub fn memory_limit_mib(plan: &MemoryPlan, connections_max: usize) -> u64 {
    let per_connection = MEMORY_MARGIN_PER_CONNECTION_BYTES.saturating_mul(connections_max as u64);
    let bytes = plan.total_bytes.saturating_add(MEMORY_MARGIN_BYTES).saturating_add(per_connection);
    bytes.div_ceil(MIB)
}

/// The HAProxy `server` line for this instance: at most `slots` requests at once (the rest
/// queue in HAProxy), `weight 100` (what the agent's percentage scales), and the agent check
/// when `agent_listen` is set. `HOST` stands for an address the configuration does not name
/// (listening on every interface).
pub fn haproxy_server_line(config: &Config, plan: &MemoryPlan) -> String {
    let mut line =
        format!("server cella {} check maxconn {} weight 100", address(config.listen), plan.slots);
    if let Some(agent) = config.agent_listen {
        line.push_str(&format!(
            " agent-check agent-addr {} agent-port {} agent-inter 1s",
            host(agent),
            agent.port()
        ));
    }
    line
}

fn host(address: SocketAddr) -> String {
    if address.ip().is_unspecified() {
        "HOST".to_string()
    } else {
        address.ip().to_string()
    }
}

fn address(address: SocketAddr) -> String {
    match address {
        SocketAddr::V6(v6) if !v6.ip().is_unspecified() => format!("[{}]:{}", v6.ip(), v6.port()),
        _ => format!("{}:{}", host(address), address.port()),
    }
}

/// The lines `check-config` prints.
pub fn print(config: &Config, plan: &MemoryPlan) {
    let limit = memory_limit_mib(plan, config.connections_max);
    println!("# haproxy: {}", haproxy_server_line(config, plan));
    println!(
        "# kubernetes: memory {limit}Mi (requests = limits: the plan + {}MiB + {}KiB x \
         connections_max)",
        MEMORY_MARGIN_BYTES / MIB,
        MEMORY_MARGIN_PER_CONNECTION_BYTES >> 10
    );
    println!("# systemd: MemoryMax={limit}M");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planned(settings: &[(&str, &str)]) -> (Config, MemoryPlan) {
        let mut config = Config::default();
        for (key, value) in settings {
            config.set(key, value, "a test").unwrap();
        }
        let plan = config.validate(4096).unwrap();
        (config, plan)
    }

    #[test]
    fn the_memory_limit_is_the_plan_plus_the_margins_in_whole_mib() {
        let (config, plan) = planned(&[]);
        let expected = (plan.total_bytes + (32 << 20) + 1024 * (16 << 10)).div_ceil(1 << 20);
        assert_eq!(memory_limit_mib(&plan, config.connections_max), expected);
        assert!(expected * (1 << 20) >= plan.total_bytes + (48 << 20));
    }

    #[test]
    fn the_haproxy_line_caps_each_server_at_its_slots() {
        let (config, plan) = planned(&[("listen", "10.0.0.7:8080"), ("slots", "12")]);
        assert!(haproxy_server_line(&config, &plan)
            .starts_with("server cella 10.0.0.7:8080 check maxconn 12 weight 100"));
        let (config, plan) = planned(&[("listen", "0.0.0.0:80")]);
        assert!(haproxy_server_line(&config, &plan).starts_with("server cella HOST:80 check"));
        let (config, plan) = planned(&[("listen", "[::1]:80")]);
        assert!(haproxy_server_line(&config, &plan).starts_with("server cella [::1]:80 check"));
        let (config, plan) =
            planned(&[("listen", "10.0.0.7:80"), ("agent_listen", "10.0.0.7:9902")]);
        assert_eq!(
            haproxy_server_line(&config, &plan),
            "server cella 10.0.0.7:80 check maxconn 64 weight 100 agent-check agent-addr 10.0.0.7 \
             agent-port 9902 agent-inter 1s"
        );
    }
}
