//! RocksDB storage for lifeline: one database per node.
//!
//! Column families:
//!
//! | family | key | value |
//! |---|---|---|
//! | `blocks` | block hash | encoded block |
//! | `canonical` | height (u64, big-endian) | block hash |
//! | `state` | `latest` | encoded state snapshot |
//! | `meta` | `schema_version`, `genesis`, `head`, `finalized`, `opened/` + envelope id | see below |
//! | `messages` | message id (16 bytes) | a message in custody (`Held`, see `routing/proto`) |
//!
//! Every logical change is one `WriteBatch`, written with `sync` so that it is
//! on disk before `commit` returns: a block is imported, or it is not; custody
//! of a batch of messages is taken, or it is not. (A custody batch that takes
//! nothing in, only forgets messages handed on and records ids seen, is
//! written without `sync`: see [`RocksMessageStore`].)

use std::path::{Path, PathBuf};
use std::sync::Arc;

use lifeline_consensus::BlockHash;
use lifeline_consensus::finality::VoteRecord;
use lifeline_consensus::store::{ChainBatch, ChainStore, StoredHead};
use lifeline_routing::{MessageId, MessageStore, SeenRecord, StoreBatch};
use rocksdb::{ColumnFamilyDescriptor, DB, DBCompressionType, Options, WriteBatch, WriteOptions};
use thiserror::Error;

/// The on-disk layout version this code reads and writes.
/// Version 2 added the `inbox` column family (migrated from 1 by creating it).
pub const SCHEMA_VERSION: u32 = 3;

const CF_BLOCKS: &str = "blocks";
const CF_CANONICAL: &str = "canonical";
const CF_STATE: &str = "state";
const CF_META: &str = "meta";
const CF_MESSAGES: &str = "messages";
const CF_INBOX: &str = "inbox";
/// Ids the router must go on refusing: key expiry (8 bytes, big-endian) and
/// id (16), so that expired ones go in one range delete; value a flag byte
/// (1: delivered here) and the creation time (8 bytes, big-endian).
const CF_SEEN: &str = "seen";
const FAMILIES: [&str; 7] = [
    CF_BLOCKS,
    CF_CANONICAL,
    CF_STATE,
    CF_META,
    CF_MESSAGES,
    CF_INBOX,
    CF_SEEN,
];

const KEY_SCHEMA: &[u8] = b"schema_version";
const KEY_GENESIS: &[u8] = b"genesis";
const KEY_HEAD: &[u8] = b"head";
const KEY_FINALIZED: &[u8] = b"finalized";
const KEY_LATEST_SNAPSHOT: &[u8] = b"latest";
/// This node's latest finality vote: source and target heights, 8 bytes
/// each, big-endian. Absent until the node first votes, so no schema change.
const KEY_LAST_VOTE: &[u8] = b"last_vote";

/// What can go wrong with the database.
#[derive(Debug, Error)]
pub enum StorageError {
    /// Another process has the database open.
    #[error(
        "the database at {0} is in use by another lifeline process; stop that process first, \
         or give this one another --data-dir"
    )]
    Locked(PathBuf),
    /// The database was written by another version of lifeline.
    #[error(
        "the database at {path} has schema version {found}, but this lifeline reads version {SCHEMA_VERSION}; {hint}"
    )]
    UnknownSchema {
        /// Where.
        path: PathBuf,
        /// The version found.
        found: u32,
        /// What to do.
        hint: &'static str,
    },
    /// RocksDB failed.
    #[error("database error at {path}: {source}")]
    Rocks {
        /// Where.
        path: PathBuf,
        /// RocksDB's error.
        source: rocksdb::Error,
    },
    /// The database holds something it should not.
    #[error(
        "the database at {path} is damaged: {what}; restore it from another node by syncing into an empty --data-dir"
    )]
    Corrupt {
        /// Where.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
}

/// One node's database.
#[derive(Clone)]
pub struct Database {
    db: Arc<DB>,
    path: PathBuf,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Database {
    /// Opens (or creates) the database in folder `path`, checking its schema version.
    pub fn open(path: &Path) -> Result<Self, StorageError> {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        options.set_compression_type(DBCompressionType::Lz4);
        // Open the families a newer lifeline added too, so that the schema
        // check below can say "made by a newer lifeline" instead of RocksDB
        // refusing to open families it was not given.
        let mut names: Vec<String> = FAMILIES.iter().map(|n| (*n).to_string()).collect();
        for existing in DB::list_cf(&options, path).unwrap_or_default() {
            if existing != rocksdb::DEFAULT_COLUMN_FAMILY_NAME && !names.contains(&existing) {
                names.push(existing);
            }
        }
        let families = names.into_iter().map(|name| {
            let mut cf = Options::default();
            cf.set_compression_type(DBCompressionType::Lz4);
            ColumnFamilyDescriptor::new(name, cf)
        });
        let db = DB::open_cf_descriptors(&options, path, families).map_err(|source| {
            if source.to_string().to_lowercase().contains("lock") {
                StorageError::Locked(path.to_path_buf())
            } else {
                StorageError::Rocks {
                    path: path.to_path_buf(),
                    source,
                }
            }
        })?;
        let database = Self {
            db: Arc::new(db),
            path: path.to_path_buf(),
        };
        database.check_schema()?;
        Ok(database)
    }

    /// Where it lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn rocks(&self, source: rocksdb::Error) -> StorageError {
        StorageError::Rocks {
            path: self.path.clone(),
            source,
        }
    }

    fn corrupt(&self, what: impl Into<String>) -> StorageError {
        StorageError::Corrupt {
            path: self.path.clone(),
            what: what.into(),
        }
    }

    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily, StorageError> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| self.corrupt(format!("column family {name} is missing")))
    }

    fn get(&self, family: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.db
            .get_cf(self.cf(family)?, key)
            .map_err(|e| self.rocks(e))
    }

    fn check_schema(&self) -> Result<(), StorageError> {
        match self.get(CF_META, KEY_SCHEMA)? {
            Some(bytes) => {
                let found = <[u8; 4]>::try_from(bytes.as_slice())
                    .map(u32::from_be_bytes)
                    .map_err(|_| self.corrupt("the schema version is unreadable"))?;
                if found == SCHEMA_VERSION {
                    return Ok(());
                }
                if found == 1 || found == 2 {
                    // Versions 2 and 3 only added column families (inbox,
                    // seen ids), which opening created.
                    return self.write_schema_version();
                }
                Err(StorageError::UnknownSchema {
                    path: self.path.clone(),
                    found,
                    hint: if found > SCHEMA_VERSION {
                        "it was made by a newer lifeline: upgrade lifeline"
                    } else {
                        "it was made by an older lifeline and no migration exists: sync into an empty --data-dir"
                    },
                })
            }
            None => {
                // A new database: nothing may be in it yet.
                let has_data = FAMILIES.iter().try_fold(false, |found, name| {
                    let cf = self.cf(name)?;
                    Ok::<bool, StorageError>(
                        found
                            || self
                                .db
                                .iterator_cf(cf, rocksdb::IteratorMode::Start)
                                .next()
                                .is_some(),
                    )
                })?;
                if has_data {
                    return Err(self.corrupt("it holds data but no schema version"));
                }
                self.write_schema_version()
            }
        }
    }

    fn write_schema_version(&self) -> Result<(), StorageError> {
        let mut options = WriteOptions::default();
        options.set_sync(true);
        self.db
            .put_cf_opt(
                self.cf(CF_META)?,
                KEY_SCHEMA,
                SCHEMA_VERSION.to_be_bytes(),
                &options,
            )
            .map_err(|e| self.rocks(e))
    }

    /// The chain store in this database.
    pub fn chain_store(&self) -> RocksChainStore {
        RocksChainStore {
            db: self.clone(),
            synced: true,
        }
    }

    /// The router's custody store in this database.
    pub fn message_store(&self) -> RocksMessageStore {
        RocksMessageStore { db: self.clone() }
    }

    /// The inbox: messages delivered to this node, kept until deleted.
    pub fn inbox(&self) -> Inbox {
        Inbox { db: self.clone() }
    }

    fn write_synced(&self, write: WriteBatch) -> Result<(), StorageError> {
        let mut options = WriteOptions::default();
        options.set_sync(true);
        self.db
            .write_opt(write, &options)
            .map_err(|e| self.rocks(e))
    }
}

/// One inbox entry: its key and its bytes.
pub type InboxEntry = (Vec<u8>, Vec<u8>);

/// Envelopes this node opened, in `meta` under this prefix and the
/// envelope's message id (16 bytes); value: its creation time (8 bytes,
/// big-endian) and the prekey it was sealed to (32). New keys only, so no
/// schema change.
const PREFIX_OPENED: &[u8] = b"opened/";

/// An envelope this node opened: a replay of it is refused, also after a
/// restart, for as long as the prekey it was sealed to can open it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenedRecord {
    /// The envelope's message id.
    pub id: [u8; 16],
    /// When its sender says it sealed it (ms since the epoch).
    pub created_ms: u64,
    /// The prekey it was sealed to.
    pub prekey: [u8; 32],
}

/// Messages delivered to this node, in arrival order. Each entry is one
/// synced write, so a message is on disk before its receipt goes out.
#[derive(Clone, Debug)]
pub struct Inbox {
    db: Database,
}

impl Inbox {
    /// Keeps `entry` (opaque bytes) under `key`, in one synced write with
    /// the records that must never be on disk without it, or it without
    /// them: `opened`, the envelope it came in (which refuses its replay),
    /// and `seen`, the router's record that it was delivered here (which
    /// makes the router take the previous hop's retry for a duplicate, also
    /// when the process stopped before the router's own write). Keys sort
    /// in arrival order when they start with the arrival time, big-endian.
    pub fn put(
        &self,
        key: &[u8],
        entry: &[u8],
        opened: Option<&OpenedRecord>,
        seen: Option<&SeenRecord>,
    ) -> Result<(), StorageError> {
        let mut write = WriteBatch::default();
        write.put_cf(self.db.cf(CF_INBOX)?, key, entry);
        if let Some(opened) = opened {
            let mut value = Vec::with_capacity(40);
            value.extend_from_slice(&opened.created_ms.to_be_bytes());
            value.extend_from_slice(&opened.prekey);
            write.put_cf(self.db.cf(CF_META)?, opened_key(&opened.id), value);
        }
        if let Some(seen) = seen {
            put_seen(&mut write, self.db.cf(CF_SEEN)?, seen);
        }
        self.db.write_synced(write)
    }

    /// Whether this node opened the envelope with message id `id` (and has
    /// not forgotten it).
    pub fn was_opened(&self, id: &[u8; 16]) -> Result<bool, StorageError> {
        let db = &self.db;
        Ok(db
            .db
            .get_pinned_cf(db.cf(CF_META)?, opened_key(id))
            .map_err(|e| db.rocks(e))?
            .is_some())
    }

    /// Every envelope this node opened, as recorded.
    pub fn opened(&self) -> Result<Vec<OpenedRecord>, StorageError> {
        let db = &self.db;
        let family = db.cf(CF_META)?;
        let mut found = Vec::new();
        let mode = rocksdb::IteratorMode::From(PREFIX_OPENED, rocksdb::Direction::Forward);
        for item in db.db.iterator_cf(family, mode) {
            let (key, value) = item.map_err(|e| db.rocks(e))?;
            let Some(id) = key.strip_prefix(PREFIX_OPENED) else {
                break;
            };
            // Written only by `put_opened`; anything else is skipped.
            let (Ok(id), Some((created, prekey))) =
                (<[u8; 16]>::try_from(id), value.split_first_chunk::<8>())
            else {
                continue;
            };
            let Ok(prekey) = <[u8; 32]>::try_from(prekey) else {
                continue;
            };
            found.push(OpenedRecord {
                id,
                created_ms: u64::from_be_bytes(*created),
                prekey,
            });
        }
        Ok(found)
    }

    /// Forgets these opened envelopes (their prekeys are gone: they can no
    /// longer be opened anyway).
    pub fn forget_opened(&self, ids: &[[u8; 16]]) -> Result<(), StorageError> {
        if ids.is_empty() {
            return Ok(());
        }
        let family = self.db.cf(CF_META)?;
        let mut write = WriteBatch::default();
        for id in ids {
            write.delete_cf(family, opened_key(id));
        }
        self.db.write_synced(write)
    }

    /// The newest `limit` entries, oldest first.
    pub fn newest(&self, limit: usize) -> Result<Vec<InboxEntry>, StorageError> {
        let db = &self.db;
        let family = db.cf(CF_INBOX)?;
        let mut entries = Vec::new();
        for item in db.db.iterator_cf(family, rocksdb::IteratorMode::End) {
            if entries.len() >= limit {
                break;
            }
            let (key, value) = item.map_err(|e| db.rocks(e))?;
            entries.push((key.to_vec(), value.to_vec()));
        }
        entries.reverse();
        Ok(entries)
    }

    /// Deletes all but the newest `keep` entries; returns how many went.
    pub fn trim(&self, keep: usize) -> Result<usize, StorageError> {
        let db = &self.db;
        let family = db.cf(CF_INBOX)?;
        let mut write = WriteBatch::default();
        let mut deleted = 0;
        // Keys only: the entries' values (up to a whole message each, a
        // gigabyte in a full inbox of bulk) are never copied out.
        let mut keys = db.db.raw_iterator_cf(family);
        keys.seek_to_last();
        let mut seen = 0;
        while let Some(key) = keys.key() {
            if seen >= keep {
                write.delete_cf(family, key);
                deleted += 1;
            }
            seen += 1;
            keys.prev();
        }
        keys.status().map_err(|e| db.rocks(e))?;
        if deleted > 0 {
            db.write_synced(write)?;
        }
        Ok(deleted)
    }
}

fn opened_key(id: &[u8; 16]) -> Vec<u8> {
    [PREFIX_OPENED, id].concat()
}

/// Messages in the router's custody, in RocksDB. Each batch is one write,
/// synced when it takes messages into custody: the router acknowledges
/// custody only after it returns.
#[derive(Clone, Debug)]
pub struct RocksMessageStore {
    db: Database,
}

/// A seen id's key: its message's expiry first, so that expired ids are
/// forgotten with one range delete.
/// Adds seen record `r` to `write` (`family` is `seen`): the key is its
/// expiry and id, the value whether it was delivered here and when it was
/// created.
fn put_seen(write: &mut WriteBatch, family: &rocksdb::ColumnFamily, r: &SeenRecord) {
    let mut value = [0u8; 9];
    value[0] = u8::from(r.delivered);
    value[1..].copy_from_slice(&r.created_ms.to_be_bytes());
    write.put_cf(family, seen_key(r.expires_ms, &r.id), value);
}

fn seen_key(expires_ms: u64, id: &MessageId) -> [u8; 24] {
    let mut key = [0u8; 24];
    key[..8].copy_from_slice(&expires_ms.to_be_bytes());
    key[8..].copy_from_slice(&id.0);
    key
}

impl MessageStore for RocksMessageStore {
    type Error = StorageError;

    fn load(&mut self) -> Result<Vec<(MessageId, Vec<u8>)>, StorageError> {
        let db = &self.db;
        let family = db.cf(CF_MESSAGES)?;
        let mut messages = Vec::new();
        for entry in db.db.iterator_cf(family, rocksdb::IteratorMode::Start) {
            let (key, value) = entry.map_err(|e| db.rocks(e))?;
            let id = <[u8; 16]>::try_from(&key[..])
                .map_err(|_| db.corrupt(format!("a message key is {} bytes, not 16", key.len())))?;
            messages.push((MessageId(id), value.into_vec()));
        }
        Ok(messages)
    }

    fn load_seen(&mut self) -> Result<Vec<SeenRecord>, StorageError> {
        let db = &self.db;
        let family = db.cf(CF_SEEN)?;
        let mut seen = Vec::new();
        for entry in db.db.iterator_cf(family, rocksdb::IteratorMode::Start) {
            let (key, value) = entry.map_err(|e| db.rocks(e))?;
            let record = (|| {
                Some(SeenRecord {
                    expires_ms: u64::from_be_bytes(key.get(..8)?.try_into().ok()?),
                    id: MessageId(key.get(8..)?.try_into().ok()?),
                    delivered: *value.first()? == 1,
                    created_ms: u64::from_be_bytes(value.get(1..)?.try_into().ok()?),
                })
            })();
            seen.push(record.ok_or_else(|| {
                db.corrupt(format!(
                    "a seen-id record is {} + {} bytes, not 24 + 9",
                    key.len(),
                    value.len()
                ))
            })?);
        }
        Ok(seen)
    }

    fn seen_before(
        &mut self,
        id: &MessageId,
        expires_ms: u64,
    ) -> Result<Option<bool>, StorageError> {
        let db = &self.db;
        let value = db
            .db
            .get_pinned_cf(db.cf(CF_SEEN)?, seen_key(expires_ms, id))
            .map_err(|e| db.rocks(e))?;
        Ok(value.map(|v| v.first() == Some(&1)))
    }

    fn write(&mut self, batch: &StoreBatch) -> Result<(), StorageError> {
        let family = self.db.cf(CF_MESSAGES)?;
        let seen = self.db.cf(CF_SEEN)?;
        let mut write = WriteBatch::default();
        for (id, bytes) in &batch.puts {
            write.put_cf(family, id.0, bytes);
        }
        for id in &batch.deletes {
            write.delete_cf(family, id.0);
        }
        for r in &batch.seen {
            put_seen(&mut write, seen, r);
        }
        if let Some(before) = batch.forget_seen_before_ms {
            write.delete_range_cf(seen, [0u8; 8], before.to_be_bytes());
        }
        if batch.needs_sync() {
            self.db.write_synced(write)
        } else {
            // Nothing in it is acknowledged: it goes to the write-ahead log
            // in order, so a crash of the process loses none of it, and the
            // next synced write makes it durable against a power cut too.
            self.db.db.write(write).map_err(|e| self.db.rocks(e))
        }
    }
}

/// The chain's blocks, index, head and snapshots in RocksDB.
#[derive(Clone, Debug)]
pub struct RocksChainStore {
    db: Database,
    /// Whether commits wait for the disk (see `ChainStore::set_synced`).
    synced: bool,
}

fn encode_head(head: &StoredHead) -> Vec<u8> {
    let mut bytes = head.number.to_be_bytes().to_vec();
    bytes.extend_from_slice(&head.hash.0);
    bytes
}

impl RocksChainStore {
    fn decode_head(&self, bytes: &[u8]) -> Result<StoredHead, StorageError> {
        let (number, hash) = bytes
            .split_at_checked(8)
            .ok_or_else(|| self.db.corrupt("a head record is too short"))?;
        Ok(StoredHead {
            number: u64::from_be_bytes(
                number
                    .try_into()
                    .map_err(|_| self.db.corrupt("bad head number"))?,
            ),
            hash: BlockHash(
                hash.try_into()
                    .map_err(|_| self.db.corrupt("bad head hash"))?,
            ),
        })
    }

    fn hash(&self, bytes: Vec<u8>) -> Result<BlockHash, StorageError> {
        <[u8; 32]>::try_from(bytes.as_slice())
            .map(BlockHash)
            .map_err(|_| self.db.corrupt("a stored hash is not 32 bytes"))
    }
}

impl ChainStore for RocksChainStore {
    type Error = StorageError;

    fn genesis(&self) -> Result<Option<BlockHash>, Self::Error> {
        self.db
            .get(CF_META, KEY_GENESIS)?
            .map(|b| self.hash(b))
            .transpose()
    }

    fn block(&self, hash: &BlockHash) -> Result<Option<Vec<u8>>, Self::Error> {
        self.db.get(CF_BLOCKS, &hash.0)
    }

    fn canonical(&self, number: u64) -> Result<Option<BlockHash>, Self::Error> {
        self.db
            .get(CF_CANONICAL, &number.to_be_bytes())?
            .map(|b| self.hash(b))
            .transpose()
    }

    fn head(&self) -> Result<Option<StoredHead>, Self::Error> {
        self.db
            .get(CF_META, KEY_HEAD)?
            .map(|b| self.decode_head(&b))
            .transpose()
    }

    fn finalized(&self) -> Result<Option<StoredHead>, Self::Error> {
        self.db
            .get(CF_META, KEY_FINALIZED)?
            .map(|b| self.decode_head(&b))
            .transpose()
    }

    fn latest_snapshot(&self) -> Result<Option<Vec<u8>>, Self::Error> {
        self.db.get(CF_STATE, KEY_LATEST_SNAPSHOT)
    }

    fn last_vote(&self) -> Result<Option<VoteRecord>, Self::Error> {
        let Some(bytes) = self.db.get(CF_META, KEY_LAST_VOTE)? else {
            return Ok(None);
        };
        let record = <[u8; 16]>::try_from(bytes.as_slice()).map_err(|_| {
            self.db
                .corrupt("the last finality vote record is not 16 bytes")
        })?;
        let value = u128::from_be_bytes(record);
        Ok(Some(VoteRecord {
            source: (value >> 64) as u64,
            target: value as u64,
        }))
    }

    /// One synced write batch: all of it is on disk when this returns, or none of it.
    fn commit(&mut self, batch: ChainBatch) -> Result<(), Self::Error> {
        let db = &self.db;
        let (blocks, canonical, state, meta) = (
            db.cf(CF_BLOCKS)?,
            db.cf(CF_CANONICAL)?,
            db.cf(CF_STATE)?,
            db.cf(CF_META)?,
        );
        let mut write = WriteBatch::default();
        if let Some(genesis) = batch.genesis {
            write.put_cf(meta, KEY_GENESIS, genesis.0);
        }
        for (hash, bytes) in &batch.blocks {
            write.put_cf(blocks, hash.0, bytes);
        }
        for hash in &batch.forget_blocks {
            write.delete_cf(blocks, hash.0);
        }
        if let Some(from) = batch
            .truncate_canonical_above
            .and_then(|above| above.checked_add(1))
        {
            // Keys are 8 bytes; 9 bytes of 0xff sort after all of them.
            write.delete_range_cf(canonical, &from.to_be_bytes()[..], &[0xff; 9][..]);
        }
        for (number, hash) in &batch.canonical {
            write.put_cf(canonical, number.to_be_bytes(), hash.0);
        }
        if let Some(head) = &batch.head {
            write.put_cf(meta, KEY_HEAD, encode_head(head));
        }
        if let Some(finalized) = &batch.finalized {
            write.put_cf(meta, KEY_FINALIZED, encode_head(finalized));
        }
        if let Some(snapshot) = &batch.snapshot {
            write.put_cf(state, KEY_LATEST_SNAPSHOT, snapshot);
        }
        if let Some(vote) = &batch.last_vote {
            let record = (u128::from(vote.source) << 64) | u128::from(vote.target);
            write.put_cf(meta, KEY_LAST_VOTE, record.to_be_bytes());
        }
        // This node's own vote is on disk before it is sent, always.
        if self.synced || batch.last_vote.is_some() {
            db.write_synced(write)
        } else {
            // In the write-ahead log, in order: the next synced write (or
            // `flush`) makes it durable with everything before it.
            db.db.write(write).map_err(|e| db.rocks(e))
        }
    }

    fn set_synced(&mut self, synced: bool) {
        self.synced = synced;
    }

    fn flush(&mut self) -> Result<(), StorageError> {
        self.db.db.flush_wal(true).map_err(|e| self.db.rocks(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lifeline_consensus::Chain;
    use lifeline_consensus::chain::{ChainConfig, Genesis, Validation};
    use lifeline_consensus::conformance::{genesis_of, identity_of};

    fn genesis() -> Genesis {
        let config = ChainConfig {
            snapshot_interval: 3,
            ..ChainConfig::default()
        };
        genesis_of(&["A", "B", "C"], config).unwrap()
    }

    #[test]
    fn a_chain_survives_closing_and_reopening_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let g = genesis();
        let (head, finalized) = {
            let db = Database::open(dir.path()).unwrap();
            let mut chain = Chain::open(db.chain_store(), &g).unwrap();
            for i in 0..10u64 {
                let by = identity_of(["A", "B", "C"][(i % 3) as usize]).unwrap();
                let t = chain
                    .head()
                    .timestamp
                    .saturating_add(chain.config().heartbeat);
                let block = chain.propose(&by, t, None, vec![]).unwrap();
                chain.import(&block, Validation::Full { now: t }).unwrap();
            }
            (chain.head(), chain.finalized())
        };
        let db = Database::open(dir.path()).unwrap();
        let chain = Chain::open(db.chain_store(), &g).unwrap();
        assert_eq!(chain.head(), head);
        assert_eq!(chain.finalized(), finalized);
        assert_eq!(chain.head().number, 10);
    }

    #[test]
    fn an_authoritys_last_finality_vote_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let g = genesis();
        let t = {
            let db = Database::open(dir.path()).unwrap();
            let mut chain = Chain::open(db.chain_store(), &g).unwrap();
            assert_eq!(db.chain_store().last_vote().unwrap(), None);
            let t = chain
                .head()
                .timestamp
                .saturating_add(chain.config().heartbeat);
            let block = chain
                .propose(&identity_of("A").unwrap(), t, None, vec![])
                .unwrap();
            chain.import(&block, Validation::Full { now: t }).unwrap();
            let t = t.saturating_add(chain.config().period);
            let vote = chain.vote(&identity_of("B").unwrap(), t).unwrap().unwrap();
            assert_eq!((vote.source.number, vote.target.number), (0, 1));
            t
        };
        let db = Database::open(dir.path()).unwrap();
        let mut chain = Chain::open(db.chain_store(), &g).unwrap();
        assert_eq!(
            chain.last_vote(),
            lifeline_consensus::VoteRecord {
                source: 0,
                target: 1
            }
        );
        assert!(
            chain.vote(&identity_of("B").unwrap(), t).unwrap().is_none(),
            "no second vote for height 1"
        );
    }

    #[test]
    fn messages_in_custody_survive_reopening_and_batches_apply_whole() {
        use lifeline_routing::{MessageId, MessageStore, StoreBatch};
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (MessageId([1; 16]), MessageId([2; 16]), MessageId([3; 16]));
        {
            let db = Database::open(dir.path()).unwrap();
            let mut store = db.message_store();
            store
                .write(&StoreBatch {
                    puts: vec![(a, b"a".to_vec()), (b, b"b".to_vec()), (c, b"c".to_vec())],
                    deletes: vec![c],
                    ..StoreBatch::default()
                })
                .unwrap();
            store
                .write(&StoreBatch {
                    puts: vec![],
                    deletes: vec![a],
                    ..StoreBatch::default()
                })
                .unwrap();
        }
        let db = Database::open(dir.path()).unwrap();
        assert_eq!(db.message_store().load().unwrap(), vec![(b, b"b".to_vec())]);
    }

    /// Write-ahead log syncs so far, from RocksDB's own counters
    /// ("Cumulative WAL: 3 writes, 1 syncs, ...").
    fn wal_syncs(db: &Database) -> u64 {
        let stats = db.db.property_value("rocksdb.dbstats").unwrap().unwrap();
        let line = stats
            .lines()
            .find(|l| l.starts_with("Cumulative WAL:"))
            .unwrap_or_else(|| panic!("no WAL line in {stats}"));
        let syncs = line.split(", ").nth(1).unwrap();
        syncs.trim_end_matches(" syncs").parse().unwrap()
    }

    #[test]
    fn only_a_batch_that_takes_custody_waits_for_the_disk() {
        use lifeline_routing::{MessageId, MessageStore, SeenRecord, StoreBatch};
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (MessageId([1; 16]), MessageId([2; 16]));
        {
            let db = Database::open(dir.path()).unwrap();
            let mut store = db.message_store();
            let before = wal_syncs(&db);
            store
                .write(&StoreBatch {
                    puts: vec![(a, b"a".to_vec()), (b, b"b".to_vec())],
                    ..StoreBatch::default()
                })
                .unwrap();
            assert_eq!(wal_syncs(&db), before + 1, "custody is synced");
            let seen = SeenRecord {
                expires_ms: 10,
                id: b,
                delivered: true,
                created_ms: 1,
            };
            store
                .write(&StoreBatch {
                    deletes: vec![a],
                    seen: vec![seen],
                    ..StoreBatch::default()
                })
                .unwrap();
            assert_eq!(wal_syncs(&db), before + 1, "a hand-over waits for no sync");
        }
        // In the log all the same: the process ending does not lose it.
        let db = Database::open(dir.path()).unwrap();
        let mut store = db.message_store();
        assert_eq!(store.load().unwrap(), vec![(b, b"b".to_vec())]);
        assert_eq!(store.seen_before(&b, 10).unwrap(), Some(true));
    }

    #[test]
    fn a_database_in_use_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Database::open(dir.path()).unwrap();
        let second = Database::open(dir.path());
        assert!(matches!(second, Err(StorageError::Locked(_))), "{second:?}");
        let message = second.unwrap_err().to_string();
        assert!(
            message.contains("in use by another lifeline process"),
            "{message}"
        );
    }

    #[test]
    fn an_unknown_schema_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = Database::open(dir.path()).unwrap();
            db.db
                .put_cf(db.cf(CF_META).unwrap(), KEY_SCHEMA, 99u32.to_be_bytes())
                .unwrap();
        }
        {
            // The newer lifeline also added a column family of its own.
            let mut options = Options::default();
            options.create_missing_column_families(true);
            let names = FAMILIES.iter().copied().chain(["from-the-future"]);
            DB::open_cf(&options, dir.path(), names).unwrap();
        }
        match Database::open(dir.path()) {
            Err(StorageError::UnknownSchema {
                found: 99, hint, ..
            }) => assert!(hint.contains("upgrade")),
            other => panic!("expected UnknownSchema, got {other:?}"),
        }
    }

    #[test]
    fn a_version_1_database_is_migrated_and_keeps_its_custody() {
        let dir = tempfile::tempdir().unwrap();
        let id = MessageId([7; 16]);
        {
            let db = Database::open(dir.path()).unwrap();
            let batch = StoreBatch {
                puts: vec![(id, b"held".to_vec())],
                ..StoreBatch::default()
            };
            db.message_store().write(&batch).unwrap();
            db.db
                .put_cf(db.cf(CF_META).unwrap(), KEY_SCHEMA, 1u32.to_be_bytes())
                .unwrap();
        }
        let db = Database::open(dir.path()).unwrap();
        assert_eq!(
            db.get(CF_META, KEY_SCHEMA).unwrap(),
            Some(SCHEMA_VERSION.to_be_bytes().to_vec())
        );
        assert_eq!(
            db.message_store().load().unwrap(),
            vec![(id, b"held".to_vec())]
        );
    }

    #[test]
    fn seen_ids_survive_reopening_and_expired_ones_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let record = |expires_ms, byte, delivered| SeenRecord {
            expires_ms,
            id: MessageId([byte; 16]),
            delivered,
            created_ms: 1_000,
        };
        {
            let db = Database::open(dir.path()).unwrap();
            let mut store = db.message_store();
            store
                .write(&StoreBatch {
                    seen: vec![record(5_000, 1, true), record(9_000, 2, false)],
                    ..StoreBatch::default()
                })
                .unwrap();
            // Later: a third id, and everything that expired before 6 s goes.
            store
                .write(&StoreBatch {
                    seen: vec![record(7_000, 3, true)],
                    forget_seen_before_ms: Some(6_000),
                    ..StoreBatch::default()
                })
                .unwrap();
        }
        let db = Database::open(dir.path()).unwrap();
        let mut store = db.message_store();
        assert_eq!(
            store.load_seen().unwrap(),
            vec![record(7_000, 3, true), record(9_000, 2, false)]
        );
        // One at a time, as the router asks when its cache may have forgotten.
        assert_eq!(
            store.seen_before(&MessageId([3; 16]), 7_000).unwrap(),
            Some(true)
        );
        assert_eq!(
            store.seen_before(&MessageId([2; 16]), 9_000).unwrap(),
            Some(false)
        );
        assert_eq!(
            store.seen_before(&MessageId([1; 16]), 5_000).unwrap(),
            None,
            "expired"
        );
        assert_eq!(store.seen_before(&MessageId([2; 16]), 9_001).unwrap(), None);
    }

    #[test]
    fn the_inbox_keeps_arrival_order_and_trims_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        {
            let inbox = Database::open(dir.path()).unwrap().inbox();
            for t in [3u64, 1, 2, 5, 4] {
                inbox
                    .put(&t.to_be_bytes(), format!("m{t}").as_bytes(), None, None)
                    .unwrap();
            }
        }
        let inbox = Database::open(dir.path()).unwrap().inbox();
        let values = |entries: Vec<InboxEntry>| {
            entries
                .into_iter()
                .map(|(_, v)| String::from_utf8(v).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(values(inbox.newest(3).unwrap()), ["m3", "m4", "m5"]);
        assert_eq!(inbox.trim(2).unwrap(), 3);
        assert_eq!(values(inbox.newest(10).unwrap()), ["m4", "m5"]);
    }

    /// An inbox entry and the records kept with it reach the disk together:
    /// the router, restarting, finds the delivery's seen record (and takes
    /// the previous hop's retry for a duplicate), and a replay of the
    /// envelope is refused.
    #[test]
    fn an_inbox_entry_is_written_with_its_seen_and_opened_records() {
        let dir = tempfile::tempdir().unwrap();
        let seen = SeenRecord {
            expires_ms: 9_000,
            id: MessageId([7; 16]),
            delivered: true,
            created_ms: 1_000,
        };
        let opened = OpenedRecord {
            id: [7; 16],
            created_ms: 1_000,
            prekey: [3; 32],
        };
        Database::open(dir.path())
            .unwrap()
            .inbox()
            .put(b"k", b"entry", Some(&opened), Some(&seen))
            .unwrap();
        let db = Database::open(dir.path()).unwrap();
        assert_eq!(db.message_store().load_seen().unwrap(), vec![seen]);
        assert!(db.inbox().was_opened(&[7; 16]).unwrap());
        assert_eq!(
            db.inbox().newest(1).unwrap(),
            vec![(b"k".to_vec(), b"entry".to_vec())]
        );
    }

    #[test]
    fn canonical_entries_above_a_shorter_head_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(dir.path()).unwrap();
        let mut store = db.chain_store();
        let h = |n: u8| BlockHash([n; 32]);
        store
            .commit(ChainBatch {
                canonical: (0..5).map(|n| (u64::from(n), h(n))).collect(),
                ..ChainBatch::default()
            })
            .unwrap();
        store
            .commit(ChainBatch {
                canonical: vec![(2, h(9))],
                truncate_canonical_above: Some(2),
                ..ChainBatch::default()
            })
            .unwrap();
        assert_eq!(store.canonical(1).unwrap(), Some(h(1)));
        assert_eq!(store.canonical(2).unwrap(), Some(h(9)));
        assert_eq!(store.canonical(3).unwrap(), None);
        assert_eq!(store.canonical(4).unwrap(), None);
    }
}
