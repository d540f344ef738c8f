//! The attack: a 40 KiB transaction whose CAP alert is 20,000 empty
//! `<info>` blocks, signed by a fresh key. Each is 2 bytes on the wire and
//! about 450 in memory, so decoding it whole made a node allocate some
//! 22 MB (measured with a counting allocator) before the signature was
//! checked. The counts are now read off the wire first and the transaction
//! refused before anything is decoded. Alone in its test binary so that
//! the process's peak memory is this test's.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use lifeline_consensus::Transaction;
use lifeline_consensus::alert::{AlertError, MAX_INFOS};
use lifeline_consensus::conformance::identity_of;
use lifeline_consensus::tx::TxError;
use lifeline_consensus::wire::pb;
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint};

fn field(number: u32, payload: &[u8], out: &mut Vec<u8>) {
    encode_key(number, WireType::LengthDelimited, out);
    encode_varint(payload.len() as u64, out);
    out.extend_from_slice(payload);
}

/// Peak resident memory of this process so far, in KiB.
fn peak_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_transaction_of_empty_infos_is_refused_before_it_is_decoded() {
    let attacker = identity_of("mallory").unwrap();
    // CapAlert { infos: 20,000 × CapInfo {} }, built on the wire, never in memory.
    let mut alert = Vec::new();
    for _ in 0..20_000 {
        field(11, &[], &mut alert);
    }
    let mut publish = Vec::new();
    field(1, &alert, &mut publish);
    let mut body = pb::Transaction {
        sender: attacker.id().as_bytes().to_vec(),
        nonce: 0,
        action: None,
    }
    .encode_to_vec();
    field(17, &publish, &mut body);
    let signature = attacker.sign(b"lifeline/tx/v1", &body).to_vec();
    let bytes = pb::SignedTransaction { body, signature }.encode_to_vec();
    assert!(
        bytes.len() <= lifeline_consensus::tx::MAX_TX_LEN,
        "{}",
        bytes.len()
    );

    let before = peak_kib();
    let result = Transaction::from_bytes(&bytes);
    let grew = peak_kib() - before;
    assert!(
        grew < 4 * 1024,
        "refusing a 40 KiB transaction raised peak memory by {grew} KiB"
    );
    match result {
        Err(TxError::InvalidAlert(AlertError::TooMany { count, max, .. })) => {
            assert_eq!(max, MAX_INFOS);
            assert!(count > max);
        }
        other => panic!("expected a refusal for too many infos, got {other:?}"),
    }
}
