//! Commands that talk to a running node over its control socket: status,
//! peers, routes, send, sos, inbox, message status.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use lifeline_crypto::prekey::MAX_SIGNED_PREKEY_LEN;
use lifeline_node::pb::control as api;
use serde_json::json;

use crate::{Context as Ctx, keys, node};
use lifeline_crypto::armor::{self, Kind};

/// How a message is prioritised.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Priority {
    /// A personal message (P2)
    Normal,
    /// Bulk data, after everything else (P3)
    Bulk,
    /// Life-threatening: signed, rate-limited, ahead of everything (P0)
    Urgent,
}

/// Arguments of `lifeline send`.
#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
    lifeline send --to 'Shelter North' 'We are at the north school, all safe'\n  \
    lifeline send --to 12D3KooW... --card bob.card < note.txt\n  \
    lifeline send --to 12D3KooW... --file list.txt --priority bulk\n\n\
    The recipient's prekey comes from the chain's identity registry, or from \
    their contact card (--card). Prints the message id; follow it with \
    `lifeline message status ID`.")]
pub struct SendArgs {
    /// The recipient: an id, or a name registered on the chain
    #[arg(long, value_name = "ID|NAME")]
    to: String,
    /// The recipient's contact card, if they are not registered on the chain
    #[arg(long, value_name = "CARD")]
    card: Option<PathBuf>,
    /// Priority
    #[arg(long, value_enum, default_value = "normal")]
    priority: Priority,
    /// How long relays keep trying (e.g. 2h, 3days) [default: 7 days]
    #[arg(long, value_name = "DURATION")]
    ttl: Option<humantime::Duration>,
    /// Wait until the recipient's receipt arrives (at most this long, e.g. 30s)
    #[arg(long, value_name = "DURATION")]
    wait: Option<humantime::Duration>,
    /// Send the contents of FILE
    #[arg(long, value_name = "FILE", conflicts_with = "text")]
    file: Option<PathBuf>,
    /// The message; read from standard input if absent or `-`
    text: Option<String>,
}

/// Arguments of `lifeline sos`.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
#[command(after_help = "Examples:\n  \
    lifeline sos --lat 51.34 --lon 12.37 'Trapped on the 2nd floor, two people, one injured'\n  \
    lifeline sos ack 5f3c... --note 'Team 4 on the way, 15 minutes'")]
pub struct SosArgs {
    #[command(subcommand)]
    command: Option<SosCommand>,
    /// Latitude in degrees
    #[arg(long, allow_hyphen_values = true)]
    lat: Option<f64>,
    /// Longitude in degrees
    #[arg(long, allow_hyphen_values = true)]
    lon: Option<f64>,
    /// What is happening and what is needed
    text: Option<String>,
}

/// `lifeline sos` subcommands.
#[derive(Subcommand, Debug)]
pub enum SosCommand {
    /// Tell the sender of an SOS that help is coming
    Ack {
        /// The SOS's id (from `lifeline inbox`)
        id: String,
        /// A short note ("Team 4, 15 minutes")
        #[arg(long, default_value = "")]
        note: String,
    },
}

/// `lifeline message` subcommands.
#[derive(Subcommand, Debug)]
pub enum MessageCommand {
    /// Where a message sent from this node is: queued, forwarded, delivered...
    Status {
        /// The message id that `lifeline send` printed
        id: String,
    },
}

/// Arguments of `lifeline inbox`.
#[derive(Args, Debug)]
pub struct InboxArgs {
    /// Keep running and print messages as they arrive
    #[arg(long)]
    watch: bool,
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

pub(crate) async fn client(ctx: &Ctx) -> Result<Client> {
    if let Some(addr) = &ctx.control_tcp {
        let token = match (
            &ctx.control_token_file,
            std::env::var("LIFELINE_CONTROL_TOKEN"),
        ) {
            (Some(file), _) => std::fs::read_to_string(file)
                .with_context(|| format!("cannot read the control token {}", file.display()))?,
            (None, Ok(token)) => token,
            (None, Err(_)) => bail!(
                "--control-tcp needs the node's token: --control-token-file \
                 DATA/control.token (or LIFELINE_CONTROL_TOKEN)"
            ),
        };
        return Ok(lifeline_node::client::connect_tcp(addr, &token).await?);
    }
    let socket = node::socket(&ctx.data_dir, ctx.control_socket.as_deref());
    Ok(lifeline_node::client::connect(&socket).await?)
}

pub(crate) type Client = lifeline_node::client::Client;

/// Runs one call against the node and returns its answer.
pub(crate) fn call<T, F, Fut>(ctx: &Ctx, request: F) -> Result<T>
where
    F: FnOnce(Client) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    runtime()?.block_on(async {
        let c = client(ctx).await?;
        request(c)
            .await
            .map(tonic::Response::into_inner)
            .map_err(why)
    })
}

/// A gRPC error as a person reads it.
pub(crate) fn why(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", status.message())
}

pub(crate) fn print_json(value: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

pub(crate) fn age(ms: u64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0));
    let secs = now.saturating_sub(ms) / 1000;
    format!(
        "{} ago",
        humantime::format_duration(Duration::from_secs(secs))
    )
}

/// `lifeline status`.
pub fn status(ctx: &Ctx) -> Result<()> {
    let s = call(
        ctx,
        |mut c| async move { c.status(api::StatusRequest {}).await },
    )?;
    let chain = s.chain.unwrap_or_default();
    if ctx.json {
        print_json(&json!({
            "id": s.id, "fingerprint": s.fingerprint, "listen": s.listen_addrs,
            "peers": s.peers, "routes": s.routes,
            "custody": {"messages": s.custody_messages, "bytes": s.custody_bytes},
            "relay": s.relay, "uptime_secs": s.uptime_secs, "reachability": s.reachability,
            "chain": chain_json(&chain), "card": s.card, "web": s.web_urls,
        }));
        return Ok(());
    }
    println!("id:          {}", s.id);
    println!("fingerprint: {}", s.fingerprint);
    println!(
        "uptime:      {}",
        humantime::format_duration(Duration::from_secs(s.uptime_secs))
    );
    if s.relay {
        println!("mode:        relay");
    }
    for a in &s.listen_addrs {
        println!("listening:   {a}/p2p/{}", s.id);
    }
    println!("reachable:   {}", s.reachability);
    for url in &s.web_urls {
        println!("web app:     {url}");
    }
    println!("peers:       {}", s.peers);
    println!("routes:      {}", s.routes);
    println!(
        "custody:     {} messages, {} bytes",
        s.custody_messages, s.custody_bytes
    );
    print_chain(&chain);
    Ok(())
}

pub(crate) fn chain_json(c: &api::ChainStatusReply) -> serde_json::Value {
    if !c.enabled {
        return serde_json::Value::Null;
    }
    json!({
        "head": {"number": c.head_number, "hash": c.head_hash, "time_ms": c.head_time_ms},
        "finalized": {"number": c.finalized_number, "hash": c.finalized_hash},
        "justified": {"number": c.justified_number},
        "authorities": c.authorities, "is_authority": c.is_authority,
        "genesis": c.genesis_hash, "identities": c.identities,
        "halted": (!c.halted.is_empty()).then_some(&c.halted),
    })
}

pub(crate) fn print_chain(c: &api::ChainStatusReply) {
    if !c.enabled {
        println!("chain:       none (no genesis file)");
        return;
    }
    println!(
        "chain:       head {} ({}), finalized {}",
        c.head_number,
        age(c.head_time_ms),
        c.finalized_number
    );
    println!(
        "authorities: {}{}",
        c.authorities.len(),
        if c.is_authority {
            " (this node is one)"
        } else {
            ""
        }
    );
    if !c.halted.is_empty() {
        println!("STOPPED:     {}", c.halted);
    }
}

/// `lifeline peers`.
pub fn peers(ctx: &Ctx) -> Result<()> {
    let reply = call(
        ctx,
        |mut c| async move { c.peers(api::PeersRequest {}).await },
    )?;
    let peers = reply.peers;
    if ctx.json {
        let list: Vec<_> = peers
            .iter()
            .map(|p| {
                json!({
                    "id": p.id,
                    "addrs": p.addrs,
                    "rtt_us": p.rtt_us,
                    "mesh": p.mesh,
                    "misbehaviour": p.misbehaviour,
                    "bulk_pace_bytes_per_s": p.bulk_pace_bytes_per_s,
                    "hop_queue_ms": queue_ms(p),
                })
            })
            .collect();
        print_json(&json!(list));
        return Ok(());
    }
    if peers.is_empty() {
        println!(
            "No peers yet. On a LAN they are found by mDNS within seconds; elsewhere give --bootstrap."
        );
        return Ok(());
    }
    println!(
        "{:<54} {:>9} {:>5} {:>12} {:>7}  address",
        "peer", "rtt", "mesh", "bulk pace", "queue"
    );
    for p in peers {
        let rtt = if p.rtt_us == 0 {
            "-".to_string()
        } else {
            format!("{:.1} ms", p.rtt_us as f64 / 1000.0)
        };
        let mesh = if p.mesh { "yes" } else { "no" };
        // Bulk the neighbour does not pace goes as fast as the link takes it.
        let pace = match p.bulk_pace_bytes_per_s {
            0 => "-".to_string(),
            b => format!("{:.1} Mbit/s", b as f64 * 8.0 / 1e6),
        };
        let queue = queue_ms(&p).map_or_else(|| "-".to_string(), |q| format!("{q:.1} ms"));
        println!(
            "{:<54} {:>9} {:>5} {:>12} {:>7}  {}",
            p.id,
            rtt,
            mesh,
            pace,
            queue,
            p.addrs.first().map_or("", String::as_str)
        );
    }
    Ok(())
}

/// `lifeline routes`.
/// The hop's queueing delay in ms, from the µs a node gives (or the
/// whole ms an older one does).
fn queue_ms(p: &api::Peer) -> Option<f64> {
    p.hop_queue_us
        .map(|us| us as f64 / 1000.0)
        .or(p.hop_queue_ms.map(|ms| ms as f64))
}

pub fn routes(ctx: &Ctx) -> Result<()> {
    let reply = call(
        ctx,
        |mut c| async move { c.routes(api::RoutesRequest {}).await },
    )?;
    let routes = reply.routes;
    if ctx.json {
        let list: Vec<_> = routes
            .iter()
            .map(|r| json!({"destination": r.destination, "next_hop": r.next_hop, "metric": r.metric}))
            .collect();
        print_json(&json!(list));
        return Ok(());
    }
    if routes.is_empty() {
        println!("No routes yet.");
        return Ok(());
    }
    println!("{:<54} {:<54} {:>7}", "destination", "next hop", "metric");
    for r in routes {
        println!("{:<54} {:<54} {:>7}", r.destination, r.next_hop, r.metric);
    }
    Ok(())
}

/// `lifeline send`.
pub fn send(ctx: &Ctx, args: SendArgs) -> Result<()> {
    let text = match (args.text.as_deref(), &args.file) {
        (Some(t), _) if t != "-" => t.as_bytes().to_vec(),
        (_, file) => keys::read_input(
            file.as_deref(),
            lifeline_crypto::envelope::MAX_CONTENT_LEN,
            "the message",
        )?,
    };
    if text.is_empty() {
        bail!("the message is empty; give the text as an argument or on standard input");
    }
    let prekey = match &args.card {
        Some(path) => {
            let card_text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the contact card {}", path.display()))?;
            armor::decode(Kind::Card, &card_text, MAX_SIGNED_PREKEY_LEN)
                .with_context(|| format!("{} is not a contact card", path.display()))?
        }
        None => Vec::new(),
    };
    let priority = match args.priority {
        Priority::Normal => api::Priority::Normal,
        Priority::Bulk => api::Priority::Bulk,
        Priority::Urgent => api::Priority::Urgent,
    };
    let mut request = api::SendRequest {
        to: String::new(),
        text,
        priority: priority.into(),
        prekey,
        ttl_secs: args.ttl.map_or(0, |d| d.as_secs()),
    };
    let wait = args.wait.map(Duration::from);
    let json = ctx.json;
    runtime()?.block_on(async {
        let mut c = client(ctx).await?;
        request.to = crate::authority::resolve(&mut c, &args.to).await?;
        let id = c.send(request).await.map_err(why)?.into_inner().id;
        if !json {
            println!("{id}");
        }
        let Some(wait) = wait else {
            if json {
                print_json(&json!({"id": id}));
            }
            return Ok(());
        };
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let s = c
                .message_status(api::MessageStatusRequest { id: id.clone() })
                .await
                .map_err(why)?
                .into_inner();
            if s.status == "delivered" || s.status == "acknowledged" {
                if json {
                    print_json(&json!({"id": id, "status": s.status, "receipts": s.receipts}));
                } else {
                    eprintln!("{}: {}", s.status, s.receipts.join("; "));
                }
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "no receipt within {} (status: {}); the network keeps trying, check with `lifeline message status {id}`",
                    humantime::format_duration(wait),
                    s.status
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

/// `lifeline sos`.
pub fn sos(ctx: &Ctx, args: SosArgs) -> Result<()> {
    let json = ctx.json;
    if let Some(SosCommand::Ack { id, note }) = args.command {
        let reply = call(ctx, |mut c| async move {
            c.sos_ack(api::SosAckRequest { id, note }).await
        })?;
        let id = reply.id;
        if json {
            print_json(&json!({"id": id}));
        } else {
            println!("{id}");
        }
        return Ok(());
    }
    let Some(text) = args.text.filter(|t| !t.trim().is_empty()) else {
        bail!("say what is happening: lifeline sos 'TEXT' (see lifeline sos --help)");
    };
    let micro = |v: Option<f64>, max: f64, what: &str| -> Result<Option<i32>> {
        match v {
            None => Ok(None),
            Some(d) if (-max..=max).contains(&d) => Ok(Some((d * 1e6).round() as i32)),
            Some(d) => bail!("--{what} {d} is out of range (±{max} degrees)"),
        }
    };
    let request = api::SosRequest {
        text,
        lat_micro: micro(args.lat, 90.0, "lat")?,
        lon_micro: micro(args.lon, 180.0, "lon")?,
    };
    let reply = call(ctx, |mut c| async move { c.sos(request).await })?;
    let id = reply.id;
    if json {
        print_json(&json!({"id": id}));
    } else {
        println!("{id}");
        eprintln!(
            "SOS sent to everyone in reach. Acknowledgements show in `lifeline message status {id}`."
        );
    }
    Ok(())
}

fn inbox_json(m: &api::InboxMessage) -> serde_json::Value {
    json!({
        "id": m.id, "from": m.from, "kind": m.kind,
        "text": String::from_utf8_lossy(&m.text),
        "received_ms": m.received_ms, "sent_ms": m.sent_ms, "hops": m.hops,
        "lat_micro": m.lat_micro, "lon_micro": m.lon_micro,
    })
}

fn print_inbox(m: &api::InboxMessage, json: bool) {
    if json {
        println!("{}", inbox_json(m));
        return;
    }
    let kind = if m.kind == "sos" { "SOS " } else { "" };
    let at = match (m.lat_micro, m.lon_micro) {
        (Some(lat), Some(lon)) => format!(
            " at {:.5},{:.5}",
            f64::from(lat) / 1e6,
            f64::from(lon) / 1e6
        ),
        _ => String::new(),
    };
    println!(
        "{kind}from {} ({}, {} hops{at}) id {}\n  {}",
        m.from,
        age(m.received_ms),
        m.hops,
        m.id,
        String::from_utf8_lossy(&m.text)
    );
}

/// `lifeline inbox`.
pub fn inbox(ctx: &Ctx, args: InboxArgs) -> Result<()> {
    let json = ctx.json;
    runtime()?.block_on(async {
        let mut c = client(ctx).await?;
        let mut stream = c
            .inbox(api::InboxRequest { watch: args.watch })
            .await
            .map_err(why)?
            .into_inner();
        let mut any = false;
        while let Some(m) = stream.message().await.map_err(why)? {
            any = true;
            print_inbox(&m, json);
        }
        if !any && !json {
            eprintln!("The inbox is empty.");
        }
        Ok(())
    })
}

/// `lifeline web`.
#[derive(Subcommand, Debug)]
pub enum WebCommand {
    /// A code that pairs one browser with this node's web app (single use,
    /// valid for 10 minutes): needed when the app is offered on the LAN
    #[command(after_help = "Examples:\n  \
        lifeline web pair            # read the code to the person with the phone\n  \
        lifeline web pair --forget   # a phone was lost: unpair every browser first")]
    Pair {
        /// End every paired browser's session first (each must pair again)
        #[arg(long)]
        forget: bool,
    },
}

/// `lifeline web`.
pub fn web(ctx: &Ctx, command: WebCommand) -> Result<()> {
    let WebCommand::Pair { forget } = command;
    let reply = call(ctx, |mut c| async move {
        c.web_pair(api::WebPairRequest { forget }).await
    })?;
    if ctx.json {
        print_json(&json!({
            "code": reply.code, "valid_secs": reply.valid_secs, "urls": reply.urls,
            "forgotten": reply.forgotten, "pairing_required": reply.pairing_required,
        }));
        return Ok(());
    }
    if forget {
        eprintln!("Ended {} browser sessions.", reply.forgotten);
    }
    println!("{}", reply.code);
    eprintln!(
        "Open {} in the browser and enter this code within {}. It works once.",
        reply.urls.join(" or "),
        humantime::format_duration(Duration::from_secs(reply.valid_secs))
    );
    if !reply.pairing_required {
        eprintln!(
            "(The app is on loopback only: browsers on this machine open it without a code.)"
        );
    }
    Ok(())
}

/// `lifeline message`.
pub fn message(ctx: &Ctx, command: MessageCommand) -> Result<()> {
    let MessageCommand::Status { id } = command;
    let s = call(ctx, |mut c| async move {
        c.message_status(api::MessageStatusRequest { id }).await
    })?;
    if ctx.json {
        print_json(&json!({"status": s.status, "receipts": s.receipts}));
        return Ok(());
    }
    if s.status == "unknown" {
        println!(
            "unknown: this node sent no such message, or stopped tracking it (it tracks the last 10,000)"
        );
    } else {
        println!("{}", s.status);
    }
    for r in s.receipts {
        println!("  {r}");
    }
    Ok(())
}
