//! A real `redis-server` for the tests: started on a free loopback port with
//! a temporary directory and no automatic snapshots, stopped, restarted on the same
//! port, paused and resumed; and a TCP link in front of it that a test can
//! cut, as a network partition between one replica and Redis; and a Redis
//! Cluster of six such servers (three primaries, a replica each).
//!
//! The binary is the one `harness::REDIS_SERVER` finds (`PATH`, `/usr/bin`,
//! `/usr/sbin`, or `TOWER_ETAG_REDIS_SERVER`).
#![allow(unreachable_pub)]

use std::{
    net::{SocketAddr, TcpListener as StdListener},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use crate::harness::REDIS_SERVER;

pub struct RedisServer {
    binary: PathBuf,
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
    /// More arguments for every start (TLS).
    extra: Vec<String>,
    /// The TLS port, beside the plain one the tests' own commands use.
    pub tls_port: Option<u16>,
}

impl RedisServer {
    /// Starts a server. Panics when this machine has no `redis-server`
    /// (the harness starts no test that needs one then, unless asked to).
    pub fn start() -> Self {
        Self::start_with(Vec::new(), None)
    }

    /// Starts a server in cluster mode, in no cluster yet; returns it and
    /// its cluster bus port.
    fn start_clustered() -> (Self, u16) {
        let bus = free_port();
        let extra = [
            "--cluster-enabled",
            "yes",
            "--cluster-node-timeout",
            "1000",
            // A replica that lost its primary for a while may still be
            // promoted (the tests make replicas miss writes on purpose).
            "--cluster-replica-validity-factor",
            "0",
            "--repl-diskless-sync-delay",
            "0",
            // The cluster bus's port, by default the port plus 10000: past
            // 65535 for a free port above 55535.
            "--cluster-port",
            &bus.to_string(),
        ]
        .map(str::to_owned)
        .to_vec();
        (Self::start_with(extra, None), bus)
    }

    /// Whether it runs (not killed).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// A field of `INFO` as text.
    pub fn info_text(&self, field: &str) -> Option<String> {
        let Ok(redis::Value::BulkString(info)) = self.command(&["INFO", "everything"]) else {
            return None;
        };
        let prefix = format!("{field}:");
        String::from_utf8_lossy(&info)
            .lines()
            .find_map(|line| Some(line.strip_prefix(&prefix)?.trim().to_owned()))
    }

    /// Starts a server that also listens with TLS on a port of its own:
    /// `files` are its certificate, its key and the CA that client
    /// certificates must chain to, which it requires when `clients`.
    pub fn start_tls(files: [&std::path::Path; 3], clients: bool) -> Self {
        let tls_port = free_port();
        let [certificate, key, ca] = files.map(|path| path.display().to_string());
        let extra = [
            "--tls-port",
            &tls_port.to_string(),
            "--tls-cert-file",
            &certificate,
            "--tls-key-file",
            &key,
            "--tls-ca-cert-file",
            &ca,
            "--tls-auth-clients",
            if clients { "yes" } else { "no" },
        ]
        .map(str::to_owned)
        .to_vec();
        Self::start_with(extra, Some(tls_port))
    }

    fn start_with(extra: Vec<String>, tls_port: Option<u16>) -> Self {
        let binary = REDIS_SERVER.path();
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("tower-etag-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut server = Self {
            binary,
            port,
            dir,
            child: None,
            extra,
            tls_port,
        };
        server.restart();
        server
    }

    /// The `rediss://` URL of the TLS port.
    pub fn tls_url(&self) -> String {
        format!(
            "rediss://127.0.0.1:{}/",
            self.tls_port.expect("a TLS server")
        )
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Starts the server again on the same port and waits until it answers:
    /// empty, since nothing is saved on its own, unless a test saved a
    /// snapshot with `SAVE`, which it then loads (as a crashed Redis does).
    pub fn restart(&mut self) {
        self.stop();
        let child = Command::new(&self.binary)
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.command(&["PING"]).is_err() {
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() >= deadline {
                // Why, in its own words (a build without TLS says so).
                let mut why = String::new();
                if let Some(stderr) = self.child.as_mut().and_then(|c| c.stderr.as_mut()) {
                    use std::io::Read;
                    if exited.is_some() {
                        let _ = stderr.read_to_string(&mut why);
                    }
                }
                panic!("redis-server did not start ({exited:?}): {why}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the server again without its snapshot: empty, as a Redis
    /// without persistence comes back from a crash.
    pub fn restart_empty(&mut self) {
        self.stop();
        let _ = std::fs::remove_file(self.dir.join("dump.rdb"));
        self.restart();
    }

    /// A field of `INFO` as a number (0 when absent).
    pub fn info(&self, field: &str) -> u64 {
        let Ok(redis::Value::BulkString(info)) = self.command(&["INFO"]) else {
            return 0;
        };
        let prefix = format!("{field}:");
        String::from_utf8_lossy(&info)
            .lines()
            .find_map(|line| line.strip_prefix(&prefix)?.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Stops the server (SIGKILL: as abrupt as a crash).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP: the server keeps its connections but answers nothing.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Runs one command with a fresh connection of the redis client.
    pub fn command(&self, args: &[&str]) -> redis::RedisResult<redis::Value> {
        let client = redis::Client::open(self.url())?;
        let mut connection = client.get_connection_with_timeout(Duration::from_secs(1))?;
        let mut command = redis::cmd(args[0]);
        for arg in &args[1..] {
            command.arg(*arg);
        }
        command.query(&mut connection)
    }

    /// Every key under `prefix`.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let client = redis::Client::open(self.url()).unwrap();
        let mut connection = client.get_connection().unwrap();
        redis::cmd("KEYS")
            .arg(format!("{prefix}:*"))
            .query(&mut connection)
            .unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // SIGKILL ends a paused server too.
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis Cluster on loopback: `nodes[0..3]` start as the primaries of
/// slots 0–5460, 5461–10922 and 10923–16383, and `nodes[i + 3]` as the
/// replica of `nodes[i]`. Node timeout 1 s: a killed primary's replica is
/// promoted some 2–3 s later.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start() -> Self {
        let (nodes, buses): (Vec<RedisServer>, Vec<u16>) =
            (0..6).map(|_| RedisServer::start_clustered()).unzip();
        let ranges = [("0", "5460"), ("5461", "10922"), ("10923", "16383")];
        for (node, (from, to)) in nodes.iter().zip(ranges) {
            node.command(&["CLUSTER", "ADDSLOTSRANGE", from, to])
                .unwrap();
        }
        for (node, bus) in nodes.iter().zip(&buses).skip(1) {
            let (port, bus) = (node.port.to_string(), bus.to_string());
            nodes[0]
                .command(&["CLUSTER", "MEET", "127.0.0.1", &port, &bus])
                .unwrap();
        }
        let cluster = Self { nodes };
        cluster.wait("every node knows the others", |node| {
            node.cluster_nodes().lines().count() == 6
        });
        for i in 0..3 {
            let id = cluster.nodes[i].node_id();
            cluster.nodes[i + 3]
                .command(&["CLUSTER", "REPLICATE", &id])
                .unwrap();
        }
        cluster.wait_healthy();
        cluster
    }

    /// Waits until every running node sees the cluster as `ok` with three
    /// primaries, and every running replica is in sync with its primary.
    pub fn wait_healthy(&self) {
        self.wait("a healthy cluster with synced replicas", |node| {
            let ok = node.command(&["CLUSTER", "INFO"]).ok().is_some_and(|info| {
                let info = redis::from_redis_value::<String>(info).unwrap_or_default();
                info.contains("cluster_state:ok")
            });
            let synced = match node.info_text("role").as_deref() {
                Some("master") => true,
                Some("slave") => node.info_text("master_link_status").as_deref() == Some("up"),
                _ => false,
            };
            ok && synced
        });
        self.wait("three primaries", |node| {
            node.cluster_nodes()
                .lines()
                .filter(|line| line.contains("master") && !line.contains("fail"))
                .count()
                == 3
        });
    }

    fn wait(&self, what: &str, mut done: impl FnMut(&RedisServer) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.nodes.iter().filter(|n| n.is_running()).all(&mut done) {
            assert!(
                Instant::now() < deadline,
                "cluster: timed out waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The nodes' URLs, as seeds.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The index of the node that is now the primary of `slot`.
    pub fn primary_of(&self, slot: u16) -> usize {
        let asked = self.nodes.iter().find(|n| n.is_running()).unwrap();
        let slots = asked.command(&["CLUSTER", "SLOTS"]).unwrap();
        let slots: Vec<(u16, u16, (String, u16))> = redis::from_redis_value(slots)
            .map(|ranges: Vec<Vec<redis::Value>>| {
                ranges
                    .into_iter()
                    .map(|range| {
                        let start = redis::from_redis_value(range[0].clone()).unwrap();
                        let end = redis::from_redis_value(range[1].clone()).unwrap();
                        let node: Vec<redis::Value> =
                            redis::from_redis_value(range[2].clone()).unwrap();
                        let host = redis::from_redis_value(node[0].clone()).unwrap();
                        let port = redis::from_redis_value(node[1].clone()).unwrap();
                        (start, end, (host, port))
                    })
                    .collect()
            })
            .unwrap();
        let port = slots
            .iter()
            .find(|(start, end, _)| (*start..=*end).contains(&slot))
            .map(|(_, _, (_, port))| *port)
            .expect("every slot served");
        self.nodes.iter().position(|n| n.port == port).unwrap()
    }

    /// The index of the replica of the primary `primary`.
    pub fn replica_of(&self, primary: usize) -> usize {
        let id = self.nodes[primary].node_id();
        self.nodes
            .iter()
            .position(|n| {
                n.is_running()
                    && n.cluster_nodes().lines().any(|line| {
                        line.contains("myself") && line.contains("slave") && line.contains(&id)
                    })
            })
            .expect("a replica")
    }

    /// A graceful failover: the replica `replica` takes over its primary's
    /// slots once it has every write; returns once the cluster agrees.
    pub fn failover(&self, replica: usize) {
        self.nodes[replica]
            .command(&["CLUSTER", "FAILOVER"])
            .unwrap();
        self.wait_for_role(replica, "master");
        self.wait_healthy();
    }

    /// Waits until `replica` has every write `primary` made.
    pub fn wait_replicated(&self, primary: usize, replica: usize) {
        let offset = |node: usize, field: &str| self.nodes[node].info(field);
        self.wait("the replica to catch up", |_| {
            offset(replica, "slave_repl_offset") >= offset(primary, "master_repl_offset")
        });
    }

    /// Fills the replication stream from `primary` to its paused replica
    /// with 32 MiB, past what the sockets between them buffer: what the
    /// primary writes next stays in its own buffer, and is lost with it.
    pub fn clog_replication(&self, primary: usize) {
        let key = (0..)
            .map(|n| format!("clog-{n}"))
            .find(|key| {
                let slot = self.nodes[primary]
                    .command(&["CLUSTER", "KEYSLOT", key])
                    .ok()
                    .and_then(|slot| redis::from_redis_value::<u16>(slot).ok())
                    .unwrap();
                self.primary_of(slot) == primary
            })
            .unwrap();
        let value = "x".repeat(32 << 20);
        self.nodes[primary].command(&["SET", &key, &value]).unwrap();
    }

    /// Moves hash slot `slot`, its keys included, from primary `from` to
    /// primary `to`, as `redis-cli --cluster reshard` does: `IMPORTING` and
    /// `MIGRATING`, `MIGRATE` of its keys, then `SETSLOT … NODE` on every
    /// primary.
    pub fn migrate_slot(&self, slot: u16, from: usize, to: usize) {
        let (slot, from_id, to_id) = (
            slot.to_string(),
            self.nodes[from].node_id(),
            self.nodes[to].node_id(),
        );
        self.nodes[to]
            .command(&["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id])
            .unwrap();
        self.nodes[from]
            .command(&["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to_id])
            .unwrap();
        loop {
            let keys: Vec<String> = self.nodes[from]
                .command(&["CLUSTER", "GETKEYSINSLOT", &slot, "100"])
                .ok()
                .and_then(|keys| redis::from_redis_value(keys).ok())
                .unwrap();
            if keys.is_empty() {
                break;
            }
            let port = self.nodes[to].port.to_string();
            let mut args = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
            args.extend(keys.iter().map(String::as_str));
            self.nodes[from].command(&args).unwrap();
        }
        for node in &self.nodes {
            if node.is_running() && node.info_text("role").as_deref() == Some("master") {
                node.command(&["CLUSTER", "SETSLOT", &slot, "NODE", &to_id])
                    .unwrap();
            }
        }
    }

    /// Waits until node `index` has `role` (`master`, `slave`).
    pub fn wait_for_role(&self, index: usize, role: &str) {
        self.wait(role, |_| {
            self.nodes[index].info_text("role").as_deref() == Some(role)
        });
    }

    /// Kills the primary `primary` (SIGKILL) and waits until its replica is
    /// promoted; then starts it again, as the new primary's replica.
    pub fn kill_and_wait_for_promotion(&mut self, primary: usize) {
        let replica = self.replica_of(primary);
        self.nodes[primary].stop();
        self.wait_for_role(replica, "master");
        self.nodes[primary].restart();
        self.wait_healthy();
    }
}

impl RedisServer {
    fn cluster_nodes(&self) -> String {
        self.command(&["CLUSTER", "NODES"])
            .ok()
            .and_then(|nodes| redis::from_redis_value(nodes).ok())
            .unwrap_or_default()
    }

    /// This node's id in its cluster.
    pub fn node_id(&self) -> String {
        self.command(&["CLUSTER", "MYID"])
            .ok()
            .and_then(|id| redis::from_redis_value(id).ok())
            .unwrap()
    }
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A TCP link to `target` that can be cut (new connections refused, open
/// ones closed) and restored, or switched to another server (open
/// connections closed), as a failover behind one address; and slowed: what
/// the client sends is held for a while first.
#[derive(Clone)]
pub struct Link {
    pub addr: SocketAddr,
    up: Arc<AtomicBool>,
    /// How long what the client sends is held (µs).
    delay: Arc<AtomicU64>,
    /// The names of the commands clients sent, in order (upper case).
    commands: Arc<std::sync::Mutex<Vec<String>>>,
    /// The same, in round trips: the commands sent before a reply came.
    rounds: Arc<std::sync::Mutex<Rounds>>,
    target: Arc<std::sync::Mutex<SocketAddr>>,
    generation: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Link {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let (generation, _) = tokio::sync::watch::channel(0u64);
        let generation = Arc::new(generation);
        let target = Arc::new(std::sync::Mutex::new(target));
        let delay = Arc::new(AtomicU64::new(0));
        let commands = Arc::new(std::sync::Mutex::new(Vec::new()));
        let rounds = Arc::new(std::sync::Mutex::new(Rounds::default()));
        let link = Self {
            addr,
            up: up.clone(),
            delay: delay.clone(),
            commands: commands.clone(),
            rounds: rounds.clone(),
            target: target.clone(),
            generation: generation.clone(),
        };
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                if !up.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let mut cut = generation.subscribe();
                let target = *target.lock().unwrap();
                let delay = delay.clone();
                let commands = commands.clone();
                let rounds = rounds.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (mut from_client, mut to_client) = client.into_split();
                    let (mut from_server, mut to_server) = server.into_split();
                    let up = async {
                        let mut buffer = vec![0; 64 * 1024];
                        let mut parser = Commands::default();
                        loop {
                            let n = from_client.read(&mut buffer).await?;
                            if n == 0 {
                                return to_server.shutdown().await;
                            }
                            let names = parser.feed(&buffer[..n]);
                            rounds.lock().unwrap().sent(&names);
                            commands.lock().unwrap().extend(names);
                            let held = delay.load(Ordering::SeqCst);
                            if held > 0 {
                                tokio::time::sleep(Duration::from_micros(held)).await;
                            }
                            to_server.write_all(&buffer[..n]).await?;
                        }
                    };
                    let down = async {
                        let mut buffer = vec![0; 64 * 1024];
                        loop {
                            let n = from_server.read(&mut buffer).await?;
                            if n == 0 {
                                return to_client.shutdown().await;
                            }
                            rounds.lock().unwrap().answered();
                            to_client.write_all(&buffer[..n]).await?;
                        }
                    };
                    tokio::select! {
                        _ = async { tokio::join!(up, down) } => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        link
    }

    pub fn url(&self) -> String {
        format!("redis://{}/", self.addr)
    }

    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    /// The names of the commands clients sent since the last call.
    pub fn take_commands(&self) -> Vec<String> {
        std::mem::take(&mut *self.commands.lock().unwrap())
    }

    /// The commands clients sent since the last call, by round trip: each
    /// group went out before a reply came back.
    pub fn take_rounds(&self) -> Vec<Vec<String>> {
        std::mem::take(&mut self.rounds.lock().unwrap().rounds)
    }

    /// Holds what clients send for `delay` before it goes on.
    pub fn slow_down(&self, delay: Duration) {
        self.delay.store(delay.as_micros() as u64, Ordering::SeqCst);
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }

    /// Closes the open connections; new ones go to `target`.
    pub fn switch_to(&self, target: SocketAddr) {
        *self.target.lock().unwrap() = target;
        self.generation.send_modify(|g| *g += 1);
    }
}

/// Commands grouped by round trip.
#[derive(Default)]
struct Rounds {
    rounds: Vec<Vec<String>>,
    /// Whether a reply came since the last command: the next one starts a
    /// round.
    answered: bool,
}

impl Rounds {
    fn sent(&mut self, names: &[String]) {
        if names.is_empty() {
            return;
        }
        if self.answered || self.rounds.is_empty() {
            self.rounds.push(Vec::new());
            self.answered = false;
        }
        self.rounds.last_mut().unwrap().extend_from_slice(names);
    }

    fn answered(&mut self) {
        self.answered = true;
    }
}

/// Reads command names out of what a client sends: RESP arrays of bulk
/// strings (`*N`, then N times `$len` and the bytes), which is all a
/// client sends once connected.
#[derive(Default)]
struct Commands {
    pending: Vec<u8>,
}

impl Commands {
    /// Feeds bytes; returns the names of the commands completed by them.
    fn feed(&mut self, bytes: &[u8]) -> Vec<String> {
        self.pending.extend_from_slice(bytes);
        let mut names = Vec::new();
        loop {
            match Self::parse(&self.pending) {
                Some((name, used)) => {
                    names.push(name);
                    self.pending.drain(..used);
                }
                None => return names,
            }
        }
    }

    /// The first complete command in `input`: its name and its length.
    fn parse(input: &[u8]) -> Option<(String, usize)> {
        let line = |at: usize| -> Option<(&[u8], usize)> {
            let end = input.get(at..)?.windows(2).position(|w| w == b"\r\n")? + at;
            Some((&input[at..end], end + 2))
        };
        let (header, mut at) = line(0)?;
        let count: usize = std::str::from_utf8(header.strip_prefix(b"*")?)
            .ok()?
            .parse()
            .ok()?;
        let mut name = String::new();
        for i in 0..count {
            let (length, start) = line(at)?;
            let length: usize = std::str::from_utf8(length.strip_prefix(b"$")?)
                .ok()?
                .parse()
                .ok()?;
            let end = start + length;
            if input.len() < end + 2 {
                return None;
            }
            if i == 0 {
                name = String::from_utf8_lossy(&input[start..end]).to_uppercase();
            }
            at = end + 2;
        }
        Some((name, at))
    }
}
