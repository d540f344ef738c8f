//! End-to-end tests of `lifeline key`, `seal` and `open`: the real binary, real
//! files, real key derivation.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use lifeline_crypto::keystore::KeyBundle;
use predicates::prelude::*;
use predicates::str::contains;
use tempfile::TempDir;

const PASS: &str = "correct horse battery staple";

struct Env {
    dir: TempDir,
}

impl Env {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `lifeline` with a data dir named `who` and the passphrase in the environment.
    fn cmd(&self, who: &str) -> Command {
        let mut cmd = Command::cargo_bin("lifeline").unwrap();
        cmd.env_clear()
            .env("LIFELINE_PASSPHRASE", PASS)
            .arg("--data-dir")
            .arg(self.path(who));
        cmd
    }

    fn generate(&self, who: &str) -> String {
        let out = self.cmd(who).args(["key", "generate"]).assert().success();
        String::from_utf8(out.get_output().stdout.clone()).unwrap()
    }

    fn show(&self, who: &str) -> String {
        let out = self.cmd(who).args(["key", "show"]).assert().success();
        String::from_utf8(out.get_output().stdout.clone()).unwrap()
    }
}

fn field<'a>(text: &'a str, name: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
        .trim()
}

fn decrypt(path: &Path) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap();
    KeyBundle::decrypt(&bytes, PASS.as_bytes())
        .unwrap()
        .0
        .to_bytes()
        .to_vec()
}

#[test]
fn generate_then_show_reports_the_same_identity() {
    let env = Env::new();
    let generated = env.generate("alice");
    let shown = env.show("alice");
    let id = field(&generated, "id:");
    assert!(id.starts_with("12D3KooW"), "{id}");
    assert_eq!(field(&shown, "id:"), id);
    assert_eq!(
        field(&shown, "fingerprint:"),
        field(&generated, "fingerprint:")
    );
    assert_eq!(field(&shown, "prekey:"), field(&generated, "prekey:"));
    assert!(shown.contains("less than a minute ago"), "{shown}");
}

#[cfg(unix)]
#[test]
fn keystore_is_created_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    env.generate("alice");
    let mode = std::fs::metadata(env.path("alice/keystore"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o077,
        0,
        "keystore mode {mode:o} is readable by others"
    );
}

#[test]
fn generate_refuses_to_replace_a_key_without_force_and_keeps_it_with_force() {
    let env = Env::new();
    let first = env.generate("alice");
    let before = std::fs::read(env.path("alice/keystore")).unwrap();
    env.cmd("alice")
        .args(["key", "generate"])
        .assert()
        .failure()
        .stderr(contains("already exists").and(contains("--force")));
    assert_eq!(std::fs::read(env.path("alice/keystore")).unwrap(), before);

    let second = env
        .cmd("alice")
        .args(["key", "generate", "--force"])
        .assert()
        .success();
    let second = String::from_utf8(second.get_output().stdout.clone()).unwrap();
    assert_ne!(field(&second, "id:"), field(&first, "id:"));
    let kept: Vec<_> = std::fs::read_dir(env.path("alice"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("keystore.replaced-")
        })
        .collect();
    assert_eq!(kept.len(), 1);
    assert_eq!(std::fs::read(&kept[0]).unwrap(), before);
}

#[test]
fn export_and_import_round_trip_exactly() {
    let env = Env::new();
    env.generate("alice");
    env.cmd("alice")
        .args(["key", "rotate-prekey"])
        .assert()
        .success();
    let backup = env.path("backup.key");
    env.cmd("alice")
        .args(["key", "export"])
        .arg(&backup)
        .assert()
        .success()
        .stdout(contains("Wrote an encrypted backup"));
    // The backup is encrypted: it does not contain the keystore's plaintext.
    let plain = decrypt(&env.path("alice/keystore"));
    let raw = std::fs::read(&backup).unwrap();
    assert!(!raw.windows(32).any(|w| plain.windows(32).any(|p| p == w)));

    env.cmd("restored")
        .args(["key", "import"])
        .arg(&backup)
        .assert()
        .success();
    assert_eq!(decrypt(&env.path("restored/keystore")), plain);
    assert_eq!(
        env.show("restored").replace("restored", "X"),
        env.show("alice").replace("alice", "X")
    );
}

#[test]
fn export_never_overwrites_without_force() {
    let env = Env::new();
    env.generate("alice");
    let backup = env.path("backup.key");
    std::fs::write(&backup, b"precious").unwrap();
    env.cmd("alice")
        .args(["key", "export"])
        .arg(&backup)
        .assert()
        .failure()
        .stderr(contains("already exists"));
    assert_eq!(std::fs::read(&backup).unwrap(), b"precious");
    env.cmd("alice")
        .args(["key", "export", "--force"])
        .arg(&backup)
        .assert()
        .success();
    assert_ne!(std::fs::read(&backup).unwrap(), b"precious");
}

#[test]
fn import_refuses_to_replace_an_existing_keystore() {
    let env = Env::new();
    env.generate("alice");
    env.generate("bob");
    let backup = env.path("alice.key");
    env.cmd("alice")
        .args(["key", "export"])
        .arg(&backup)
        .assert()
        .success();
    let bob_before = std::fs::read(env.path("bob/keystore")).unwrap();
    env.cmd("bob")
        .args(["key", "import"])
        .arg(&backup)
        .assert()
        .failure()
        .stderr(contains("already exists"));
    assert_eq!(std::fs::read(env.path("bob/keystore")).unwrap(), bob_before);
}

#[test]
fn wrong_passphrase_is_a_clear_error() {
    let env = Env::new();
    env.generate("alice");
    env.cmd("alice")
        .env("LIFELINE_PASSPHRASE", "not the passphrase")
        .args(["key", "show"])
        .assert()
        .failure()
        .stderr(contains("wrong passphrase"));
}

#[test]
fn passphrase_file_is_read_and_takes_precedence() {
    let env = Env::new();
    let file = env.path("pass.txt");
    std::fs::write(&file, format!("{PASS}\n")).unwrap();
    env.generate("alice");
    env.cmd("alice")
        .env("LIFELINE_PASSPHRASE", "something else entirely")
        .arg("--passphrase-file")
        .arg(&file)
        .args(["key", "show"])
        .assert()
        .success();
    env.cmd("alice")
        .arg("--passphrase-file")
        .arg(env.path("missing.txt"))
        .args(["key", "show"])
        .assert()
        .failure()
        .stderr(contains("cannot read the passphrase file"));
}

#[test]
fn missing_keystore_says_how_to_make_one() {
    let env = Env::new();
    env.cmd("nobody")
        .args(["key", "show"])
        .assert()
        .failure()
        .stderr(contains("no keystore").and(contains("lifeline key generate")));
}

#[test]
fn corrupt_keystore_is_reported_as_damaged_not_as_a_wrong_passphrase() {
    let env = Env::new();
    env.generate("alice");
    let path = env.path("alice/keystore");
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    env.cmd("alice")
        .args(["key", "show"])
        .assert()
        .failure()
        .stderr(contains("damaged").and(contains("wrong passphrase").not()));
    std::fs::write(&path, b"").unwrap();
    env.cmd("alice")
        .args(["key", "show"])
        .assert()
        .failure()
        .stderr(contains("damaged"));
}

#[test]
fn unreadable_or_bogus_backup_is_a_clear_error() {
    let env = Env::new();
    env.cmd("alice")
        .args(["key", "import"])
        .arg(env.path("nope.key"))
        .assert()
        .failure()
        .stderr(contains("no backup file"));
    let bogus = env.path("bogus.key");
    std::fs::write(&bogus, b"this is not a backup").unwrap();
    env.cmd("alice")
        .args(["key", "import"])
        .arg(&bogus)
        .assert()
        .failure()
        .stderr(contains("damaged"));
    assert!(!env.path("alice/keystore").exists());
}

#[test]
fn short_new_passphrase_is_refused_and_nothing_is_written() {
    let env = Env::new();
    env.cmd("alice")
        .env("LIFELINE_PASSPHRASE", "short")
        .args(["key", "generate"])
        .assert()
        .failure()
        .stderr(contains("too short"));
    assert!(!env.path("alice/keystore").exists());
}

#[test]
fn no_passphrase_source_without_a_terminal_is_a_clear_error() {
    let env = Env::new();
    env.generate("alice");
    env.cmd("alice")
        .env_remove("LIFELINE_PASSPHRASE")
        .args(["key", "show"])
        .assert()
        .failure()
        .stderr(contains("LIFELINE_PASSPHRASE").and(contains("--passphrase-file")));
}

#[test]
fn rotate_prekey_changes_the_card_and_old_envelopes_still_open() {
    let env = Env::new();
    env.generate("alice");
    env.generate("bob");
    let card = env.path("bob.card");
    let out = env.cmd("bob").args(["key", "card"]).assert().success();
    std::fs::write(&card, &out.get_output().stdout).unwrap();
    let sealed = env
        .cmd("alice")
        .args(["seal", "--to"])
        .arg(&card)
        .arg("before rotation")
        .assert()
        .success();
    let envelope = env.path("msg.env");
    std::fs::write(&envelope, &sealed.get_output().stdout).unwrap();

    let before = field(&env.show("bob"), "prekey:").to_string();
    env.cmd("bob")
        .args(["key", "rotate-prekey"])
        .assert()
        .success()
        .stdout(contains("New prekey"));
    assert_ne!(field(&env.show("bob"), "prekey:"), before);
    env.cmd("bob")
        .arg("open")
        .arg(&envelope)
        .assert()
        .success()
        .stdout("before rotation");
}

#[test]
fn seal_and_open_between_two_identities() {
    let env = Env::new();
    let alice = env.generate("alice");
    env.generate("bob");
    env.generate("carol");
    let card = env.path("bob.card");
    let out = env.cmd("bob").args(["key", "card"]).assert().success();
    std::fs::write(&card, &out.get_output().stdout).unwrap();

    let sealed = env
        .cmd("alice")
        .args(["seal", "--to"])
        .arg(&card)
        .write_stdin("water at the school\n")
        .assert()
        .success();
    let envelope = env.path("msg.env");
    std::fs::write(&envelope, &sealed.get_output().stdout).unwrap();

    env.cmd("bob")
        .arg("open")
        .arg(&envelope)
        .assert()
        .success()
        .stdout("water at the school\n")
        .stderr(contains(field(&alice, "id:")).and(contains(field(&alice, "fingerprint:"))));
    env.cmd("carol")
        .arg("open")
        .arg(&envelope)
        .assert()
        .failure()
        .stderr(contains("not to this identity"));
    // A card passed where an envelope belongs is named as such.
    env.cmd("bob")
        .arg("open")
        .arg(&card)
        .assert()
        .failure()
        .stderr(contains("Card"));
}
