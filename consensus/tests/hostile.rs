//! One test per validity rule: a block or transaction that breaks it gets a
//! typed rejection, and nothing panics. (Signer-voting rules: see the
//! vote-replay cases; transaction rules with state: see chain.rs.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use lifeline_consensus::block::{
    BlockError, HeaderError, MAX_BLOCK_LEN, MAX_BLOCK_TXS, SealedBlock,
};
use lifeline_consensus::chain::{ChainConfig, Validation};
use lifeline_consensus::conformance::{genesis_of, identity_of};
use lifeline_consensus::tx::{Action, MAX_TX_LEN, Transaction, TxError};
use lifeline_consensus::wire::pb;
use lifeline_consensus::{Chain, ChainError, ImportError, MemoryChainStore, SignerError};
use lifeline_crypto::wire::DecodeError;
use lifeline_crypto::{Identity, Timestamp};
use prost::Message;

fn chain() -> Chain<MemoryChainStore> {
    let g = genesis_of(&["A", "B", "C"], ChainConfig::default()).unwrap();
    Chain::open(MemoryChainStore::new(), &g).unwrap()
}

fn id(n: &str) -> Identity {
    identity_of(n).unwrap()
}

fn next_time(c: &Chain<MemoryChainStore>) -> Timestamp {
    c.head().timestamp.saturating_add(c.config().heartbeat)
}

fn import_err(c: &mut Chain<MemoryChainStore>, b: &SealedBlock, now: Timestamp) -> ImportError {
    match c.import(b, Validation::Full { now }) {
        Err(ChainError::Import(e)) => e,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Re-seals `block` with its header changed by `f` (keeping its transactions).
fn reseal(
    block: &SealedBlock,
    by: &Identity,
    f: impl FnOnce(&mut lifeline_consensus::Header),
) -> SealedBlock {
    let mut h = block.header().clone();
    f(&mut h);
    SealedBlock::new(h.seal(by).unwrap(), block.transactions().to_vec()).unwrap()
}

#[test]
fn bad_block_signature() {
    let c = chain();
    let b = c.propose(&id("A"), next_time(&c), None, vec![]).unwrap();
    let mut raw = pb::Block::decode(b.to_bytes().as_slice()).unwrap();
    let mut signed = pb::SignedBlockHeader::decode(raw.header.as_slice()).unwrap();
    signed.signature[10] ^= 1;
    raw.header = signed.encode_to_vec();
    assert_eq!(
        SealedBlock::from_bytes(&raw.encode_to_vec()),
        Err(BlockError::Header(HeaderError::BadSignature))
    );
}

#[test]
fn bad_transaction_signature() {
    let tx = Transaction::sign(
        &id("p"),
        0,
        Action::RevokeIdentity {
            subject: *id("p").id(),
            reason: "lost".into(),
        },
    );
    let mut signed = pb::SignedTransaction::decode(tx.to_bytes()).unwrap();
    signed.signature[0] ^= 1;
    assert_eq!(
        Transaction::from_bytes(&signed.encode_to_vec()),
        Err(TxError::BadSignature)
    );
}

#[test]
fn unknown_or_unauthorized_signer() {
    let mut c = chain();
    // Mallory seals a block naming herself: not a signer.
    let t = next_time(&c);
    let template = c.propose(&id("A"), t, None, vec![]).unwrap();
    let forged = reseal(&template, &id("M"), |h| h.signer = *id("M").id());
    assert!(matches!(
        import_err(&mut c, &forged, t),
        ImportError::Signer(SignerError::Unauthorized(_))
    ));
}

#[test]
fn recently_signed() {
    let mut c = chain();
    let t = next_time(&c);
    let b = c.propose(&id("A"), t, None, vec![]).unwrap();
    c.import(&b, Validation::Full { now: t }).unwrap();
    assert!(matches!(
        c.propose(&id("A"), next_time(&c), None, vec![]),
        Err(ImportError::Signer(SignerError::RecentlySigned { .. }))
    ));
}

#[test]
fn wrong_weight() {
    let mut c = chain();
    let t = next_time(&c);
    let b = c.propose(&id("A"), t, None, vec![]).unwrap();
    let wrong = reseal(&b, &id("A"), |h| h.weight = 3 - h.weight);
    assert!(matches!(
        import_err(&mut c, &wrong, t),
        ImportError::WrongWeight { .. }
    ));
}

#[test]
fn timestamp_in_the_future_or_before_parent_plus_period() {
    let mut c = chain();
    let t = next_time(&c);
    let b = c.propose(&id("A"), t, None, vec![]).unwrap();
    assert!(matches!(
        import_err(&mut c, &b, t.saturating_sub(Duration::from_secs(3600))),
        ImportError::FromTheFuture(_)
    ));
    let parent_time = c.head().timestamp;
    let early = reseal(&b, &id("A"), |h| {
        h.timestamp = parent_time.saturating_add(Duration::from_secs(1))
    });
    assert_eq!(import_err(&mut c, &early, t), ImportError::TooEarly);
}

#[test]
fn bad_checkpoint_list_and_bad_vote() {
    let epoch_1 = ChainConfig {
        epoch: 1,
        ..ChainConfig::default()
    };
    let g = genesis_of(&["A", "B"], epoch_1).unwrap();
    let mut c = Chain::open(MemoryChainStore::new(), &g).unwrap();
    let t = next_time(&c);
    let b = c.propose(&id("A"), t, None, vec![]).unwrap();
    let short_list = reseal(&b, &id("A"), |h| h.checkpoint = Some(vec![*id("A").id()]));
    assert!(matches!(
        import_err(&mut c, &short_list, t),
        ImportError::InvalidCheckpoint(_)
    ));
    let voting = reseal(&b, &id("A"), |h| {
        h.vote = Some(lifeline_consensus::Vote {
            target: *id("C").id(),
            authorize: true,
        })
    });
    assert!(matches!(
        import_err(&mut c, &voting, t),
        ImportError::InvalidVote(_)
    ));
}

#[test]
fn oversized_block_and_transaction() {
    assert!(matches!(
        SealedBlock::from_bytes(&vec![0u8; MAX_BLOCK_LEN + 1]),
        Err(BlockError::Malformed(DecodeError::TooLarge { .. }))
    ));
    assert!(matches!(
        Transaction::from_bytes(&vec![0u8; MAX_TX_LEN + 1]),
        Err(TxError::Malformed(DecodeError::TooLarge { .. }))
    ));
    // A text field past its bound is refused when decoded.
    let long = Transaction::sign(
        &id("p"),
        0,
        Action::RevokeIdentity {
            subject: *id("p").id(),
            reason: "x".repeat(300),
        },
    );
    assert!(matches!(
        Transaction::from_bytes(long.to_bytes()),
        Err(TxError::InvalidText {
            field: "reason",
            ..
        })
    ));
    // Too many transactions.
    let c = chain();
    let b = c.propose(&id("A"), next_time(&c), None, vec![]).unwrap();
    let mut raw = pb::Block::decode(b.to_bytes().as_slice()).unwrap();
    raw.transactions = vec![Vec::new(); MAX_BLOCK_TXS + 1];
    assert_eq!(
        SealedBlock::from_bytes(&raw.encode_to_vec()),
        Err(BlockError::TooManyTransactions(MAX_BLOCK_TXS + 1))
    );
}

#[test]
fn garbage_everywhere_is_a_typed_error() {
    for bytes in [&b""[..], b"\x00", b"\x0a\x05hello", &[0xff; 64]] {
        assert!(SealedBlock::from_bytes(bytes).is_err());
        assert!(Transaction::from_bytes(bytes).is_err());
    }
}
