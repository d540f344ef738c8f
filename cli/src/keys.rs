//! `lifeline key ...`: create, show, back up, restore and rotate keys; and the
//! offline `card`, `seal` and `open` that use them.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use lifeline_crypto::envelope::{self, MAX_CONTENT_LEN, MAX_ENVELOPE_LEN, OpenPolicy, ReplayGuard};
use lifeline_crypto::keystore::{self, KdfParams, KeyBundle, Purpose};
use lifeline_crypto::prekey::MAX_SIGNED_PREKEY_LEN;
use lifeline_crypto::{Keystore, KeystoreError, PrekeyPolicy, PublicPrekey, Timestamp};
use zeroize::Zeroizing;

use crate::passphrase::{self, Use};
use crate::{Context as Ctx, paths};
use lifeline_crypto::armor::{self, Kind};

/// `lifeline key` subcommands.
#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// Create this device's identity (an ed25519 key and its first prekey)
    #[command(
        after_help = "Example:\n  lifeline key generate\n  LIFELINE_PASSPHRASE=... lifeline key generate --data-dir /srv/lifeline"
    )]
    Generate {
        /// Replace an existing keystore (it is kept beside the new one as keystore.replaced-TIME)
        #[arg(long)]
        force: bool,
    },
    /// Show this identity: id, fingerprint, current prekey and its age
    Show,
    /// Write an encrypted backup of all keys to FILE (protected by the keystore's passphrase)
    #[command(after_help = "Example:\n  lifeline key export /media/usb/lifeline-backup.key")]
    Export {
        /// Where to write the backup
        file: PathBuf,
        /// Overwrite FILE if it exists
        #[arg(long)]
        force: bool,
    },
    /// Restore keys from a backup made by `key export`
    #[command(after_help = "Example:\n  lifeline key import /media/usb/lifeline-backup.key")]
    Import {
        /// The backup file
        file: PathBuf,
        /// Replace an existing keystore (it is kept beside the new one as keystore.replaced-TIME)
        #[arg(long)]
        force: bool,
    },
    /// Make a new prekey now and delete old prekeys whose grace period is over
    RotatePrekey,
    /// Print your contact card: what others need to seal messages to you
    #[command(
        after_help = "Example:\n  lifeline key card > me.card   # give me.card to your contacts"
    )]
    Card,
}

/// Arguments of `lifeline seal`.
#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  lifeline seal --to bob.card 'water at the school' > msg.env\n  echo 'on my way' | lifeline seal --to bob.card > msg.env"
)]
pub struct SealArgs {
    /// The recipient's contact card file (from `lifeline key card`)
    #[arg(long, value_name = "CARD")]
    to: PathBuf,
    /// The message; read from standard input if absent or `-`
    text: Option<String>,
}

/// Arguments of `lifeline open`.
#[derive(Args, Debug)]
#[command(after_help = "Example:\n  lifeline open msg.env")]
pub struct OpenArgs {
    /// The envelope file; read from standard input if absent or `-`
    file: Option<PathBuf>,
}

/// Runs a `lifeline key` subcommand.
pub fn run(ctx: &Ctx, command: KeyCommand) -> Result<()> {
    match command {
        KeyCommand::Generate { force } => generate(ctx, force),
        KeyCommand::Show => show(ctx),
        KeyCommand::Export { file, force } => export(ctx, &file, force),
        KeyCommand::Import { file, force } => import(ctx, &file, force),
        KeyCommand::RotatePrekey => rotate_prekey(ctx),
        KeyCommand::Card => card(ctx),
    }
}

pub(crate) fn now() -> Timestamp {
    Timestamp::from_system_time(SystemTime::now())
}

pub(crate) fn keystore_of(ctx: &Ctx) -> Keystore {
    Keystore::at(paths::keystore(&ctx.data_dir))
}

pub(crate) fn keystore_label(store: &Keystore) -> String {
    format!("the keystore {}", store.path().display())
}

/// Loads and decrypts the keystore, with errors that say what to do.
pub(crate) fn load(ctx: &Ctx) -> Result<(Keystore, KeyBundle, Zeroizing<String>)> {
    let store = keystore_of(ctx);
    if !store.exists() {
        bail!(KeystoreError::NotFound(store.path().to_path_buf()));
    }
    let label = keystore_label(&store);
    let pass = passphrase::read(ctx.passphrase_file.as_deref(), Use::Existing, &label)?;
    let bundle = store.load(pass.as_bytes()).map_err(|e| match e {
        KeystoreError::WrongPassphrase => anyhow::anyhow!(
            "wrong passphrase for {label}; check {} or --passphrase-file",
            passphrase::ENV
        ),
        other => anyhow::Error::new(other).context(format!("cannot open {label}")),
    })?;
    Ok((store, bundle, pass))
}

/// Moves an existing keystore aside so that `--force` never destroys keys.
fn keep_aside(store: &Keystore) -> Result<Option<PathBuf>> {
    if !store.exists() {
        return Ok(None);
    }
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let aside = store
        .path()
        .with_file_name(format!("keystore.replaced-{secs}"));
    if aside.exists() {
        bail!(
            "{} already exists; wait a second and try again",
            aside.display()
        );
    }
    std::fs::rename(store.path(), &aside)
        .with_context(|| format!("cannot move the old keystore aside to {}", aside.display()))?;
    Ok(Some(aside))
}

fn refuse_existing(store: &Keystore, verb: &str) -> Result<()> {
    if store.exists() {
        bail!(
            "a keystore already exists at {}; nothing was changed. To {verb} anyway, add --force \
             (the old keystore is kept as keystore.replaced-TIME)",
            store.path().display()
        );
    }
    Ok(())
}

fn generate(ctx: &Ctx, force: bool) -> Result<()> {
    let store = keystore_of(ctx);
    if !force {
        refuse_existing(&store, "replace it")?;
    }
    let pass = passphrase::read(ctx.passphrase_file.as_deref(), Use::New, "the new keystore")?;
    let mut rng = rand::rng();
    let bundle = KeyBundle::generate(now(), &mut rng);
    let aside = if force { keep_aside(&store)? } else { None };
    store
        .create(&bundle, pass.as_bytes(), KdfParams::DEFAULT, &mut rng)
        .with_context(|| format!("cannot write {}", keystore_label(&store)))?;
    let mut out = String::from("Created a new identity.\n");
    if let Some(aside) = aside {
        let _ = writeln!(out, "The previous keystore was kept as {}", aside.display());
    }
    out.push_str(&describe(&store, &bundle, now()));
    out.push_str(
        "\nBack it up with `lifeline key export FILE`, and compare fingerprints by voice \
         before trusting a contact.\n",
    );
    print!("{out}");
    Ok(())
}

fn show(ctx: &Ctx) -> Result<()> {
    let (store, bundle, _) = load(ctx)?;
    print!("{}", describe(&store, &bundle, now()));
    Ok(())
}

/// The human description of an identity that `generate`, `show` and `import` print.
fn describe(store: &Keystore, bundle: &KeyBundle, now: Timestamp) -> String {
    let policy = PrekeyPolicy::default();
    let id = bundle.identity.id();
    let current = bundle.prekeys.current();
    let age = now.saturating_duration_since(current.created_at());
    let held = bundle.prekeys.entries().filter(|e| e.has_secret()).count();
    let mut out = String::new();
    let _ = writeln!(out, "id:          {id}");
    let _ = writeln!(out, "fingerprint: {}", id.fingerprint());
    let _ = writeln!(out, "prekey:      {}", hex(current.key()));
    let _ = writeln!(
        out,
        "  created:   {} ({} ago)",
        rfc3339(current.created_at()),
        human_age(age)
    );
    let _ = writeln!(
        out,
        "  rotation:  every {}; {}",
        human_age(policy.rotate_every),
        if bundle.prekeys.rotation_due(now, &policy) {
            "due now: run `lifeline key rotate-prekey`".to_string()
        } else {
            format!(
                "next in {}",
                human_age(policy.rotate_every.saturating_sub(age))
            )
        }
    );
    let _ = writeln!(
        out,
        "  held:      {held} prekey secret(s), including older ones in their grace period"
    );
    let _ = writeln!(out, "keystore:    {}", store.path().display());
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn rfc3339(at: Timestamp) -> String {
    let time = UNIX_EPOCH + Duration::from_millis(at.as_unix_millis());
    humantime::format_rfc3339_seconds(time).to_string()
}

/// A duration for people: whole days, hours and minutes ("7d", "23h 59m").
fn human_age(age: Duration) -> String {
    let minutes = age.as_secs() / 60;
    if minutes == 0 {
        return "less than a minute".to_string();
    }
    let (days, hours, mins) = (minutes / 1440, minutes / 60 % 24, minutes % 60);
    let parts: Vec<String> = [(days, "d"), (hours, "h"), (mins, "m")]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect();
    parts.join(" ")
}

fn export(ctx: &Ctx, file: &Path, force: bool) -> Result<()> {
    let (_, bundle, pass) = load(ctx)?;
    let mut rng = rand::rng();
    let bytes = bundle
        .encrypt(
            pass.as_bytes(),
            Purpose::Backup,
            KdfParams::DEFAULT,
            &mut rng,
        )
        .context("cannot encrypt the backup")?;
    keystore::write_atomically(file, &bytes, force).map_err(|e| match e {
        KeystoreError::AlreadyExists(path) => anyhow::anyhow!(
            "{} already exists; nothing was written. Choose another file or add --force to overwrite it",
            path.display()
        ),
        other => anyhow::Error::new(other).context("cannot write the backup"),
    })?;
    println!(
        "Wrote an encrypted backup of {} to {}.",
        bundle.identity.id(),
        file.display()
    );
    println!("It is protected by the keystore's passphrase: keep both, in different places.");
    Ok(())
}

fn import(ctx: &Ctx, file: &Path, force: bool) -> Result<()> {
    let store = keystore_of(ctx);
    if !force {
        refuse_existing(&store, "replace it with the backup")?;
    }
    let bytes = Keystore::read_bytes(file).map_err(|e| match e {
        KeystoreError::NotFound(path) => anyhow::anyhow!("no backup file at {}", path.display()),
        other => {
            anyhow::Error::new(other).context(format!("cannot read the backup {}", file.display()))
        }
    })?;
    let label = format!("the backup {}", file.display());
    let pass = passphrase::read(ctx.passphrase_file.as_deref(), Use::Existing, &label)?;
    let (bundle, _) = KeyBundle::decrypt(&bytes, pass.as_bytes()).map_err(|e| match e {
        KeystoreError::WrongPassphrase => anyhow::anyhow!(
            "wrong passphrase for {label} (it is the passphrase of the keystore it was exported from)"
        ),
        other => anyhow::Error::new(other).context(format!("cannot read {label}")),
    })?;
    let mut rng = rand::rng();
    let aside = if force { keep_aside(&store)? } else { None };
    store
        .create(&bundle, pass.as_bytes(), KdfParams::DEFAULT, &mut rng)
        .with_context(|| format!("cannot write {}", keystore_label(&store)))?;
    println!("Imported the identity from {}.", file.display());
    if let Some(aside) = aside {
        println!("The previous keystore was kept as {}", aside.display());
    }
    print!("{}", describe(&store, &bundle, now()));
    Ok(())
}

fn rotate_prekey(ctx: &Ctx) -> Result<()> {
    let (store, mut bundle, pass) = load(ctx)?;
    let policy = PrekeyPolicy::default();
    let mut rng = rand::rng();
    let at = now();
    let old = *bundle.prekeys.current().key();
    bundle
        .prekeys
        .rotate(&bundle.identity, at, &policy, &mut rng);
    let deleted = bundle.prekeys.prune(at, &policy);
    store
        .save(&bundle, pass.as_bytes(), KdfParams::DEFAULT, &mut rng)
        .with_context(|| format!("cannot write {}", keystore_label(&store)))?;
    println!("New prekey:  {}", hex(bundle.prekeys.current().key()));
    println!(
        "Old prekey:  {} (still opens messages for {})",
        hex(&old),
        human_age(policy.grace)
    );
    if !deleted.is_empty() {
        println!("Deleted {} expired prekey secret(s).", deleted.len());
    }
    println!("Give your contacts your new card (`lifeline key card`).");
    Ok(())
}

fn card(ctx: &Ctx) -> Result<()> {
    let (_, bundle, _) = load(ctx)?;
    let id = bundle.identity.id();
    eprintln!("Contact card of {id}, fingerprint {}", id.fingerprint());
    println!(
        "{}",
        armor::encode(Kind::Card, bundle.prekeys.current().to_bytes())
    );
    Ok(())
}

/// Reads a file, or standard input for `None` or `-`, refusing more than `max` bytes.
pub(crate) fn read_input(file: Option<&Path>, max: usize, what: &str) -> Result<Vec<u8>> {
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    let mut bytes = Vec::new();
    match file.filter(|f| f.as_os_str() != "-") {
        Some(path) => std::fs::File::open(path)
            .and_then(|f| f.take(limit).read_to_end(&mut bytes))
            .with_context(|| format!("cannot read {what} from {}", path.display()))?,
        None => std::io::stdin()
            .take(limit)
            .read_to_end(&mut bytes)
            .with_context(|| format!("cannot read {what} from standard input"))?,
    };
    if bytes.len() > max {
        bail!("{what} is larger than the {max} bytes allowed");
    }
    Ok(bytes)
}

/// `lifeline seal`.
pub fn seal(ctx: &Ctx, args: SealArgs) -> Result<()> {
    let card_text = read_input(
        Some(&args.to),
        MAX_SIGNED_PREKEY_LEN * 2 + 64,
        "the contact card",
    )?;
    let card_text = String::from_utf8(card_text).context("the contact card is not text")?;
    let card = armor::decode(Kind::Card, &card_text, MAX_SIGNED_PREKEY_LEN)
        .with_context(|| format!("cannot read the contact card {}", args.to.display()))?;
    let recipient = PublicPrekey::from_bytes(&card)
        .with_context(|| format!("the contact card {} is invalid", args.to.display()))?;
    let content = match args.text.filter(|t| t != "-") {
        Some(text) => text.into_bytes(),
        None => read_input(None, MAX_CONTENT_LEN, "the message")?,
    };
    let (_, bundle, _) = load(ctx)?;
    let sealed = envelope::seal(
        &bundle.identity,
        &recipient,
        &content,
        now(),
        &mut rand::rng(),
    )
    .context("cannot seal the message")?;
    eprintln!(
        "Sealed message {} to {} (fingerprint {}).",
        sealed.message_id,
        recipient.owner(),
        recipient.owner().fingerprint()
    );
    println!("{}", armor::encode(Kind::Envelope, &sealed.bytes));
    Ok(())
}

/// `lifeline open`.
pub fn open(ctx: &Ctx, args: OpenArgs) -> Result<()> {
    let text = read_input(
        args.file.as_deref(),
        MAX_ENVELOPE_LEN * 4 / 3 + 64,
        "the envelope",
    )?;
    let text = String::from_utf8(text).context("the envelope is not text")?;
    let bytes = armor::decode(Kind::Envelope, &text, MAX_ENVELOPE_LEN)?;
    let (_, bundle, _) = load(ctx)?;
    // A one-off open has no history of earlier messages: the daemon keeps the
    // replay guard that spans messages.
    let opened = envelope::open(
        &bytes,
        &bundle.identity,
        &bundle.prekeys,
        &mut ReplayGuard::default(),
        now(),
        &OpenPolicy::default(),
    )
    .context("cannot open the envelope")?;
    eprintln!(
        "From:    {} (fingerprint {})",
        opened.sender,
        opened.sender.fingerprint()
    );
    eprintln!("Sent:    {}", rfc3339(opened.created_at));
    eprintln!("Message: {}", opened.message_id);
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&opened.content)?;
    if !opened.content.ends_with(b"\n") && std::io::IsTerminal::is_terminal(&stdout) {
        stdout.write_all(b"\n")?;
    }
    Ok(())
}
