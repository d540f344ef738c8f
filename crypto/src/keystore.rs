//! The encrypted keystore: one file holding an identity and its prekeys.
//!
//! Format (`docs/protocol.md`): a cleartext header (format, purpose, argon2id
//! parameters, salt, nonce), the XChaCha20-Poly1305 encryption of the secrets
//! under a key that argon2id derives from the passphrase, with the header as
//! associated data, and a blake3 checksum of both so that a damaged file is not
//! mistaken for a wrong passphrase. Key backups use the same format.
//!
//! Files are written to a temporary file in the same folder with owner-only
//! permissions, synced, then renamed into place, so a crash leaves either the old
//! or the new keystore, never half of one.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use prost::Message;
use rand_core::CryptoRng;
use thiserror::Error;
use zeroize::Zeroizing;

use crate::identity::{Identity, IdentityError};
use crate::prekey::{PrekeyRing, RingError};
use crate::time::Timestamp;
use crate::wire::{self, DecodeError, pb};

/// The keystore format this crate writes and reads.
pub const KEYSTORE_FORMAT: u32 = 1;
/// Largest keystore or backup file read.
pub const MAX_KEYSTORE_LEN: usize = 64 * 1024;
const MAX_HEADER_LEN: usize = 256;
const SALT_LEN: usize = 16;

/// Argon2id cost parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes over the memory.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl KdfParams {
    /// What new keystores use: 64 MiB, 3 passes, 1 lane (about a quarter of a
    /// second on a small machine; above OWASP's argon2id recommendation).
    pub const DEFAULT: Self = Self {
        memory_kib: 64 * 1024,
        iterations: 3,
        parallelism: 1,
    };
    /// Cheap parameters for tests only: never use them for real keys.
    pub const INSECURE_FOR_TESTS: Self = Self {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };
    /// Most memory a keystore file may demand (1 GiB): a hostile file must not
    /// be able to exhaust the machine.
    pub const MAX_MEMORY_KIB: u32 = 1024 * 1024;
    /// Most passes a keystore file may demand.
    pub const MAX_ITERATIONS: u32 = 64;
    /// Most lanes a keystore file may demand.
    pub const MAX_PARALLELISM: u32 = 16;

    fn to_argon2(self) -> Result<Argon2<'static>, KeystoreError> {
        if self.memory_kib > Self::MAX_MEMORY_KIB
            || self.iterations > Self::MAX_ITERATIONS
            || self.parallelism > Self::MAX_PARALLELISM
        {
            return Err(KeystoreError::KdfParams(self));
        }
        let params = Params::new(self.memory_kib, self.iterations, self.parallelism, Some(32))
            .map_err(|_| KeystoreError::KdfParams(self))?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }
}

/// What a keystore-format file is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// The keystore a node uses.
    Keystore,
    /// A backup made by `lifeline key export`.
    Backup,
}

impl Purpose {
    fn to_pb(self) -> pb::KeystorePurpose {
        match self {
            Self::Keystore => pb::KeystorePurpose::Keystore,
            Self::Backup => pb::KeystorePurpose::Backup,
        }
    }
}

/// Why a keystore could not be read or written.
#[derive(Debug, Error)]
pub enum KeystoreError {
    /// There is no keystore at the path.
    #[error("no keystore at {0}; create one with `lifeline key generate` or `lifeline key import`")]
    NotFound(PathBuf),
    /// A keystore already exists where a new one would be written.
    #[error("a keystore already exists at {0}; it was left as it is")]
    AlreadyExists(PathBuf),
    /// Reading or writing the file failed.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// The passphrase does not open the file (the file itself is intact).
    #[error("wrong passphrase")]
    WrongPassphrase,
    /// The file is damaged or is not a lifeline keystore.
    #[error("the file is damaged or not a lifeline keystore ({0})")]
    Corrupt(String),
    /// The file is of a newer format than this version reads.
    #[error(
        "keystore format {0} is not supported by this version of lifeline (it reads format 1); upgrade lifeline"
    )]
    UnsupportedFormat(u32),
    /// The file asks for key derivation costs outside the accepted range.
    #[error("the file asks for unacceptable key derivation costs ({0:?})")]
    KdfParams(KdfParams),
}

impl From<DecodeError> for KeystoreError {
    fn from(e: DecodeError) -> Self {
        Self::Corrupt(e.to_string())
    }
}

impl From<RingError> for KeystoreError {
    fn from(e: RingError) -> Self {
        Self::Corrupt(e.to_string())
    }
}

impl From<IdentityError> for KeystoreError {
    fn from(e: IdentityError) -> Self {
        Self::Corrupt(e.to_string())
    }
}

/// All secrets of one identity: what a keystore holds.
pub struct KeyBundle {
    /// The identity key.
    pub identity: Identity,
    /// Its prekeys.
    pub prekeys: PrekeyRing,
}

impl KeyBundle {
    /// A new identity with its first prekey.
    pub fn generate<R: CryptoRng + ?Sized>(now: Timestamp, rng: &mut R) -> Self {
        let identity = Identity::generate(rng);
        let prekeys = PrekeyRing::new(&identity, now, rng);
        Self { identity, prekeys }
    }

    /// The plaintext encoding (wiped from memory when dropped).
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let bundle = pb::KeyBundle {
            identity_secret: self.identity.secret_bytes().to_vec(),
            prekeys: self.prekeys.to_stored(),
        };
        let bytes = Zeroizing::new(bundle.encode_to_vec());
        drop(Zeroizing::new(bundle.identity_secret));
        bytes
    }

    /// Decodes and checks a plaintext bundle: every prekey must be signed by
    /// this identity and match its secret.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeystoreError> {
        let bundle: pb::KeyBundle = wire::decode_bounded("KeyBundle", bytes, MAX_KEYSTORE_LEN)?;
        let secret = Zeroizing::new(wire::fixed::<32>(
            "KeyBundle",
            "identity_secret",
            &bundle.identity_secret,
        )?);
        drop(Zeroizing::new(bundle.identity_secret));
        let identity = Identity::from_secret_bytes(&secret)?;
        let prekeys = PrekeyRing::from_stored(identity.id(), &bundle.prekeys)?;
        Ok(Self { identity, prekeys })
    }

    /// Encrypts the bundle under `passphrase` into keystore-format bytes.
    pub fn encrypt<R: CryptoRng + ?Sized>(
        &self,
        passphrase: &[u8],
        purpose: Purpose,
        kdf: KdfParams,
        rng: &mut R,
    ) -> Result<Vec<u8>, KeystoreError> {
        let mut salt = [0u8; SALT_LEN];
        rng.fill_bytes(&mut salt);
        let mut nonce = XNonce::default();
        rng.fill_bytes(&mut nonce);
        let header = pb::KeystoreHeader {
            format: KEYSTORE_FORMAT,
            purpose: purpose.to_pb().into(),
            kdf: Some(pb::KdfParams {
                memory_kib: kdf.memory_kib,
                iterations: kdf.iterations,
                parallelism: kdf.parallelism,
            }),
            salt: salt.to_vec(),
            nonce: nonce.to_vec(),
        }
        .encode_to_vec();
        let cipher = file_cipher(passphrase, &salt, kdf)?;
        let plaintext = self.to_bytes();
        let ciphertext = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: &plaintext,
                    aad: &header,
                },
            )
            .map_err(|_| KeystoreError::Corrupt("bundle too large to encrypt".into()))?;
        let checksum = checksum(&header, &ciphertext).to_vec();
        Ok(pb::KeystoreFile {
            header,
            ciphertext,
            checksum,
        }
        .encode_to_vec())
    }

    /// Decrypts keystore-format bytes with `passphrase`.
    pub fn decrypt(bytes: &[u8], passphrase: &[u8]) -> Result<(Self, Purpose), KeystoreError> {
        let file = decode_keystore_file(bytes)?;
        let cipher = file_cipher(passphrase, &file.salt, file.kdf)?;
        let plaintext = Zeroizing::new(
            cipher
                .decrypt(
                    &XNonce::from(file.nonce),
                    Payload {
                        msg: &file.ciphertext,
                        aad: &file.header_bytes,
                    },
                )
                .map_err(|_| KeystoreError::WrongPassphrase)?,
        );
        Ok((Self::from_bytes(&plaintext)?, file.purpose))
    }
}

/// A keystore file's cleartext parts, decoded and checked.
#[derive(Debug)]
pub struct KeystoreFileParts {
    /// What the file is for.
    pub purpose: Purpose,
    /// Its key derivation parameters.
    pub kdf: KdfParams,
    salt: Vec<u8>,
    nonce: [u8; 24],
    header_bytes: Vec<u8>,
    ciphertext: Vec<u8>,
}

/// Decodes a keystore or backup file's outer layers (no passphrase needed) and
/// checks its checksum. Public so that fuzz targets reach it.
pub fn decode_keystore_file(bytes: &[u8]) -> Result<KeystoreFileParts, KeystoreError> {
    let file: pb::KeystoreFile = wire::decode_bounded("KeystoreFile", bytes, MAX_KEYSTORE_LEN)?;
    if file.checksum.as_slice() != checksum(&file.header, &file.ciphertext).as_slice() {
        return Err(KeystoreError::Corrupt("checksum mismatch".into()));
    }
    const WHAT: &str = "KeystoreHeader";
    let header: pb::KeystoreHeader = wire::decode_bounded(WHAT, &file.header, MAX_HEADER_LEN)?;
    if header.format != KEYSTORE_FORMAT {
        return Err(KeystoreError::UnsupportedFormat(header.format));
    }
    let purpose = match pb::KeystorePurpose::try_from(header.purpose) {
        Ok(pb::KeystorePurpose::Keystore) => Purpose::Keystore,
        Ok(pb::KeystorePurpose::Backup) => Purpose::Backup,
        _ => return Err(KeystoreError::Corrupt("unknown file purpose".into())),
    };
    let kdf = header
        .kdf
        .map(|k| KdfParams {
            memory_kib: k.memory_kib,
            iterations: k.iterations,
            parallelism: k.parallelism,
        })
        .ok_or_else(|| KeystoreError::Corrupt("no key derivation parameters".into()))?;
    if !(SALT_LEN..=64).contains(&header.salt.len()) {
        return Err(KeystoreError::Corrupt("salt length out of range".into()));
    }
    let nonce = wire::fixed(WHAT, "nonce", &header.nonce)?;
    Ok(KeystoreFileParts {
        purpose,
        kdf,
        salt: header.salt,
        nonce,
        header_bytes: file.header,
        ciphertext: file.ciphertext,
    })
}

fn checksum(header: &[u8], ciphertext: &[u8]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new_derive_key("lifeline 2026-11 keystore checksum v1");
    hasher.update(
        &u64::try_from(header.len())
            .unwrap_or(u64::MAX)
            .to_le_bytes(),
    );
    hasher.update(header);
    hasher.update(ciphertext);
    *hasher.finalize().as_bytes()
}

fn file_cipher(
    passphrase: &[u8],
    salt: &[u8],
    kdf: KdfParams,
) -> Result<XChaCha20Poly1305, KeystoreError> {
    let mut key = Zeroizing::new([0u8; 32]);
    kdf.to_argon2()?
        .hash_password_into(passphrase, salt, key.as_mut())
        .map_err(|_| KeystoreError::KdfParams(kdf))?;
    Ok(XChaCha20Poly1305::new(&(*key).into()))
}

/// The keystore file at one path.
#[derive(Clone, Debug)]
pub struct Keystore {
    path: PathBuf,
}

impl Keystore {
    /// The keystore at `path` (which need not exist yet).
    pub fn at(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// Where it lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether a file exists there.
    pub fn exists(&self) -> bool {
        self.path.exists()
    }

    /// Reads the raw file, bounded.
    pub fn read_bytes(path: &Path) -> Result<Vec<u8>, KeystoreError> {
        let io_err = |action, source| KeystoreError::Io {
            action,
            path: path.to_path_buf(),
            source,
        };
        let metadata = fs::metadata(path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => KeystoreError::NotFound(path.to_path_buf()),
            _ => io_err("read", e),
        })?;
        if metadata.len() > MAX_KEYSTORE_LEN as u64 {
            return Err(KeystoreError::Corrupt(format!(
                "{} bytes, more than a keystore can be",
                metadata.len()
            )));
        }
        fs::read(path).map_err(|e| io_err("read", e))
    }

    /// Decrypts the keystore.
    pub fn load(&self, passphrase: &[u8]) -> Result<KeyBundle, KeystoreError> {
        let bytes = Self::read_bytes(&self.path)?;
        let (bundle, _) = KeyBundle::decrypt(&bytes, passphrase)?;
        Ok(bundle)
    }

    /// Writes a new keystore; fails with [`KeystoreError::AlreadyExists`]
    /// rather than replace one.
    pub fn create<R: CryptoRng + ?Sized>(
        &self,
        bundle: &KeyBundle,
        passphrase: &[u8],
        kdf: KdfParams,
        rng: &mut R,
    ) -> Result<(), KeystoreError> {
        let bytes = bundle.encrypt(passphrase, Purpose::Keystore, kdf, rng)?;
        write_atomically(&self.path, &bytes, false)
    }

    /// Replaces the keystore (or writes it if there is none) atomically.
    pub fn save<R: CryptoRng + ?Sized>(
        &self,
        bundle: &KeyBundle,
        passphrase: &[u8],
        kdf: KdfParams,
        rng: &mut R,
    ) -> Result<(), KeystoreError> {
        let bytes = bundle.encrypt(passphrase, Purpose::Keystore, kdf, rng)?;
        write_atomically(&self.path, &bytes, true)
    }
}

/// Writes `bytes` to `path` through a synced temporary file in the same
/// folder (owner-only permissions) and a rename; with `replace` false, fails
/// if `path` exists. Syncs the folder so the rename itself is durable.
pub fn write_atomically(path: &Path, bytes: &[u8], replace: bool) -> Result<(), KeystoreError> {
    let io_err = |action, source| KeystoreError::Io {
        action,
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir).map_err(|e| io_err("create the folder of", e))?;
    // tempfile creates the file with mode 0600 on Unix.
    let mut tmp = tempfile::Builder::new()
        .prefix(".lifeline-")
        .suffix(".tmp")
        .tempfile_in(&dir)
        .map_err(|e| io_err("create a temporary file beside", e))?;
    tmp.write_all(bytes).map_err(|e| io_err("write", e))?;
    tmp.as_file().sync_all().map_err(|e| io_err("sync", e))?;
    if replace {
        tmp.persist(path).map_err(|e| io_err("replace", e.error))?;
    } else {
        tmp.persist_noclobber(path)
            .map_err(|e| match e.error.kind() {
                io::ErrorKind::AlreadyExists => KeystoreError::AlreadyExists(path.to_path_buf()),
                _ => io_err("write", e.error),
            })?;
    }
    fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err("sync the folder of", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng;

    fn now() -> Timestamp {
        Timestamp::from_unix_millis(1_763_700_000_000)
    }

    #[test]
    fn bundle_round_trips_through_encryption_exactly() {
        let mut rng = test_rng(20);
        let bundle = KeyBundle::generate(now(), &mut rng);
        let file = bundle
            .encrypt(
                b"correct horse",
                Purpose::Backup,
                KdfParams::INSECURE_FOR_TESTS,
                &mut rng,
            )
            .unwrap();
        let (restored, purpose) = KeyBundle::decrypt(&file, b"correct horse").unwrap();
        assert_eq!(purpose, Purpose::Backup);
        assert_eq!(*restored.to_bytes(), *bundle.to_bytes());
        assert_eq!(restored.identity.id(), bundle.identity.id());
    }

    #[test]
    fn wrong_passphrase_is_told_apart_from_damage() {
        let mut rng = test_rng(21);
        let bundle = KeyBundle::generate(now(), &mut rng);
        let mut file = bundle
            .encrypt(
                b"right",
                Purpose::Keystore,
                KdfParams::INSECURE_FOR_TESTS,
                &mut rng,
            )
            .unwrap();
        assert!(matches!(
            KeyBundle::decrypt(&file, b"wrong"),
            Err(KeystoreError::WrongPassphrase)
        ));
        let last = file.len() - 40;
        file[last] ^= 0x01;
        assert!(matches!(
            KeyBundle::decrypt(&file, b"right"),
            Err(KeystoreError::Corrupt(_))
        ));
    }

    #[test]
    fn hostile_kdf_costs_are_refused_before_deriving() {
        let mut rng = test_rng(22);
        let bundle = KeyBundle::generate(now(), &mut rng);
        let huge = KdfParams {
            memory_kib: KdfParams::MAX_MEMORY_KIB + 1,
            ..KdfParams::INSECURE_FOR_TESTS
        };
        assert!(matches!(
            bundle.encrypt(b"p", Purpose::Keystore, huge, &mut rng),
            Err(KeystoreError::KdfParams(_))
        ));
    }

    #[test]
    fn create_never_overwrites_and_save_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("keystore");
        let store = Keystore::at(&path);
        let mut rng = test_rng(23);
        let first = KeyBundle::generate(now(), &mut rng);
        let second = KeyBundle::generate(now(), &mut rng);
        let kdf = KdfParams::INSECURE_FOR_TESTS;

        assert!(matches!(store.load(b"p"), Err(KeystoreError::NotFound(_))));
        store.create(&first, b"p", kdf, &mut rng).unwrap();
        assert!(matches!(
            store.create(&second, b"p", kdf, &mut rng),
            Err(KeystoreError::AlreadyExists(_))
        ));
        assert_eq!(store.load(b"p").unwrap().identity.id(), first.identity.id());
        store.save(&second, b"p", kdf, &mut rng).unwrap();
        assert_eq!(
            store.load(b"p").unwrap().identity.id(),
            second.identity.id()
        );
        // No temporary files are left behind.
        let names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("keystore")]);
    }

    #[cfg(unix)]
    #[test]
    fn keystore_file_is_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let store = Keystore::at(dir.path().join("keystore"));
        let mut rng = test_rng(24);
        let bundle = KeyBundle::generate(now(), &mut rng);
        store
            .create(&bundle, b"p", KdfParams::INSECURE_FOR_TESTS, &mut rng)
            .unwrap();
        let mode = fs::metadata(store.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn oversized_file_is_refused_without_reading_it_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keystore");
        fs::write(&path, vec![0u8; MAX_KEYSTORE_LEN + 1]).unwrap();
        assert!(matches!(
            Keystore::at(&path).load(b"p"),
            Err(KeystoreError::Corrupt(_))
        ));
    }
}
