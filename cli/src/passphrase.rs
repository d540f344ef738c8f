//! Where passphrases come from: `--passphrase-file`, `LIFELINE_PASSPHRASE`, or
//! a prompt on the terminal, in that order.

use std::io::IsTerminal;
use std::path::Path;

use anyhow::{Context, Result, bail};
use zeroize::Zeroizing;

/// Shortest passphrase accepted for a new keystore or backup.
pub const MIN_NEW_LEN: usize = 8;
/// The environment variable holding the passphrase.
pub const ENV: &str = "LIFELINE_PASSPHRASE";

/// Whether a passphrase protects an existing file or a file about to be made.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// Opening an existing keystore or backup.
    Existing,
    /// Choosing one for a new keystore (asked twice at a prompt).
    New,
}

/// Reads the passphrase for `what` (used in prompts and errors).
pub fn read(file: Option<&Path>, usage: Use, what: &str) -> Result<Zeroizing<String>> {
    let passphrase = if let Some(file) = file {
        let text = Zeroizing::new(
            std::fs::read_to_string(file)
                .with_context(|| format!("cannot read the passphrase file {}", file.display()))?,
        );
        let line = text.strip_suffix('\n').unwrap_or(&text);
        Zeroizing::new(line.strip_suffix('\r').unwrap_or(line).to_owned())
    } else if let Some(value) = std::env::var_os(ENV) {
        Zeroizing::new(
            value
                .into_string()
                .map_err(|_| anyhow::anyhow!("{ENV} is not valid UTF-8"))?,
        )
    } else {
        prompt(usage, what)?
    };
    if passphrase.is_empty() {
        bail!("the passphrase for {what} is empty; give a non-empty one");
    }
    if usage == Use::New && passphrase.chars().count() < MIN_NEW_LEN {
        bail!(
            "the new passphrase for {what} is too short; use at least {MIN_NEW_LEN} characters \
             (a few unrelated words are easy to remember and hard to guess)"
        );
    }
    Ok(passphrase)
}

fn prompt(usage: Use, what: &str) -> Result<Zeroizing<String>> {
    if !std::io::stdin().is_terminal() {
        bail!(
            "no passphrase for {what}: run in a terminal to be asked, set {ENV}, \
             or pass --passphrase-file FILE"
        );
    }
    let first = Zeroizing::new(
        rpassword::prompt_password(format!("Passphrase for {what}: "))
            .context("cannot read the passphrase from the terminal")?,
    );
    if usage == Use::New {
        let again = Zeroizing::new(
            rpassword::prompt_password("Repeat the passphrase: ")
                .context("cannot read the passphrase from the terminal")?,
        );
        if *first != *again {
            bail!("the two passphrases differ; nothing was written, try again");
        }
    }
    Ok(first)
}
