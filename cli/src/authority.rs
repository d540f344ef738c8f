//! Commands on the chain's registry through a running node: identities and
//! names, roles, revocations, alerts, and the chain itself (status, blocks,
//! votes). The node signs with its own key.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use lifeline_consensus::alert::{Alert, CapTime, Info, NamedValue};
use lifeline_consensus::cap::{self, MAX_CAP_LEN};
use lifeline_consensus::tx::{MAX_NAME_CHARS, MAX_REASON_CHARS, MAX_ROLE_CHARS};
use lifeline_consensus::wire::pb as chain_pb;
use lifeline_crypto::{NodeId, Timestamp};
use lifeline_node::pb::control as api;
use prost::Message as _;
use serde_json::json;

use crate::Context as Ctx;
use crate::net::{Client, age, chain_json, client, print_chain, print_json, runtime, why};

/// Waiting for the transaction's block.
#[derive(Args, Debug, Clone)]
pub struct WaitArgs {
    /// Return once the node has taken it, without waiting for a block
    #[arg(long)]
    no_wait: bool,
    /// Wait at most this long for the block that carries it
    #[arg(long, value_name = "DURATION", default_value = "2m")]
    wait: humantime::Duration,
}

/// `lifeline identity` subcommands.
#[derive(Subcommand, Debug)]
pub enum IdentityCommand {
    /// Put this node's identity and prekey on the chain under a display name
    #[command(after_help = "Others can then write to you by name: \
        `lifeline send --to 'Shelter North' ...`. Names need not be unique; a name two \
        identities share must be given as an id.\n\nExample:\n  \
        lifeline identity register 'Shelter North'")]
    Register {
        /// How others find you (at most 64 characters)
        name: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Show an identity by id or name: roles, revocation, authority
    Show {
        /// An id or a registered name
        who: String,
    },
    /// Every registered identity
    List,
}

/// `lifeline alert` subcommands.
#[derive(Subcommand, Debug)]
pub enum AlertCommand {
    /// Publish an OASIS CAP 1.2 alert (an authority's node only)
    #[command(
        after_help = "The file is a CAP 1.2 <alert> in public scope, as the agency wrote it: \
        every <info> (languages, audiences) and <area> (polygons, circles, geocodes) is \
        carried. It is checked before it is sent; what stays off the chain (embedded media, \
        elements outside CAP) is listed, and in --json too. See docs/authorities.md.\n\n\
        Example:\n  lifeline alert publish docs/examples/flood-alert.xml"
    )]
    Publish {
        /// The CAP 1.2 XML file
        file: PathBuf,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Show one alert, in force or not
    Show {
        /// The alert's identifier
        identifier: String,
        /// Write it out as CAP 1.2 XML
        #[arg(long)]
        cap: bool,
    },
}

/// Arguments of `lifeline alerts`.
#[derive(Args, Debug)]
#[command(after_help = "Example:\n  lifeline alerts --near 51.335,12.33 --watch")]
pub struct AlertsArgs {
    /// Keep running and print alerts as they come into force
    #[arg(long)]
    watch: bool,
    /// Only alerts whose area may cover this point
    #[arg(long, value_name = "LAT,LON", allow_hyphen_values = true)]
    near: Option<String>,
    /// Show each alert in this language where its issuer wrote one (fr,
    /// fr-CA, ...); else in the issuer's first
    #[arg(long, env = "LIFELINE_LANGUAGE", value_name = "LANG")]
    lang: Option<String>,
}

/// Arguments of `lifeline certify`.
#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
    lifeline certify 'Ana Medic' medic --until 2027-06-30\n  \
    lifeline certify 12D3KooW... 'shelter coordinator' --until 90days")]
pub struct CertifyArgs {
    /// Who: an id or a registered name
    who: String,
    /// The role, e.g. medic, firefighter, 'shelter coordinator'
    role: String,
    /// Until when: a date (2027-06-30, through that day UTC), a time
    /// (2027-06-30T18:00:00+02:00) or a duration (90days)
    #[arg(long, value_name = "DATE")]
    until: String,
    #[command(flatten)]
    wait: WaitArgs,
}

/// Arguments of `lifeline revoke`.
#[derive(Args, Debug)]
#[command(
    after_help = "An authority may revoke anyone's key; anyone may revoke their own \
    (a lost or stolen device).\n\nExample:\n  \
    lifeline revoke 12D3KooW... --reason 'device stolen on 2026-11-20'"
)]
pub struct RevokeArgs {
    /// Whose key: an id or a registered name
    who: String,
    /// Why (everyone can read it)
    #[arg(long)]
    reason: String,
    #[command(flatten)]
    wait: WaitArgs,
}

/// `lifeline chain vote` subcommands.
#[derive(Subcommand, Debug)]
pub enum VoteCommand {
    /// Vote to make someone an authority
    Add {
        /// An id or a registered name
        who: String,
    },
    /// Vote to drop an authority
    Drop {
        /// An id or a registered name
        who: String,
    },
}

/// A time in CAP's form, for people.
fn when(ms: u64) -> String {
    cap::format_time(Timestamp::from_unix_millis(ms))
        .replacen('T', " ", 1)
        .replace("-00:00", " UTC")
}

/// Reads `--until`: a date, an RFC 3339 time, or a duration from now.
pub fn parse_until(text: &str, now_ms: u64) -> Result<u64> {
    use time::format_description::well_known::Rfc3339;
    use time::macros::format_description;
    let t = text.trim();
    let ms = if let Ok(date) = time::Date::parse(t, format_description!("[year]-[month]-[day]")) {
        // Through that day: until the next midnight, UTC.
        let next = date
            .next_day()
            .context("--until is the last day time can count")?;
        u64::try_from(next.midnight().assume_utc().unix_timestamp()).unwrap_or(0) * 1000
    } else if let Ok(at) = time::OffsetDateTime::parse(t, &Rfc3339) {
        u64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
    } else if let Ok(d) = humantime::parse_duration(t) {
        now_ms.saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    } else {
        bail!(
            "--until {t:?} is not a date: write a date (2027-06-30), a time \
             (2027-06-30T18:00:00+02:00) or a duration (90days)"
        );
    };
    if ms <= now_ms {
        bail!("--until {t:?} is in the past; give a later date");
    }
    Ok(ms)
}

fn check_text(what: &str, value: &str, max: usize) -> Result<()> {
    let value = value.trim();
    if value.is_empty() {
        bail!("the {what} is empty");
    }
    if value.chars().count() > max {
        bail!(
            "the {what} is {} characters; at most {max}",
            value.chars().count()
        );
    }
    Ok(())
}

/// Resolves an id or a registered name to an id, through the node's chain.
/// An unknown or ambiguous name is an error that lists candidates.
pub(crate) async fn resolve(c: &mut Client, who: &str) -> Result<String> {
    let who = who.trim();
    if who.parse::<NodeId>().is_ok() {
        return Ok(who.to_owned());
    }
    let found = c
        .identities(api::IdentitiesRequest { query: who.into() })
        .await
        .map_err(why)?
        .into_inner()
        .identities;
    let everyone = if found.is_empty() {
        c.identities(api::IdentitiesRequest::default())
            .await
            .map_err(why)?
            .into_inner()
            .identities
    } else {
        Vec::new()
    };
    pick(who, &found, &everyone)
}

/// The one identity `found` under the name `who`, or an error that lists
/// the candidates: those sharing the name, or names near it in `everyone`.
fn pick(who: &str, found: &[api::Identity], everyone: &[api::Identity]) -> Result<String> {
    match found {
        [one] => return Ok(one.id.clone()),
        [] => {}
        many => {
            let list: Vec<String> = many.iter().map(describe_short).collect();
            bail!(
                "{} identities are named {who:?}; give the id of the one you mean:\n  {}",
                many.len(),
                list.join("\n  ")
            );
        }
    }
    let wanted = who.to_lowercase();
    let mut near: Vec<(f64, &api::Identity)> = everyone
        .iter()
        .map(|i| {
            let name = i.name.to_lowercase();
            let mut score = strsim::normalized_levenshtein(&wanted, &name);
            if name.contains(&wanted) || wanted.contains(&name) {
                score = score.max(0.8);
            }
            (score, i)
        })
        .filter(|(score, _)| *score >= 0.5)
        .collect();
    near.sort_by(|a, b| b.0.total_cmp(&a.0));
    if near.is_empty() {
        bail!(
            "no identity named {who:?} is registered on the chain ({} are; list them with \
             `lifeline identity list`), and it is not an id",
            everyone.len()
        );
    }
    let list: Vec<String> = near
        .iter()
        .take(5)
        .map(|(_, i)| describe_short(i))
        .collect();
    bail!(
        "no identity named {who:?} is registered on the chain. Did you mean:\n  {}",
        list.join("\n  ")
    )
}

fn describe_short(i: &api::Identity) -> String {
    let mut s = format!("{:<24} {}", format!("{:?}", i.name), i.id);
    if i.revoked {
        s.push_str(" (revoked)");
    }
    s
}

/// Submits an action and, unless told not to, waits for its block.
fn transact(
    ctx: &Ctx,
    action: api::transact_request::Action,
    wait: &WaitArgs,
    what: &str,
) -> Result<()> {
    transact_with(ctx, action, wait, what, json!({}))
}

/// [`transact`], with `extra` fields in its `--json` answer.
fn transact_with(
    ctx: &Ctx,
    action: api::transact_request::Action,
    wait: &WaitArgs,
    what: &str,
    extra: serde_json::Value,
) -> Result<()> {
    let json = ctx.json;
    let answer = |mut fields: serde_json::Value| {
        if let (Some(out), Some(extra)) = (fields.as_object_mut(), extra.as_object()) {
            out.extend(extra.clone());
        }
        fields
    };
    let wait_for = (!wait.no_wait).then(|| Duration::from(wait.wait));
    runtime()?.block_on(async {
        let mut c = client(ctx).await?;
        let reply = c
            .transact(api::TransactRequest {
                action: Some(action),
            })
            .await
            .map_err(why)?
            .into_inner();
        let hash = reply.hash;
        let Some(wait_for) = wait_for else {
            if json {
                print_json(&answer(json!({"hash": hash, "status": "pending"})));
            } else {
                println!("{hash}");
                eprintln!(
                    "{what}: sent to the authorities; follow it with `lifeline chain tx {hash}`"
                );
            }
            return Ok(());
        };
        if !json {
            eprintln!("{what}: waiting for a block (transaction {hash})...");
        }
        let status = wait_for_block(&mut c, &hash, wait_for).await?;
        if json {
            print_json(&answer(
                json!({"hash": hash, "status": status.status, "block": status.block}),
            ));
        } else {
            println!("{what}: in block {} (transaction {hash})", status.block);
        }
        Ok(())
    })
}

async fn wait_for_block(
    c: &mut Client,
    hash: &str,
    wait: Duration,
) -> Result<api::TransactionStatusReply> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let s = c
            .transaction_status(api::TransactionStatusRequest { hash: hash.into() })
            .await
            .map_err(why)?
            .into_inner();
        if s.status == "included" || s.status == "final" {
            return Ok(s);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "no block carried transaction {hash} within {} (status: {}); the authorities may \
                 be out of reach. It stays on its way: check with `lifeline chain tx {hash}`",
                humantime::format_duration(wait),
                s.status
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `lifeline identity`.
pub fn identity(ctx: &Ctx, command: IdentityCommand) -> Result<()> {
    match command {
        IdentityCommand::Register { name, wait } => {
            check_text("name", &name, MAX_NAME_CHARS)?;
            let action =
                api::transact_request::Action::Register(api::RegisterAction { name: name.clone() });
            transact(
                ctx,
                action,
                &wait,
                &format!("registered as {:?}", name.trim()),
            )
        }
        IdentityCommand::Show { who } => {
            let json = ctx.json;
            runtime()?.block_on(async {
                let mut c = client(ctx).await?;
                let id = resolve(&mut c, &who).await?;
                let found = c
                    .identities(api::IdentitiesRequest { query: id.clone() })
                    .await
                    .map_err(why)?
                    .into_inner()
                    .identities;
                let Some(i) = found.first() else {
                    bail!("{id} has not registered on the chain");
                };
                if json {
                    print_json(&identity_json(i));
                } else {
                    print_identity(i);
                }
                Ok(())
            })
        }
        IdentityCommand::List => {
            let json = ctx.json;
            runtime()?.block_on(async {
                let mut c = client(ctx).await?;
                let reply = c
                    .identities(api::IdentitiesRequest::default())
                    .await
                    .map_err(why)?
                    .into_inner();
                if json {
                    let all: Vec<_> = reply.identities.iter().map(identity_json).collect();
                    print_json(&json!({"identities": all, "truncated": reply.truncated}));
                    return Ok(());
                }
                if reply.identities.is_empty() {
                    eprintln!("No identity is registered yet (`lifeline identity register NAME`).");
                }
                for i in &reply.identities {
                    let roles: Vec<&str> = i.roles.iter().map(|r| r.role.as_str()).collect();
                    let mut line = describe_short(i);
                    if i.authority {
                        line.push_str(" authority");
                    }
                    if !roles.is_empty() {
                        line.push_str(&format!(" [{}]", roles.join(", ")));
                    }
                    println!("{line}");
                }
                if reply.truncated {
                    eprintln!("(more are registered than are listed)");
                }
                Ok(())
            })
        }
    }
}

fn identity_json(i: &api::Identity) -> serde_json::Value {
    json!({
        "id": i.id, "name": i.name, "registered_in": i.registered_in,
        "authority": i.authority,
        "roles": i.roles.iter().map(|r| json!({
            "role": r.role, "certifier": r.certifier, "expires_ms": r.expires_ms,
        })).collect::<Vec<_>>(),
        "revoked": i.revoked.then(|| json!({"reason": i.revoked_reason, "by": i.revoked_by})),
    })
}

fn print_identity(i: &api::Identity) {
    println!("name:       {}", i.name);
    println!("id:         {}", i.id);
    println!("registered: block {}", i.registered_in);
    if i.authority {
        println!("authority:  yes");
    }
    for r in &i.roles {
        println!(
            "role:       {} until {} (certified by {})",
            r.role,
            when(r.expires_ms),
            r.certifier
        );
    }
    if i.revoked {
        println!("REVOKED:    {} (by {})", i.revoked_reason, i.revoked_by);
    }
}

/// `lifeline certify`.
pub fn certify(ctx: &Ctx, args: CertifyArgs) -> Result<()> {
    check_text("role", &args.role, MAX_ROLE_CHARS)?;
    let expires_ms = parse_until(&args.until, crate::keys::now().as_unix_millis())?;
    let subject = runtime()?.block_on(async {
        let mut c = client(ctx).await?;
        resolve(&mut c, &args.who).await
    })?;
    let action = api::transact_request::Action::Certify(api::CertifyAction {
        subject: subject.clone(),
        role: args.role.clone(),
        expires_ms,
    });
    let what = format!(
        "{subject} certified as {:?} until {}",
        args.role.trim(),
        when(expires_ms)
    );
    transact(ctx, action, &args.wait, &what)
}

/// `lifeline revoke`.
pub fn revoke(ctx: &Ctx, args: RevokeArgs) -> Result<()> {
    check_text("reason", &args.reason, MAX_REASON_CHARS)?;
    let subject = runtime()?.block_on(async {
        let mut c = client(ctx).await?;
        resolve(&mut c, &args.who).await
    })?;
    let action = api::transact_request::Action::Revoke(api::RevokeAction {
        subject: subject.clone(),
        reason: args.reason.clone(),
    });
    transact(ctx, action, &args.wait, &format!("{subject} revoked"))
}

/// Reads and checks a CAP file.
pub fn read_cap(file: &std::path::Path) -> Result<cap::CapImport> {
    let meta = std::fs::metadata(file)
        .with_context(|| format!("cannot read the alert file {}", file.display()))?;
    if meta.len() > MAX_CAP_LEN as u64 {
        bail!(
            "{} is {} bytes; lifeline reads CAP files of at most {MAX_CAP_LEN} bytes, embedded \
             media included (the media itself is not kept)",
            file.display(),
            meta.len()
        );
    }
    let text = std::fs::read_to_string(file).with_context(|| {
        format!(
            "cannot read the alert file {} as UTF-8 text",
            file.display()
        )
    })?;
    cap::from_cap_xml(&text).with_context(|| {
        format!(
            "{} is not a CAP 1.2 alert lifeline can publish",
            file.display()
        )
    })
}

/// `lifeline alert`.
pub fn alert(ctx: &Ctx, command: AlertCommand) -> Result<()> {
    match command {
        AlertCommand::Publish { file, wait } => {
            let import = read_cap(&file)?;
            if !ctx.json {
                for note in &import.not_carried {
                    eprintln!("note: {}: {note}", file.display());
                }
            }
            let alert = import.alert;
            let action = api::transact_request::Action::CapAlert(alert.to_cap_pb().encode_to_vec());
            transact_with(
                ctx,
                action,
                &wait,
                &format!("alert {:?} published", alert.identifier),
                json!({"identifier": alert.identifier, "not_carried": import.not_carried}),
            )
        }
        AlertCommand::Show {
            identifier,
            cap: as_cap,
        } => {
            let json = ctx.json;
            runtime()?.block_on(async {
                let mut c = client(ctx).await?;
                let (alert, detail) = alert_detail(&mut c, &identifier).await?;
                if as_cap {
                    // CAP references carry each earlier alert's sender and
                    // time; an alert of the first form names only identifiers.
                    let mut known = Vec::new();
                    for r in alert.references.iter().filter(|r| r.sent.is_none()) {
                        if let Ok((earlier, _)) = alert_detail(&mut c, &r.identifier).await {
                            known.push((r.identifier.clone(), earlier.sender, earlier.sent.at));
                        }
                    }
                    let lookup = |id: &str| {
                        known
                            .iter()
                            .find(|(r, _, _)| r == id)
                            .map(|(_, s, t)| (s.clone(), *t))
                    };
                    print!("{}", cap::to_cap_xml(&alert, &lookup));
                    return Ok(());
                }
                if json {
                    print_json(&alert_json(&alert, &detail));
                    return Ok(());
                }
                print_alert(&alert, &detail);
                Ok(())
            })
        }
    }
}

async fn alert_detail(c: &mut Client, identifier: &str) -> Result<(Alert, api::AlertDetailReply)> {
    let detail = c
        .alert_detail(api::AlertDetailRequest {
            identifier: identifier.into(),
        })
        .await
        .map_err(why)?
        .into_inner();
    if !detail.found {
        bail!("no alert {identifier:?} is on the chain; `lifeline alerts` lists those in force");
    }
    let alert = if detail.cap_alert.is_empty() {
        // A node of an earlier version sends the first form only.
        let pb = chain_pb::Alert::decode(detail.alert.as_slice())
            .context("the node sent an alert that cannot be read")?;
        Alert::from_pb(pb).context("the node sent an invalid alert")?
    } else {
        let pb = chain_pb::CapAlert::decode(detail.cap_alert.as_slice())
            .context("the node sent an alert that cannot be read")?;
        Alert::from_cap_pb(pb).context("the node sent an invalid alert")?
    };
    Ok((alert, detail))
}

fn values_json(values: &[NamedValue]) -> serde_json::Value {
    values
        .iter()
        .map(|v| json!({"name": v.name, "value": v.value}))
        .collect()
}

fn time_json(t: &Option<CapTime>) -> serde_json::Value {
    t.as_ref()
        .map_or(serde_json::Value::Null, |t| cap::format_cap_time(t).into())
}

/// `alert show --json`: every element lifeline keeps.
fn alert_json(a: &Alert, detail: &api::AlertDetailReply) -> serde_json::Value {
    let infos: Vec<serde_json::Value> = a
        .infos
        .iter()
        .map(|i| {
            json!({
                "language": i.language,
                "categories": i.categories.iter().map(|&c| cap::category_name(c)).collect::<Vec<_>>(),
                "event": i.event,
                "response_types": i.response_types.iter().map(|&r| cap::response_type_name(r)).collect::<Vec<_>>(),
                "urgency": cap::urgency_name(i.urgency),
                "severity": cap::severity_name(i.severity),
                "certainty": cap::certainty_name(i.certainty),
                "audience": i.audience,
                "event_codes": values_json(&i.event_codes),
                "effective": time_json(&i.effective),
                "onset": time_json(&i.onset),
                "expires": time_json(&i.expires),
                "sender_name": i.sender_name,
                "headline": i.headline,
                "description": i.description,
                "instruction": i.instruction,
                "web": i.web,
                "contact": i.contact,
                "parameters": values_json(&i.parameters),
                "resources": i.resources.iter().map(|r| json!({
                    "description": r.description, "mime_type": r.mime_type, "size": r.size,
                    "uri": r.uri, "digest": r.digest,
                })).collect::<Vec<_>>(),
                "areas": i.areas.iter().map(|ar| json!({
                    "description": ar.description,
                    "polygons": ar.polygons.iter().map(|p| p.iter().map(|q| [q.lat, q.lon]).collect::<Vec<_>>()).collect::<Vec<_>>(),
                    "circles": ar.circles.iter().map(|c| json!({"center": [c.center.lat, c.center.lon], "radius_km": c.radius_km})).collect::<Vec<_>>(),
                    "geocodes": values_json(&ar.geocodes),
                    "altitude": ar.altitude, "ceiling": ar.ceiling,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "identifier": a.identifier, "sender": a.sender,
        "publisher": detail.publisher, "block": detail.block,
        "status": cap::status_name(a.status),
        "msg_type": cap::msg_type_name(a.msg_type),
        "severity": cap::severity_name(a.severity()),
        "sent": cap::format_cap_time(&a.sent),
        "sent_ms": a.sent.at.as_unix_millis(),
        "source": a.source, "codes": a.codes, "note": a.note,
        "references": a.references.iter().map(|r| json!({
            "sender": r.sender, "identifier": r.identifier, "sent": time_json(&r.sent),
        })).collect::<Vec<_>>(),
        "incidents": a.incidents,
        "infos": infos,
        "superseded_by": (!detail.superseded_by.is_empty()).then_some(&detail.superseded_by),
    })
}

fn print_alert(a: &Alert, detail: &api::AlertDetailReply) {
    println!(
        "{} {} {} by {}",
        cap::msg_type_name(a.msg_type).to_uppercase(),
        a.identifier,
        when(a.sent.at.as_unix_millis()),
        a.sender
    );
    if a.status != chain_pb::AlertStatus::Actual {
        println!(
            "status:     {} (not a real alert)",
            cap::status_name(a.status)
        );
    }
    println!("published:  block {} by {}", detail.block, detail.publisher);
    if !a.references.is_empty() {
        let ids: Vec<&str> = a.references.iter().map(|r| r.identifier.as_str()).collect();
        println!("replaces:   {}", ids.join(", "));
    }
    if !detail.superseded_by.is_empty() {
        println!("REPLACED by {}", detail.superseded_by);
    }
    if !a.note.is_empty() {
        println!("note:       {}", a.note);
    }
    if a.infos.is_empty() {
        println!(
            "(no info block: a {} carries no text)",
            cap::msg_type_name(a.msg_type)
        );
    }
    for i in &a.infos {
        print_info(i);
    }
}

fn print_info(i: &Info) {
    let categories: Vec<&str> = i
        .categories
        .iter()
        .map(|&c| cap::category_name(c))
        .collect();
    println!();
    let language = if i.language.is_empty() {
        String::new()
    } else {
        format!(" [{}]", i.language)
    };
    println!("{} — {}{language}", i.event.to_uppercase(), i.public_text());
    println!(
        "severity:   {} ({}, {}), {}",
        cap::severity_name(i.severity),
        cap::urgency_name(i.urgency),
        cap::certainty_name(i.certainty),
        categories.join(", ")
    );
    if !i.response_types.is_empty() {
        let r: Vec<&str> = i
            .response_types
            .iter()
            .map(|&r| cap::response_type_name(r))
            .collect();
        println!("response:   {}", r.join(", "));
    }
    if !i.sender_name.is_empty() {
        println!("from:       {}", i.sender_name);
    }
    if !i.audience.is_empty() {
        println!("for:        {}", i.audience);
    }
    for area in &i.areas {
        let codes: Vec<String> = area
            .geocodes
            .iter()
            .map(|g| format!("{} {}", g.name, g.value))
            .collect();
        let shape = match (area.polygons.len() + area.circles.len(), codes.is_empty()) {
            (0, false) => format!(" (by code only: {})", codes.join(", ")),
            (0, true) => String::new(),
            (n, _) => format!(" ({n} shape{})", if n == 1 { "" } else { "s" }),
        };
        println!("area:       {}{shape}", area.description);
    }
    match i.expires {
        Some(t) => println!("expires:    {}", when(t.at.as_unix_millis())),
        None => println!("expires:    not given (in force until replaced)"),
    }
    if !i.description.is_empty() {
        println!("\n{}", i.description);
    }
    if !i.instruction.is_empty() {
        println!("\nWhat to do: {}", i.instruction);
    }
    for p in &i.parameters {
        println!("{}: {}", p.name, p.value);
    }
    if !i.web.is_empty() {
        println!("more:       {}", i.web);
    }
    if !i.contact.is_empty() {
        println!("contact:    {}", i.contact);
    }
    for r in &i.resources {
        println!("resource:   {} ({}) {}", r.description, r.mime_type, r.uri);
    }
}

fn parse_near(text: &str) -> Result<(f64, f64)> {
    let bad = || anyhow::anyhow!("--near {text:?} is not LAT,LON in degrees (e.g. 51.335,12.33)");
    let (lat, lon) = text.split_once(',').ok_or_else(bad)?;
    let lat: f64 = lat.trim().parse().map_err(|_| bad())?;
    let lon: f64 = lon.trim().parse().map_err(|_| bad())?;
    if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
        bail!("--near {text:?} is out of range (latitude ±90, longitude ±180)");
    }
    Ok((lat, lon))
}

/// `lifeline alerts`.
pub fn alerts(ctx: &Ctx, args: AlertsArgs) -> Result<()> {
    let near = args.near.as_deref().map(parse_near).transpose()?;
    let json = ctx.json;
    runtime()?.block_on(async {
        let mut c = client(ctx).await?;
        let mut stream = c
            .alerts(api::AlertsRequest {
                watch: args.watch,
                near_lat: near.map(|p| p.0),
                near_lon: near.map(|p| p.1),
                language: args.lang.clone().unwrap_or_default(),
            })
            .await
            .map_err(why)?
            .into_inner();
        let mut any = false;
        while let Some(a) = stream.message().await.map_err(why)? {
            any = true;
            if json {
                println!(
                    "{}",
                    json!({
                        "identifier": a.identifier, "event": a.event, "severity": a.severity,
                        "headline": a.headline, "area": a.area, "sender": a.sender,
                        "publisher": a.publisher, "status": a.status,
                        "sent_ms": a.sent_ms, "expires_ms": a.expires_ms,
                        "instruction": a.instruction, "response_types": a.response_types,
                        "area_by_code_only": a.area_by_code_only,
                        "until_replaced": a.until_replaced,
                        "language": a.language, "languages": a.languages,
                    })
                );
                continue;
            }
            let status = if a.status == "Actual" {
                String::new()
            } else {
                format!(" [{}]", a.status.to_uppercase())
            };
            let until = if a.until_replaced {
                format!("until replaced (at most {})", when(a.expires_ms))
            } else {
                format!("until {}", when(a.expires_ms))
            };
            println!(
                "{} {}{status}: {} — {}\n  {until} · id {}",
                a.severity.to_uppercase(),
                a.event,
                a.area,
                a.headline,
                a.identifier
            );
            if a.area_by_code_only {
                println!(
                    "  the area is known by code only here: it may or may not include this point"
                );
            }
            if !a.response_types.is_empty() {
                println!("  response: {}", a.response_types.join(", "));
            }
            let others: Vec<&str> = a
                .languages
                .iter()
                .filter(|l| **l != a.language)
                .map(String::as_str)
                .collect();
            if !others.is_empty() {
                println!("  also in {} (--lang)", others.join(", "));
            }
            if !a.instruction.is_empty() {
                println!("  {}", a.instruction);
            }
        }
        if !any && !json {
            eprintln!(
                "No alert is in force{}.",
                if near.is_some() { " there" } else { "" }
            );
        }
        Ok(())
    })
}

/// `lifeline chain status`.
pub fn chain_status(ctx: &Ctx) -> Result<()> {
    let json = ctx.json;
    runtime()?.block_on(async {
        let mut c = client(ctx).await?;
        let s = c
            .chain_status(api::ChainStatusRequest {})
            .await
            .map_err(why)?
            .into_inner();
        if !s.enabled {
            bail!(
                "this node keeps no chain: it has no genesis file (put the network's \
                 genesis.toml in its data folder and restart it)"
            );
        }
        if json {
            print_json(&chain_json(&s));
            return Ok(());
        }
        print_chain(&s);
        println!("genesis:     {}", s.genesis_hash);
        println!("head hash:   {}", s.head_hash);
        println!("identities:  {}", s.identities);
        for a in &s.authorities {
            let name = c
                .identities(api::IdentitiesRequest { query: a.clone() })
                .await
                .ok()
                .and_then(|r| r.into_inner().identities.into_iter().next())
                .map(|i| format!(" ({})", i.name))
                .unwrap_or_default();
            println!("  authority  {a}{name}");
        }
        Ok(())
    })
}

/// `lifeline chain block N`.
pub fn chain_block(ctx: &Ctx, number: u64) -> Result<()> {
    let json = ctx.json;
    runtime()?.block_on(async {
        let mut c = client(ctx).await?;
        let b = c
            .block(api::BlockRequest { number })
            .await
            .map_err(why)?
            .into_inner();
        if !b.found {
            let head = c
                .chain_status(api::ChainStatusRequest {})
                .await
                .map_err(why)?
                .into_inner()
                .head_number;
            bail!("there is no block {number} yet: the head is block {head}");
        }
        if json {
            print_json(&json!({
                "number": b.number, "hash": b.hash, "signer": b.signer,
                "timestamp_ms": b.timestamp_ms, "finalized": b.finalized,
                "transactions": b.transaction_hashes,
                "vote": (!b.vote_target.is_empty()).then(|| json!({
                    "target": b.vote_target, "authorize": b.vote_authorize,
                })),
            }));
            return Ok(());
        }
        println!(
            "block:        {}{}",
            b.number,
            if b.finalized { " (final)" } else { "" }
        );
        println!("hash:         {}", b.hash);
        println!("sealed by:    {}", b.signer);
        println!(
            "time:         {} ({})",
            when(b.timestamp_ms),
            age(b.timestamp_ms)
        );
        if !b.vote_target.is_empty() {
            let verb = if b.vote_authorize { "add" } else { "drop" };
            println!("vote:         {verb} {}", b.vote_target);
        }
        println!("transactions: {}", b.transactions);
        for h in &b.transaction_hashes {
            println!("  {h}");
        }
        Ok(())
    })
}

/// `lifeline chain vote`.
pub fn chain_vote(ctx: &Ctx, command: VoteCommand) -> Result<()> {
    let (who, authorize) = match command {
        VoteCommand::Add { who } => (who, true),
        VoteCommand::Drop { who } => (who, false),
    };
    let json = ctx.json;
    runtime()?.block_on(async {
        let mut c = client(ctx).await?;
        let target = resolve(&mut c, &who).await?;
        c.vote(api::VoteRequest {
            target: target.clone(),
            authorize,
        })
        .await
        .map_err(why)?;
        if json {
            print_json(&json!({"target": target, "authorize": authorize}));
        } else {
            let verb = if authorize { "add" } else { "drop" };
            println!(
                "Vote to {verb} {target} goes into this authority's next block. It takes effect \
                 once more than half of the authorities have voted the same way."
            );
        }
        Ok(())
    })
}

/// `lifeline chain tx HASH`.
pub fn chain_tx(ctx: &Ctx, hash: String) -> Result<()> {
    let json = ctx.json;
    runtime()?.block_on(async {
        let mut c = client(ctx).await?;
        let s = c
            .transaction_status(api::TransactionStatusRequest { hash: hash.clone() })
            .await
            .map_err(why)?
            .into_inner();
        if json {
            print_json(&json!({"hash": hash, "status": s.status, "block": s.block}));
        } else if s.block > 0 {
            println!("{} in block {}", s.status, s.block);
        } else if s.status == "unknown" {
            println!(
                "unknown: not in the last 1024 blocks, and not waiting here (it may have been \
                 refused; submit it again)"
            );
        } else {
            println!("{}", s.status);
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const NOW: u64 = 1_795_046_400_000; // 2026-11-19T00:00:00Z

    #[test]
    fn until_takes_dates_times_and_durations() {
        // A date runs through that day, UTC.
        assert_eq!(parse_until("2027-06-30", NOW).unwrap(), 1_814_400_000_000);
        assert_eq!(
            parse_until("2027-06-30T18:00:00+02:00", NOW).unwrap(),
            1_814_371_200_000
        );
        assert_eq!(parse_until("90days", NOW).unwrap(), NOW + 90 * 86_400_000);
    }

    #[test]
    fn until_refuses_what_is_not_a_date_or_is_past() {
        let e = parse_until("30/06/2027", NOW).unwrap_err().to_string();
        assert!(e.contains("not a date") && e.contains("2027-06-30"), "{e}");
        let e = parse_until("2020-01-01", NOW).unwrap_err().to_string();
        assert!(e.contains("in the past"), "{e}");
    }

    fn identity(name: &str, id: &str) -> api::Identity {
        api::Identity {
            id: id.into(),
            name: name.into(),
            ..api::Identity::default()
        }
    }

    #[test]
    fn a_name_resolves_only_when_it_is_unambiguous() {
        let shelter = [identity("Shelter", "A"), identity("shelter", "B")];
        assert_eq!(pick("Shelter", &shelter[..1], &[]).unwrap(), "A");
        let e = pick("shelter", &shelter, &[]).unwrap_err().to_string();
        assert!(
            e.contains("2 identities are named") && e.contains(" A") && e.contains(" B"),
            "{e}"
        );
        let everyone = [
            identity("Shelter North", "N"),
            identity("ana", "X"),
            identity("Clinic", "C"),
        ];
        let e = pick("shelter", &[], &everyone).unwrap_err().to_string();
        assert!(e.contains("Did you mean") && e.contains(" N"), "{e}");
        assert!(!e.contains(" C"), "an unrelated name was suggested: {e}");
        let e = pick("zzz", &[], &everyone).unwrap_err().to_string();
        assert!(e.contains("3 are") && e.contains("identity list"), "{e}");
    }

    #[test]
    fn near_is_checked() {
        assert_eq!(parse_near("51.3,-12.5").unwrap(), (51.3, -12.5));
        assert!(parse_near("91,0").is_err());
        assert!(parse_near("north").is_err());
    }
}
