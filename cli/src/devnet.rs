//! `lifeline devnet`: a local network of real daemons on loopback, with a
//! fresh chain, and a guided tour of what lifeline does: names on the chain,
//! an SOS across several hops and its acknowledgement, a message by name, an
//! official alert, a certified role.
//!
//! Each node is a `lifeline node` process with its own data folder, keystore
//! and config file, joined in a ring (each node allows only its two ring
//! neighbours), so that messages really cross relays.

use std::fs::File;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use clap::Args;
use lifeline_consensus::alert::{Alert, AlertForm, AlertStatus, sample_flood};
use lifeline_consensus::genesis::GenesisFile;
use lifeline_crypto::keystore::{KdfParams, Keystore};
use lifeline_crypto::{KeyBundle, NodeId};
use lifeline_node::pb::control as api;
use lifeline_node::pb::control::transact_request::Action;
use prost::Message as _;
use serde_json::json;

use crate::net::{Client, why};
use crate::paths;

/// Arguments of `lifeline devnet`.
#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
    lifeline devnet                      # 7 nodes, 3 of them authorities\n  \
    lifeline devnet --nodes 12 --authorities 5\n  \
    lifeline devnet --once               # the tour, then stop (for scripts)\n\n\
    While it runs, talk to any node from another terminal with the usual commands, \
    for example:\n  \
    LIFELINE_CONTROL_SOCKET=DIR/ana/control.sock lifeline inbox --watch")]
pub struct DevnetArgs {
    /// How many nodes
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u16).range(2..=40))]
    nodes: u16,
    /// How many of them are authorities (they seal the chain's blocks)
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=40))]
    authorities: u16,
    /// Seconds between blocks
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=60))]
    period_secs: u64,
    /// Keep the network's folders here, and leave them on exit
    /// [default: a temporary folder, removed on exit]
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Run the tour, then stop the network (exit status: whether it all worked)
    #[arg(long)]
    once: bool,
    /// Give every node these shapes of region codes, for alerts given by
    /// code only (GeoJSON; see docs/operators.md)
    #[arg(long, value_name = "FILE")]
    geocode_shapes: Option<PathBuf>,
}

/// Names of authority nodes, then of the others (in ring order after the
/// authorities). The SOS sender is always "ana".
const AGENCIES: &[&str] = &[
    "civil-protection",
    "fire-brigade",
    "red-cross",
    "thw",
    "police",
    "mountain-rescue",
    "coast-guard",
];
const PEOPLE: &[&str] = &[
    "shelter-north",
    "clinic",
    "ben",
    "shelter-south",
    "carla",
    "school-gym",
    "dan",
];

/// One node's process and files.
struct Node {
    name: String,
    id: NodeId,
    dir: PathBuf,
    socket: PathBuf,
    authority: bool,
    addr: String,
    /// Its web app's address (`http://127.0.0.1:PORT/`), once it is up.
    web: String,
    child: Option<Child>,
}

impl Node {
    fn log(&self) -> PathBuf {
        self.dir.join("node.log")
    }

    /// The last lines of its log, for an error message.
    fn log_tail(&self) -> String {
        let Ok(file) = File::open(self.log()) else {
            return String::new();
        };
        let lines: Vec<String> = std::io::BufReader::new(file)
            .lines()
            .map_while(Result::ok)
            .collect();
        let start = lines.len().saturating_sub(15);
        lines[start..].join("\n    ")
    }

    fn exited(&mut self) -> Option<String> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => Some(format!(
                "node {} stopped ({status}); the end of {}:\n    {}",
                self.name,
                self.log().display(),
                self.log_tail()
            )),
            _ => None,
        }
    }
}

/// The running network; stopping it on drop, even on an error.
struct Devnet {
    root: PathBuf,
    temporary: bool,
    nodes: Vec<Node>,
}

impl Drop for Devnet {
    fn drop(&mut self) {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        for n in &mut self.nodes {
            if let Some(child) = &n.child
                && let Ok(pid) = i32::try_from(child.id())
            {
                // SIGTERM: each node stops accepting, flushes and closes its database.
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        for n in &mut self.nodes {
            if let Some(mut child) = n.child.take() {
                loop {
                    match child.try_wait() {
                        Ok(Some(_)) | Err(_) => break,
                        Ok(None) if Instant::now() >= deadline => {
                            let _ = child.kill();
                            let _ = child.wait();
                            break;
                        }
                        Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                    }
                }
            }
        }
        if self.temporary {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

fn step(text: &str) {
    if std::io::stdout().is_terminal() {
        println!("\n\x1b[1m== {text}\x1b[0m");
    } else {
        println!("\n== {text}");
    }
}

/// A line of progress on standard error, rewritten in place on a terminal.
struct Progress {
    tty: bool,
    last: String,
}

impl Progress {
    fn new() -> Self {
        Self {
            tty: std::io::stderr().is_terminal(),
            last: String::new(),
        }
    }

    fn show(&mut self, text: String) {
        if text == self.last {
            return;
        }
        if self.tty {
            eprint!("\r\x1b[2K  {text}");
            let _ = std::io::stderr().flush();
        } else {
            eprintln!("  {text}");
        }
        self.last = text;
    }

    fn done(&mut self) {
        if self.tty && !self.last.is_empty() {
            eprintln!();
        }
        self.last.clear();
    }
}

/// Runs `lifeline devnet`.
pub fn run(args: DevnetArgs) -> Result<std::process::ExitCode> {
    if args.authorities > args.nodes {
        bail!(
            "--authorities {} is more than --nodes {}; give at most as many authorities as nodes",
            args.authorities,
            args.nodes
        );
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(devnet(args))?;
    Ok(std::process::ExitCode::SUCCESS)
}

fn names(nodes: usize, authorities: usize, sender: usize) -> Vec<String> {
    let mut people = PEOPLE.iter();
    (0..nodes)
        .map(|i| {
            if i < authorities {
                AGENCIES
                    .get(i)
                    .map_or_else(|| format!("authority-{}", i + 1), |s| (*s).to_owned())
            } else if i == sender {
                "ana".to_owned()
            } else {
                people
                    .next()
                    .map_or_else(|| format!("node-{}", i + 1), |s| (*s).to_owned())
            }
        })
        .collect()
}

/// Ring distance.
fn distance(a: usize, b: usize, n: usize) -> usize {
    let d = a.abs_diff(b);
    d.min(n - d)
}

/// The devnet's folder: a new temporary one, or `--dir` (which must be empty).
fn root_folder(dir: Option<&Path>) -> Result<(PathBuf, bool)> {
    match dir {
        Some(dir) => {
            if dir.exists()
                && std::fs::read_dir(dir)
                    .with_context(|| format!("cannot read {}", dir.display()))?
                    .next()
                    .is_some()
            {
                bail!(
                    "{} is not empty; give a new or empty folder to --dir (a devnet starts \
                     from nothing)",
                    dir.display()
                );
            }
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            let dir = dir
                .canonicalize()
                .with_context(|| format!("cannot resolve {}", dir.display()))?;
            Ok((dir, false))
        }
        None => {
            let dir = tempfile::Builder::new()
                .prefix("lifeline-devnet-")
                .tempdir()
                .context("cannot make a temporary folder")?;
            Ok((dir.keep(), true))
        }
    }
}

async fn devnet(args: DevnetArgs) -> Result<()> {
    let n = usize::from(args.nodes);
    let authorities = usize::from(args.authorities);
    let (root, temporary) = root_folder(args.dir.as_deref())?;
    let mut net = Devnet {
        root: root.clone(),
        temporary,
        nodes: Vec::new(),
    };
    // The SOS comes from the node farthest round the ring from the responder
    // (node 1), preferably not an authority.
    let responder = 1;
    let sender = (0..n)
        .filter(|&i| i != responder)
        .max_by_key(|&i| {
            (
                i >= authorities,
                distance(i, responder, n),
                std::cmp::Reverse(i),
            )
        })
        .unwrap_or(0);
    let names = names(n, authorities, sender);

    step(&format!(
        "Starting {n} lifeline nodes on this machine ({authorities} of them authorities) in {}",
        root.display()
    ));
    let passphrase = root.join("passphrase");
    let secret: [u8; 16] = rand::random();
    std::fs::write(
        &passphrase,
        format!(
            "devnet-{}\n",
            secret
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        ),
    )
    .context("cannot write the devnet's passphrase file")?;
    let mut progress = Progress::new();
    let mut rng = rand::rng();
    for (i, name) in names.iter().enumerate() {
        progress.show(format!("making keys for {name} ({}/{n})", i + 1));
        let dir = root.join(name);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let bundle = KeyBundle::generate(crate::keys::now(), &mut rng);
        let pass = std::fs::read_to_string(&passphrase)?;
        Keystore::at(paths::keystore(&dir))
            .create(
                &bundle,
                pass.trim_end().as_bytes(),
                KdfParams::DEFAULT,
                &mut rng,
            )
            .with_context(|| format!("cannot write {name}'s keystore"))?;
        net.nodes.push(Node {
            name: name.clone(),
            id: *bundle.identity.id(),
            socket: lifeline_node::control::default_socket(&dir),
            dir,
            authority: i < authorities,
            addr: String::new(),
            web: String::new(),
            child: None,
        });
    }
    progress.done();

    // A fresh chain: the first nodes are its authorities.
    let ids: Vec<NodeId> = net.nodes[..authorities].iter().map(|n| n.id).collect();
    let mut genesis = GenesisFile::new(&ids, SystemTime::now());
    genesis.period_secs = args.period_secs;
    genesis.heartbeat_secs = args.period_secs * 2;
    let genesis_text = genesis.to_toml().context("cannot write the genesis")?;
    let genesis_hash = genesis
        .to_genesis()
        .context("cannot make the genesis")?
        .hash();

    let exe = std::env::current_exe().context("cannot find the lifeline program itself")?;
    let shapes = match &args.geocode_shapes {
        Some(file) => {
            let file = std::fs::canonicalize(file).with_context(|| {
                format!("cannot find the geocode shapes file {}", file.display())
            })?;
            // A TOML string, escaped as TOML escapes (not as Rust's Debug).
            let path = toml::Value::String(file.display().to_string());
            format!("geocode_shapes = {path}\n")
        }
        None => String::new(),
    };
    for i in 0..n {
        progress.show(format!("starting {} ({}/{n})", net.nodes[i].name, i + 1));
        // A ring: each node knows the one before it (and the last also the
        // first), and lets in only its two neighbours.
        let mut bootstrap = Vec::new();
        if i > 0 {
            bootstrap.push(net.nodes[i - 1].addr.clone());
        }
        if i == n - 1 && n > 2 {
            bootstrap.push(net.nodes[0].addr.clone());
        }
        let allow: Vec<String> = [(i + n - 1) % n, (i + 1) % n]
            .iter()
            .map(|&j| net.nodes[j].id.to_string())
            .collect();
        let node = &mut net.nodes[i];
        std::fs::write(node.dir.join("genesis.toml"), &genesis_text)?;
        let config = format!(
            "# Written by `lifeline devnet`: node {name} of a local test network.\n\
             listen = [\"/ip4/127.0.0.1/tcp/0\"]\n\
             mdns = false\n\
             metrics = \"off\"\n\
             web = \"127.0.0.1:0\"\n\
             bootstrap = {bootstrap:?}\n\
             allow_peers = {allow:?}\n{shapes}",
            name = node.name,
        );
        let config_path = node.dir.join("node.toml");
        std::fs::write(&config_path, config)?;
        let log = File::create(node.log())
            .with_context(|| format!("cannot create {}", node.log().display()))?;
        let mut command = Command::new(&exe);
        // The devnet's nodes take nothing from the caller's lifeline settings.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("LIFELINE_") && key != "LIFELINE_LOG" {
                command.env_remove(key);
            }
        }
        command
            .arg("--data-dir")
            .arg(&node.dir)
            .arg("--passphrase-file")
            .arg(&passphrase)
            .arg("node")
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        node.child = Some(
            command
                .spawn()
                .with_context(|| format!("cannot start {}", exe.display()))?,
        );
        let status = wait_until_up(node).await?;
        let listen = status
            .listen_addrs
            .iter()
            .find(|a| a.contains("/tcp/"))
            .with_context(|| format!("{} listens on no TCP address", node.name))?;
        node.addr = format!("{listen}/p2p/{}", node.id);
        // The node takes a free port itself when it binds: one picked here
        // beforehand could be taken by the time the node starts (another
        // node's connection got one once, and the devnet failed).
        node.web = status
            .web_urls
            .first()
            .with_context(|| format!("{} serves no web app", node.name))?
            .clone();
    }
    progress.done();
    for node in &net.nodes {
        let role = if node.authority { "authority" } else { "node" };
        println!(
            "  {:<18} {role:<9} {}  web app {}",
            node.name, node.id, node.web
        );
    }
    println!(
        "  chain genesis {genesis_hash}, one block every {}s",
        args.period_secs
    );

    let mut clients = Vec::with_capacity(n);
    for node in &net.nodes {
        clients.push(lifeline_node::client::connect(&node.socket).await?);
    }

    step("Waiting until every node has a route to every other, and the chain finalizes");
    let started = Instant::now();
    loop {
        check_alive(&mut net)?;
        let mut routed = 0;
        let mut finalized = u64::MAX;
        for c in &mut clients {
            let s = c
                .status(api::StatusRequest {})
                .await
                .map_err(why)?
                .into_inner();
            if s.routes as usize >= n - 1 {
                routed += 1;
            }
            finalized = finalized.min(s.chain.map_or(0, |c| c.finalized_number));
        }
        progress.show(format!(
            "{routed}/{n} nodes reach all others; every node has finalized block {finalized}"
        ));
        if routed == n && finalized >= 1 {
            break;
        }
        if started.elapsed() > Duration::from_secs(120) {
            progress.done();
            bail!(
                "the network did not come together within 2 minutes; the nodes' logs are in {}",
                root.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    progress.done();
    println!(
        "  ready after {:.1}s: the ring is routed and the chain is final up to block {}",
        started.elapsed().as_secs_f64(),
        chain(&mut clients[0]).await?.finalized_number
    );

    // One person is left off the chain, to try `lifeline identity register`.
    let unregistered: Vec<String> = (authorities..n)
        .rev()
        .find(|&i| i != sender && i != responder && net.nodes[i].name != "clinic")
        .map(|i| net.nodes[i].name.clone())
        .into_iter()
        .collect();
    tour(&mut net, &mut clients, sender, responder, &unregistered).await?;

    let info = json!({
        "dir": root,
        "genesis": genesis_hash.to_string(),
        "passphrase_file": passphrase,
        "nodes": net.nodes.iter().map(|n| json!({
            "name": n.name, "id": n.id.to_string(), "socket": n.socket,
            "dir": n.dir, "addr": n.addr, "authority": n.authority,
            "web": n.web,
            "registered": !unregistered.contains(&n.name),
            "pid": n.child.as_ref().map(Child::id),
        })).collect::<Vec<_>>(),
    });
    let info_path = root.join("devnet.json");
    std::fs::write(&info_path, serde_json::to_string_pretty(&info)?)
        .context("cannot write devnet.json")?;

    if args.once {
        step("Done: every step worked. Stopping the nodes");
        return Ok(());
    }
    let ana = &net.nodes[sender];
    step("The devnet is running. Open a node's web app in a browser on this machine:");
    let medic = &net.nodes[responder];
    println!("  {}   {} (send an SOS, messages)", ana.web, ana.name);
    println!(
        "  {}   {} (sees the SOS, answers \"help is coming\")",
        medic.web, medic.name
    );
    println!("  (every node's address is in the list above and in devnet.json)");
    step("Or, from another terminal, talk to any node:");
    println!("  export LIFELINE_CONTROL_SOCKET={}", ana.socket.display());
    println!(
        "  lifeline status                 # {} ({})",
        ana.name, ana.id
    );
    println!("  lifeline inbox --watch");
    println!("  lifeline send --to civil-protection 'Is the bridge open?' --wait 10s");
    println!("  lifeline sos --lat 51.336 --lon 12.33 'Water in the cellar, two people'");
    println!("  lifeline alerts --near 51.336,12.33");
    println!("  lifeline identity list");
    println!("  lifeline chain status");
    println!(
        "Every node's socket is {}/NAME/control.sock, its log NAME/node.log; the list is in {}.",
        root.display(),
        info_path.display()
    );
    if temporary {
        println!("Press Ctrl-C to stop the network; its processes and folder are removed.");
    } else {
        println!("Press Ctrl-C to stop the network; its folder is kept.");
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    let mut watch = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = watch.tick() => check_alive(&mut net)?,
        }
    }
    eprintln!("\nStopping the {n} nodes...");
    drop(clients);
    drop(net);
    eprintln!("Stopped.");
    Ok(())
}

fn check_alive(net: &mut Devnet) -> Result<()> {
    for node in &mut net.nodes {
        if let Some(why) = node.exited() {
            bail!("{why}");
        }
    }
    Ok(())
}

/// Waits until a node's control socket answers.
async fn wait_until_up(node: &mut Node) -> Result<api::StatusReply> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(why) = node.exited() {
            bail!("{why}");
        }
        if let Ok(mut c) = lifeline_node::client::connect(&node.socket).await
            && let Ok(s) = c.status(api::StatusRequest {}).await
        {
            let s = s.into_inner();
            if !s.listen_addrs.is_empty() {
                return Ok(s);
            }
        }
        if Instant::now() >= deadline {
            bail!(
                "node {} did not start within 60 s; the end of {}:\n    {}",
                node.name,
                node.log().display(),
                node.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn chain(c: &mut Client) -> Result<api::ChainStatusReply> {
    Ok(c.chain_status(api::ChainStatusRequest {})
        .await
        .map_err(why)?
        .into_inner())
}

/// Polls `check` every 50 ms until it gives a value, for at most `limit`.
async fn until<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!(
                "{what} did not happen within {}",
                humantime::format_duration(limit)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Has the node sign and submit `action`; its transaction's hash.
async fn submit(c: &mut Client, action: Action) -> Result<String> {
    let request = api::TransactRequest {
        action: Some(action),
    };
    Ok(c.transact(request).await.map_err(why)?.into_inner().hash)
}

async fn wait_for_tx(c: &mut Client, hash: &str, what: &str) -> Result<u64> {
    let hash = hash.to_owned();
    until(what, Duration::from_secs(60), || {
        let mut c = c.clone();
        let hash = hash.clone();
        async move {
            let s = c
                .transaction_status(api::TransactionStatusRequest { hash })
                .await
                .map_err(why)?
                .into_inner();
            Ok((s.block > 0).then_some(s.block))
        }
    })
    .await
}

/// The path a message from `from` to `to` takes now: each hop's next hop.
async fn path(net: &Devnet, clients: &mut [Client], from: usize, to: usize) -> Result<Vec<usize>> {
    let target = net.nodes[to].id.to_string();
    let mut hops = vec![from];
    let mut at = from;
    while at != to && hops.len() <= net.nodes.len() {
        let routes = clients[at]
            .routes(api::RoutesRequest {})
            .await
            .map_err(why)?
            .into_inner()
            .routes;
        let Some(next) = routes
            .iter()
            .find(|r| r.destination == target)
            .and_then(|r| {
                net.nodes
                    .iter()
                    .position(|n| n.id.to_string() == r.next_hop)
            })
        else {
            break;
        };
        hops.push(next);
        at = next;
    }
    Ok(hops)
}

/// `text` with each node's id replaced by its name.
fn with_names(net: &Devnet, text: &str) -> String {
    net.nodes.iter().fold(text.to_owned(), |t, n| {
        t.replace(&n.id.to_string(), &n.name)
    })
}

fn path_names(net: &Devnet, hops: &[usize]) -> String {
    hops.iter()
        .map(|&i| net.nodes[i].name.as_str())
        .collect::<Vec<_>>()
        .join(" → ")
}

async fn inbox_entry(c: &mut Client, id: &str) -> Result<Option<api::InboxMessage>> {
    let mut stream = c
        .inbox(api::InboxRequest { watch: false })
        .await
        .map_err(why)?
        .into_inner();
    while let Some(m) = stream.message().await.map_err(why)? {
        if m.id == id {
            return Ok(Some(m));
        }
    }
    Ok(None)
}

async fn tour(
    net: &mut Devnet,
    clients: &mut [Client],
    sender: usize,
    responder: usize,
    unregistered: &[String],
) -> Result<()> {
    let n = net.nodes.len();

    step("The nodes register their names on the chain");
    let mut hashes = Vec::new();
    for (i, c) in clients.iter_mut().enumerate() {
        if unregistered.contains(&net.nodes[i].name) {
            hashes.push(String::new());
            continue;
        }
        let action = Action::Register(api::RegisterAction {
            name: net.nodes[i].name.clone(),
        });
        let hash = submit(c, action)
            .await
            .with_context(|| format!("{} could not register", net.nodes[i].name))?;
        hashes.push(hash);
    }
    let started = Instant::now();
    for (i, hash) in hashes.iter().enumerate() {
        if hash.is_empty() {
            continue;
        }
        let what = format!("{}'s registration reaching a block", net.nodes[i].name);
        wait_for_tx(&mut clients[i], hash, &what).await?;
    }
    // Then every node's copy of the chain knows every name.
    let registered = n - unregistered.len();
    until(
        "every node learning every name",
        Duration::from_secs(60),
        || {
            let mut cs: Vec<Client> = clients.to_vec();
            async move {
                for c in &mut cs {
                    if (chain(c).await?.identities as usize) < registered {
                        return Ok(None);
                    }
                }
                Ok(Some(()))
            }
        },
    )
    .await?;
    println!(
        "  {registered} names on the chain after {:.1}s; ana can now be written to as \"ana\"",
        started.elapsed().as_secs_f64()
    );
    for name in unregistered {
        println!(
            "  {name} has not registered: it is yours to try (`lifeline identity register {name}`)"
        );
    }

    let (ana, help) = (sender, responder);
    step(&format!(
        "{} calls for help: an SOS, ahead of all other traffic",
        net.nodes[ana].name
    ));
    let sos = clients[ana]
        .sos(api::SosRequest {
            text: "Water rising in the cellar at Karl-Heine-Str. 12, two people, one injured"
                .into(),
            lat_micro: Some(51_336_000),
            lon_micro: Some(12_330_000),
        })
        .await
        .map_err(why)?
        .into_inner()
        .id;
    let route = path(net, clients, ana, help).await?;
    let mut arrivals = Vec::new();
    for (i, c) in clients.iter_mut().enumerate() {
        if i == ana {
            continue;
        }
        let what = format!("the SOS reaching {}", net.nodes[i].name);
        let m = until(&what, Duration::from_secs(30), || {
            let mut c = c.clone();
            let sos = sos.clone();
            async move { inbox_entry(&mut c, &sos).await }
        })
        .await?;
        arrivals.push((i, m));
    }
    let (latency, hops) = arrivals
        .iter()
        .find(|(i, _)| *i == help)
        .map(|(_, m)| (m.received_ms.saturating_sub(m.sent_ms), m.hops))
        .unwrap_or_default();
    let slowest = arrivals
        .iter()
        .map(|(_, m)| m.received_ms.saturating_sub(m.sent_ms))
        .max()
        .unwrap_or(0);
    println!("  SOS {sos}");
    println!(
        "  reached {} in {latency} ms over {hops} hops; the route from {}: {}",
        net.nodes[help].name,
        net.nodes[ana].name,
        path_names(net, &route)
    );
    println!("  reached all {} other nodes within {slowest} ms", n - 1);

    step(&format!("{} answers: help is coming", net.nodes[help].name));
    let note = "Fire brigade team 2 on the way, 10 minutes. Go to the upper floor.";
    let acked_at = Instant::now();
    clients[help]
        .sos_ack(api::SosAckRequest {
            id: sos.clone(),
            note: note.into(),
        })
        .await
        .map_err(why)?;
    let receipts = until(
        "the acknowledgement reaching ana",
        Duration::from_secs(30),
        || {
            let mut c = clients[ana].clone();
            let sos = sos.clone();
            async move {
                let s = c
                    .message_status(api::MessageStatusRequest { id: sos })
                    .await
                    .map_err(why)?
                    .into_inner();
                Ok((s.status == "acknowledged").then_some(s.receipts))
            }
        },
    )
    .await?;
    println!(
        "  {} sees it after {} ms:",
        net.nodes[ana].name,
        acked_at.elapsed().as_millis()
    );
    for r in receipts {
        println!("    {}", with_names(net, &r));
    }

    let office = 0;
    step(&format!(
        "{} writes to \"ana\" by name, end to end encrypted",
        net.nodes[office].name
    ));
    let to = clients[office]
        .identities(api::IdentitiesRequest {
            query: "ana".into(),
        })
        .await
        .map_err(why)?
        .into_inner()
        .identities
        .first()
        .map(|i| i.id.clone())
        .context("the name ana did not resolve")?;
    let sent_at = Instant::now();
    let id = clients[office]
        .send(api::SendRequest {
            to,
            text: b"Team 2 is 5 minutes out. Is the injured person conscious?".to_vec(),
            priority: api::Priority::Normal.into(),
            prekey: Vec::new(),
            ttl_secs: 0,
        })
        .await
        .map_err(why)?
        .into_inner()
        .id;
    let receipts = until("the message's receipt", Duration::from_secs(30), || {
        let mut c = clients[office].clone();
        let id = id.clone();
        async move {
            let s = c
                .message_status(api::MessageStatusRequest { id })
                .await
                .map_err(why)?
                .into_inner();
            Ok((s.status == "delivered" || s.status == "acknowledged").then_some(s.receipts))
        }
    })
    .await?;
    let route = path(net, clients, office, ana).await?;
    println!(
        "  delivered, receipt back after {} ms, via {}",
        sent_at.elapsed().as_millis(),
        path_names(net, &route)
    );
    for r in receipts {
        println!("    {}", with_names(net, &r));
    }

    step(&format!(
        "{} publishes an official flood alert (CAP 1.2) on the chain",
        net.nodes[office].name
    ));
    let mut alert = sample_flood(
        &format!(
            "devnet-flood-{}",
            crate::keys::now().as_unix_millis() / 1000
        ),
        crate::keys::now().as_unix_millis(),
    );
    alert.status = AlertStatus::Exercise.into();
    let identifier = alert.identifier.clone();
    // Published as a CAP alert (PublishCapAlert), the form agencies' alerts take.
    let alert = Alert::from_pb(alert).context("the devnet's sample alert is invalid")?;
    let alert = Alert {
        form: AlertForm::Cap,
        ..alert
    };
    let action = Action::CapAlert(alert.to_cap_pb().encode_to_vec());
    let hash = submit(&mut clients[office], action).await?;
    let block = wait_for_tx(&mut clients[office], &hash, "the alert reaching a block").await?;
    let seen = until("the alert reaching ana", Duration::from_secs(30), || {
        let mut c = clients[ana].clone();
        let identifier = identifier.clone();
        async move {
            let mut stream = c
                .alerts(api::AlertsRequest {
                    watch: false,
                    near_lat: Some(51.05),
                    near_lon: Some(12.05),
                    language: String::new(),
                })
                .await
                .map_err(why)?
                .into_inner();
            while let Some(a) = stream.message().await.map_err(why)? {
                if a.identifier == identifier {
                    return Ok(Some(a));
                }
            }
            Ok(None)
        }
    })
    .await?;
    println!("  in block {block}; {} lists it:", net.nodes[ana].name);
    println!(
        "    {} {}: {} — {}",
        seen.severity.to_uppercase(),
        seen.event,
        seen.area,
        seen.headline
    );

    if let Some(clinic) = net.nodes.iter().position(|n| n.name == "clinic") {
        step(&format!(
            "{} certifies clinic as a medic for 30 days",
            net.nodes[office].name
        ));
        let action = Action::Certify(api::CertifyAction {
            subject: net.nodes[clinic].id.to_string(),
            role: "medic".into(),
            expires_ms: crate::keys::now().as_unix_millis() + 30 * 86_400_000,
        });
        let hash = submit(&mut clients[office], action).await?;
        let block = wait_for_tx(
            &mut clients[office],
            &hash,
            "the certification reaching a block",
        )
        .await?;
        println!("  in block {block}: `lifeline identity show clinic` shows the role");
    }

    let s = chain(&mut clients[0]).await?;
    step("The chain");
    println!(
        "  head block {}, final up to block {}, {} identities, {} authorities",
        s.head_number,
        s.finalized_number,
        s.identities,
        s.authorities.len()
    );
    Ok(())
}
