//! Helpers for tests that run real `lifeline` daemons as processes.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const PASSPHRASE: &str = "daemon test passphrase";

pub fn lifeline(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lifeline"));
    cmd.arg("--data-dir")
        .arg(dir)
        .env("LIFELINE_PASSPHRASE", PASSPHRASE)
        .env_remove("LIFELINE_CONTROL_SOCKET")
        .env_remove("LIFELINE_CONFIG")
        .env_remove("XDG_CONFIG_HOME");
    cmd
}

pub fn ok(output: Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The command failed, and its error message contains `expected`.
pub fn fails(output: Output, expected: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "expected a failure mentioning {expected:?}; it succeeded: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(
        stderr.contains(expected),
        "expected {expected:?} in the error, got: {stderr}"
    );
}

pub fn json(dir: &Path, args: &[&str]) -> serde_json::Value {
    let out = lifeline(dir).arg("--json").args(args).output().unwrap();
    serde_json::from_str(&ok(out, &args.join(" "))).unwrap()
}

/// A plain HTTP GET on loopback: the status code and the body.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (code, body)
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One daemon process; killed when dropped.
pub struct Daemon {
    pub dir: PathBuf,
    pub id: String,
    pub port: u16,
    pub bootstrap: Vec<String>,
    /// Extra arguments for `lifeline node`.
    pub args: Vec<String>,
    /// Run inside this network namespace.
    pub netns: Option<String>,
    /// Its `LIFELINE_LOG` (what it logs into `node.log`).
    pub log_filter: String,
    child: Option<Child>,
}

/// What daemons log unless a test says otherwise.
pub const LOG_FILTER: &str = "info,lifeline_node=debug,libp2p=warn";

impl Daemon {
    pub fn new(root: &Path, name: &str) -> Self {
        let dir = root.join(name);
        let out = lifeline(&dir).args(["key", "generate"]).output().unwrap();
        ok(out, "key generate");
        let shown = ok(
            lifeline(&dir).args(["key", "show"]).output().unwrap(),
            "key show",
        );
        let id = shown
            .lines()
            .find_map(|l| l.strip_prefix("id:"))
            .unwrap()
            .trim()
            .to_string();
        Self {
            dir,
            id,
            port: free_port(),
            bootstrap: Vec::new(),
            args: Vec::new(),
            netns: None,
            log_filter: LOG_FILTER.to_string(),
            child: None,
        }
    }

    /// A second node that runs this node's key (its data folder copied
    /// before this one started: the key and nothing else), in `root/name`.
    pub fn clone_key(&self, root: &Path, name: &str) -> Self {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for entry in std::fs::read_dir(&self.dir).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_file() && entry.file_name() != "node.log" {
                std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
            }
        }
        Self {
            dir,
            id: self.id.clone(),
            port: free_port(),
            bootstrap: Vec::new(),
            args: Vec::new(),
            netns: None,
            log_filter: LOG_FILTER.to_string(),
            child: None,
        }
    }

    pub fn addr(&self) -> String {
        format!("/ip4/127.0.0.1/tcp/{}/p2p/{}", self.port, self.id)
    }

    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("node.log"))
            .unwrap();
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_lifeline")])
                    .arg("--data-dir")
                    .arg(&self.dir)
                    .env("LIFELINE_PASSPHRASE", PASSPHRASE);
                cmd.arg("node");
                if !self.args.iter().any(|a| a == "--listen") {
                    cmd.args(["--listen", "/ip4/0.0.0.0/tcp/4100"]);
                }
                cmd
            }
            None => {
                let mut cmd = lifeline(&self.dir);
                cmd.args(["node", "--no-mdns", "--listen"])
                    .arg(format!("/ip4/127.0.0.1/tcp/{}", self.port));
                cmd
            }
        };
        if !self.args.iter().any(|a| a == "--metrics") {
            cmd.args(["--metrics", "off"]);
        }
        if !self.args.iter().any(|a| a == "--web") {
            cmd.args(["--web", "off"]);
        }
        cmd.args(&self.args)
            .env("LIFELINE_LOG", &self.log_filter)
            .stdout(Stdio::null())
            .stderr(log);
        for b in &self.bootstrap {
            cmd.arg("--bootstrap").arg(b);
        }
        self.child = Some(cmd.spawn().unwrap());
        self.wait_for("its control socket", Duration::from_secs(30), |d| {
            lifeline(&d.dir)
                .arg("status")
                .output()
                .is_ok_and(|o| o.status.success())
        });
    }

    pub fn kill9(&mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }

    /// The running daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// CPU time (user and system) the running daemon has used so far.
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        // After the command name in parentheses: state is field 3, utime 14, stime 15.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        // In USER_HZ, which Linux fixes at 100 for what /proc reports.
        Duration::from_millis(ticks * 10)
    }

    /// Sends `signal` (STOP, CONT, ...) to the running daemon.
    pub fn signal(&self, signal: &str) {
        let pid = self.pid();
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} {pid} failed");
    }

    pub fn status(&self) -> serde_json::Value {
        json(&self.dir, &["status"])
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("node.log")).unwrap_or_default()
    }

    /// Writes this node's contact card into `dir`; its path.
    pub fn card_file(&self, dir: &Path) -> PathBuf {
        let path = dir.join(format!("{}.card", self.id));
        let card = ok(
            lifeline(&self.dir).args(["key", "card"]).output().unwrap(),
            "key card",
        );
        std::fs::write(&path, card).unwrap();
        path
    }

    /// A `lifeline send` from this node to `to`, sealed to `to`'s card.
    pub fn send_to(&self, to: &Daemon, card: &Path, args: &[&str]) -> Command {
        let mut cmd = lifeline(&self.dir);
        cmd.arg("send")
            .args(args)
            .args(["--to", &to.id, "--card"])
            .arg(card);
        cmd
    }

    /// Waits until `peer` is a neighbour with the mesh protocol running, on
    /// an address containing `via` ("" for any).
    pub fn wait_for_mesh_peer(&self, peer: &Daemon, via: &str, limit: Duration) {
        let what = format!("a mesh link to {} via {via:?}", peer.id);
        self.wait_for(&what, limit, |d| {
            json(&d.dir, &["peers"])
                .as_array()
                .unwrap()
                .iter()
                .any(|p| {
                    p["id"] == peer.id.as_str()
                        && p["mesh"] == true
                        && p["addrs"].to_string().contains(via)
                })
        });
    }

    /// Waits until this node holds a reservation on a relay; its relayed
    /// address (ending in this node's id).
    pub fn wait_for_circuit(&self, limit: Duration) -> String {
        self.wait_for_value("a reservation on a relay", limit, |d| {
            d.status()["listen"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|a| a.as_str())
                .find(|a| a.contains("/p2p-circuit"))
                .map(String::from)
        })
    }

    /// Waits until this node has a route to `to`.
    pub fn wait_for_route(&self, to: &Daemon, limit: Duration) {
        self.wait_for(&format!("a route to {}", to.id), limit, |d| {
            json(&d.dir, &["routes"])
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["destination"] == to.id.as_str())
        });
    }

    pub fn wait_for(&self, what: &str, limit: Duration, mut done: impl FnMut(&Self) -> bool) {
        self.wait_for_value(what, limit, |d| done(d).then_some(()));
    }

    /// Polls `found` until it gives a value, failing with the node's log after `limit`.
    pub fn wait_for_value<T>(
        &self,
        what: &str,
        limit: Duration,
        mut found: impl FnMut(&Self) -> Option<T>,
    ) -> T {
        let start = Instant::now();
        loop {
            if let Some(v) = found(self) {
                return v;
            }
            assert!(
                start.elapsed() < limit,
                "{} did not reach {what} within {limit:?}; its log:\n{}",
                self.id,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Writes a genesis for a chain whose authorities are `nodes`, one block a
/// second, into `root` and into each node's data folder; its path in `root`.
pub fn genesis_of(root: &Path, nodes: &[Daemon]) -> PathBuf {
    genesis_with_heartbeat(root, nodes, 1)
}

/// As [`genesis_of`], with an empty block at most every `heartbeat_secs`.
pub fn genesis_with_heartbeat(root: &Path, nodes: &[Daemon], heartbeat_secs: u32) -> PathBuf {
    let genesis = root.join("genesis.toml");
    let mut cmd = lifeline(root);
    cmd.args([
        "chain",
        "genesis",
        "--period-secs",
        "1",
        "--heartbeat-secs",
        &heartbeat_secs.to_string(),
        "--out",
    ])
    .arg(&genesis);
    for n in nodes {
        cmd.arg("--authority").arg(&n.id);
    }
    ok(cmd.output().unwrap(), "chain genesis");
    for n in nodes {
        std::fs::copy(&genesis, n.dir.join("genesis.toml")).unwrap();
    }
    genesis
}

/// The namespaces and links, removed when dropped.
pub struct Line {
    pub names: Vec<String>,
}

pub fn ip(args: &[&str]) -> Result<(), String> {
    ip_tool("ip", args)
}

/// Runs `tool` (ip or tc, from iproute2) with `args`.
pub fn ip_tool(tool: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(tool)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `{tool}` (install iproute2): {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{tool} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Line {
    /// `nodes` namespaces in a line, named with `prefix`.
    pub fn new(prefix: &str, nodes: usize) -> Result<Self, String> {
        let tag = std::process::id() % 100_000;
        let line = Self {
            names: (0..nodes).map(|i| format!("{prefix}{tag}n{i}")).collect(),
        };
        for ns in &line.names {
            ip(&["netns", "add", ns])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        for i in 0..nodes - 1 {
            let (left, right) = (&line.names[i], &line.names[i + 1]);
            let (l, r) = (format!("v{i}l"), format!("v{i}r"));
            ip(&[
                "link", "add", &l, "netns", left, "type", "veth", "peer", "name", &r, "netns",
                right,
            ])?;
            ip(&[
                "-n",
                left,
                "addr",
                "add",
                &format!("10.77.{i}.1/24"),
                "dev",
                &l,
            ])?;
            ip(&[
                "-n",
                right,
                "addr",
                "add",
                &format!("10.77.{i}.2/24"),
                "dev",
                &r,
            ])?;
            ip(&["-n", left, "link", "set", &l, "up"])?;
            ip(&["-n", right, "link", "set", &r, "up"])?;
        }
        Ok(line)
    }

    /// Takes the link between node `i` and node `i + 1` down or up.
    pub fn set_link(&self, i: usize, up: bool) {
        let state = if up { "up" } else { "down" };
        ip(&[
            "-n",
            &self.names[i],
            "link",
            "set",
            &format!("v{i}l"),
            state,
        ])
        .unwrap();
        ip(&[
            "-n",
            &self.names[i + 1],
            "link",
            "set",
            &format!("v{i}r"),
            state,
        ])
        .unwrap();
    }
}

impl Line {
    /// `nodes` namespaces for a test or bench, or `None` when
    /// `LIFELINE_SKIP_NETNS=1` skips it; anything else that keeps them from
    /// being made fails, saying why.
    pub fn for_test(prefix: &str, nodes: usize) -> Option<Self> {
        if std::env::var_os("LIFELINE_SKIP_NETNS").is_some_and(|v| v == "1") {
            eprintln!("skipped: LIFELINE_SKIP_NETNS=1");
            return None;
        }
        match Self::new(prefix, nodes) {
            Ok(line) => Some(line),
            Err(e) => panic!(
                "cannot build {nodes} network namespaces: {e}\n\
                 This needs root and iproute2 (CI runs as root). \
                 Set LIFELINE_SKIP_NETNS=1 to skip it explicitly."
            ),
        }
    }

    /// Starts one daemon in each namespace (they find their neighbours by mDNS).
    pub fn start_daemons(&self, root: &Path) -> Vec<Daemon> {
        self.start_daemons_with(root, &[])
    }

    /// [`Line::start_daemons`], each daemon with `args` (in a namespace, a
    /// `--listen` there replaces the default TCP one).
    pub fn start_daemons_with(&self, root: &Path, args: &[&str]) -> Vec<Daemon> {
        self.start_daemons_logging(root, args, LOG_FILTER)
    }

    /// [`Line::start_daemons_with`], the daemons logging `log_filter`.
    pub fn start_daemons_logging(
        &self,
        root: &Path,
        args: &[&str],
        log_filter: &str,
    ) -> Vec<Daemon> {
        self.names
            .iter()
            .enumerate()
            .map(|(i, ns)| {
                let mut d = Daemon::new(root, &format!("n{i}"));
                d.netns = Some(ns.clone());
                d.args = args.iter().map(|a| (*a).to_string()).collect();
                d.log_filter = log_filter.to_string();
                d.start();
                d
            })
            .collect()
    }

    /// Limits every link to `rate_mbit` per direction, like a radio hop
    /// (a token bucket: tbf; the kernels here have no netem for delay).
    pub fn shape(&self, rate_mbit: u32) -> Result<(), String> {
        for (ns, dev) in self.link_ends() {
            ip_tool(
                "tc",
                &[
                    "-n",
                    ns,
                    "qdisc",
                    "add",
                    "dev",
                    &dev,
                    "root",
                    "tbf",
                    "rate",
                    &format!("{rate_mbit}mbit"),
                    "burst",
                    "32kb",
                    "latency",
                    "200ms",
                ],
            )?;
        }
        Ok(())
    }

    /// Takes the limits [`Line::shape`] set off again.
    pub fn unshape(&self) -> Result<(), String> {
        for (ns, dev) in self.link_ends() {
            ip_tool("tc", &["-n", ns, "qdisc", "del", "dev", &dev, "root"])?;
        }
        Ok(())
    }

    /// Each end of each link: its namespace and its device.
    fn link_ends(&self) -> impl Iterator<Item = (&str, String)> {
        (0..self.names.len() - 1).flat_map(move |i| {
            [
                (self.names[i].as_str(), format!("v{i}l")),
                (self.names[i + 1].as_str(), format!("v{i}r")),
            ]
        })
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        for ns in &self.names {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

/// Installs the npm packages of `tests/NAME` (its `package-lock.json`,
/// with `npm ci`) into the cargo target folder, where later runs find them
/// again; copies `files` beside them. Returns that folder.
pub fn npm_packages(name: &str, files: &[&str]) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(name);
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join(format!("{name}-js"));
    std::fs::create_dir_all(&target).unwrap();
    let lock = std::fs::read(source.join("package-lock.json")).unwrap();
    let stamp = target.join("installed.lock");
    let installed = std::fs::read(&stamp).is_ok_and(|s| s == lock);
    for file in ["package.json", "package-lock.json"].iter().chain(files) {
        std::fs::copy(source.join(file), target.join(file)).unwrap();
    }
    if !installed {
        let out = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&target)
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run npm ({e}); install Node.js and npm (Debian: nodejs npm; \
                     `make setup` does)"
                )
            });
        assert!(
            out.status.success(),
            "npm ci in {} failed (is the npm registry reachable?):\n{}",
            target.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(&stamp, &lock).unwrap();
    }
    target
}

/// A CAP test alert (consensus/tests/cap), its 2036-11-21 moved to
/// yesterday and 2036-11-22 to tomorrow (UTC) so that it is in force now.
pub fn cap_alert_in_force(name: &str, into: &Path) -> (PathBuf, String) {
    let day = |offset: i64| {
        let now = lifeline_crypto::Timestamp::from_system_time(std::time::SystemTime::now());
        let at = if offset < 0 {
            now.saturating_sub(Duration::from_secs(86_400))
        } else {
            now.saturating_add(Duration::from_secs(86_400))
        };
        lifeline_consensus::cap::format_time(at)[..10].to_owned()
    };
    let original = std::fs::read_to_string(format!(
        "{}/../consensus/tests/cap/{name}.xml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
    .replace("2036-11-21", &day(-1))
    .replace("2036-11-22", &day(1));
    let path = into.join(format!("{name}.xml"));
    std::fs::write(&path, &original).unwrap();
    (path, original)
}

/// A disk as slow as a worn SD card, for the daemons moved into it: a
/// cgroup (v1 `blkio`) that throttles synced writes to the block device
/// holding `dir` to `iops` a second. Removed when dropped.
pub struct SlowDisk {
    path: PathBuf,
}

impl SlowDisk {
    /// Throttles writes to the device of `dir`; fails, saying why, where
    /// the kernel has no `blkio` controller or `dir` is on no block device.
    pub fn new(dir: &Path, iops: u32) -> Result<Self, String> {
        use std::os::unix::fs::MetadataExt;
        let root = Path::new("/sys/fs/cgroup/blkio");
        if !root.join("cgroup.procs").exists() {
            return Err("no cgroup v1 blkio controller at /sys/fs/cgroup/blkio".into());
        }
        let dev = std::fs::metadata(dir).map_err(|e| e.to_string())?.dev();
        let (major, minor) = (
            ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0xfff),
            ((dev >> 12) & 0xffff_ff00) | (dev & 0xff),
        );
        let block = format!("/sys/dev/block/{major}:{minor}");
        if !Path::new(&block).exists() {
            return Err(format!(
                "{} is on device {major}:{minor}, which is no block device (overlay or tmpfs?)",
                dir.display()
            ));
        }
        let path = root.join(format!("lifeline-test-{}", std::process::id()));
        std::fs::create_dir_all(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let disk = Self { path };
        std::fs::write(
            disk.path.join("blkio.throttle.write_iops_device"),
            format!("{major}:{minor} {iops}"),
        )
        .map_err(|e| format!("cannot throttle {major}:{minor}: {e}"))?;
        Ok(disk)
    }

    /// Moves process `pid` (all its threads) onto the slow disk.
    pub fn add(&self, pid: u32) {
        std::fs::write(self.path.join("cgroup.procs"), pid.to_string()).unwrap();
    }
}

impl Drop for SlowDisk {
    fn drop(&mut self) {
        // Whatever still runs in it goes back to the root first.
        if let Ok(procs) = std::fs::read_to_string(self.path.join("cgroup.procs")) {
            for pid in procs.split_whitespace() {
                let _ = std::fs::write("/sys/fs/cgroup/blkio/cgroup.procs", pid);
            }
        }
        let _ = std::fs::remove_dir(&self.path);
    }
}
