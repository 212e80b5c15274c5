//! A 3-server JetStream cluster on loopback, started from the example an
//! operator starts (`deploy/nats/cluster/n1.conf` … `n3.conf`): each of its
//! addresses moved to a free port, each store into a temporary directory,
//! and the shipped users of `deploy/nats/auth.conf` on every member.

use crate::nats::{NatsServer, new_passwords};
use crate::{free_port, http_get};
use anyhow::{Result, bail, ensure};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The example's members: name and config.
const MEMBERS: [(&str, &str); 3] = [
    ("n1", include_str!("../../../deploy/nats/cluster/n1.conf")),
    ("n2", include_str!("../../../deploy/nats/cluster/n2.conf")),
    ("n3", include_str!("../../../deploy/nats/cluster/n3.conf")),
];

/// The example's loopback ports: clients, monitoring and routes, n1 first.
const EXAMPLE_PORTS: [u16; 9] = [4222, 4223, 4224, 8222, 8223, 8224, 6222, 6223, 6224];

/// Three nats-servers in one JetStream cluster, stopped on drop.
pub struct NatsCluster {
    /// n1, n2 and n3, in that order.
    pub members: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts the three members and waits until JetStream has a meta leader
    /// that every member follows. Ports are picked before the servers bind
    /// them (routes must name each other's), so a start that loses a port to
    /// another test is tried again on new ones.
    ///
    /// # Errors
    /// When no nats-server 2.10+ is found, or the cluster does not form.
    pub async fn start() -> Result<NatsCluster> {
        let mut last = None;
        for _ in 0..3 {
            match NatsCluster::spawn() {
                Ok(cluster) => {
                    cluster.wait_formed().await?;
                    return Ok(cluster);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last
            .expect("three tries")
            .context("the NATS cluster did not start on three sets of ports"))
    }

    fn spawn() -> Result<NatsCluster> {
        let moved: BTreeMap<u16, u16> = EXAMPLE_PORTS.iter().map(|p| (*p, free_port())).collect();
        let passwords = new_passwords();
        let mut members = Vec::new();
        for (i, (name, example)) in MEMBERS.iter().enumerate() {
            let mut conf = example
                .replace(&format!("/var/lib/nats/{name}"), "{dir}/store")
                .replace("include ../auth.conf", "include auth.conf");
            for (from, to) in &moved {
                conf = conf.replace(&format!("127.0.0.1:{from}"), &format!("127.0.0.1:{to}"));
            }
            ensure!(
                !conf.contains("/var/lib/nats") && conf.contains("include auth.conf"),
                "deploy/nats/cluster/{name}.conf no longer has the store and include lines the harness moves"
            );
            let ports = (moved[&EXAMPLE_PORTS[i]], moved[&EXAMPLE_PORTS[3 + i]]);
            members.push(NatsServer::member(name, &conf, ports, passwords.clone())?);
        }
        Ok(NatsCluster { members })
    }

    /// Waits until every member names the same meta leader and the leader
    /// sees both other members current.
    async fn wait_formed(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut seen = Vec::new();
            for member in &self.members {
                seen.push(member.meta_group().await.ok());
            }
            let leader = seen[0].as_ref().and_then(|(leader, _)| leader.clone());
            let agreed = seen
                .iter()
                .all(|s| s.as_ref().is_some_and(|(l, _)| l.is_some() && *l == leader));
            let followers_current = self.members.iter().zip(&seen).any(|(member, s)| {
                member.name == leader && s.as_ref().is_some_and(|(_, current)| *current)
            });
            if agreed && followers_current {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the NATS cluster formed no JetStream meta group in 60 s: {seen:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The client URL of every member, separated by commas (a client's seeds).
    pub fn urls(&self) -> String {
        self.members
            .iter()
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl NatsServer {
    /// The JetStream meta leader this member sees in a cluster of three
    /// (`None` while there is none), and whether both peers it lists are
    /// current (what the leader knows; a follower may not).
    ///
    /// # Errors
    /// When the monitoring port does not answer.
    pub async fn meta_group(&self) -> Result<(Option<String>, bool)> {
        let addr = format!("127.0.0.1:{}", self.monitor_port).parse()?;
        let (status, body) = http_get(addr, "/jsz").await?;
        ensure!(status == 200, "/jsz answered {status}");
        let jsz: serde_json::Value = serde_json::from_str(&body)?;
        let meta = &jsz["meta_cluster"];
        let leader = meta["leader"]
            .as_str()
            .filter(|l| !l.is_empty() && meta["cluster_size"] == 3);
        let peers = meta["replicas"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        let current = peers.len() == 2 && peers.iter().all(|p| p["current"] == true);
        Ok((leader.map(str::to_owned), current))
    }
}
