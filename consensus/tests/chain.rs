//! The chain through its public API: validation, transactions, queries, fork
//! choice, finality, equivocation and restarts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use lifeline_consensus::alert::{Point, sample_flood as flood};
use lifeline_consensus::block::{SealedBlock, Vote};
use lifeline_consensus::chain::{ChainConfig, Genesis, Validation};
use lifeline_consensus::conformance::{genesis_of, identity_of};
use lifeline_consensus::state::TxRejected;
use lifeline_consensus::tx::{Action, Transaction};
use lifeline_consensus::wire::pb;
use lifeline_consensus::{
    BlockRef, Chain, ChainError, ChainStore, FinalityVote, ImportError, MemoryChainStore, VoteError,
};
use lifeline_crypto::{Identity, PrekeyRing, Timestamp};
use prost::Message;

const START: u64 = 1_763_700_000_000;
const LIFE: Duration = lifeline_consensus::alert::DEFAULT_ALERT_LIFETIME;

fn id(name: &str) -> Identity {
    identity_of(name).unwrap()
}

fn genesis(names: &[&str]) -> Genesis {
    let config = ChainConfig {
        snapshot_interval: 4,
        ..ChainConfig::default()
    };
    genesis_of(names, config).unwrap()
}

fn chain(names: &[&str]) -> Chain<MemoryChainStore> {
    Chain::open(MemoryChainStore::new(), &genesis(names)).unwrap()
}

/// A block by `by` one heartbeat after the head (valid even when empty).
fn block(c: &Chain<MemoryChainStore>, by: &str, txs: Vec<Transaction>) -> SealedBlock {
    let t = c.head().timestamp.saturating_add(c.config().heartbeat);
    c.propose(&id(by), t, None, txs).unwrap()
}

fn import(
    c: &mut Chain<MemoryChainStore>,
    b: &SealedBlock,
) -> Result<lifeline_consensus::Imported, ImportError> {
    match c.import(
        b,
        Validation::Full {
            now: b.header().timestamp,
        },
    ) {
        Ok(imported) => Ok(imported),
        Err(ChainError::Import(e)) => Err(e),
        Err(e) => panic!("storage error: {e}"),
    }
}

/// Proposes a block by `by` with `txs` and imports it.
fn add(
    c: &mut Chain<MemoryChainStore>,
    by: &str,
    txs: Vec<Transaction>,
) -> Result<lifeline_consensus::Imported, ImportError> {
    let b = block(c, by, txs);
    import(c, &b)
}

fn register(who: &Identity, name: &str, nonce: u64) -> Transaction {
    let ring = PrekeyRing::new(who, Timestamp::from_unix_millis(START), &mut rand::rng());
    Transaction::sign(
        who,
        nonce,
        Action::RegisterIdentity {
            display_name: name.into(),
            prekey: ring.current().clone(),
        },
    )
}

fn tx_error(c: &mut Chain<MemoryChainStore>, by: &str, tx: Transaction) -> TxRejected {
    // propose refuses what import would refuse; check both agree.
    let t = c.head().timestamp.saturating_add(c.config().heartbeat);
    let proposed = c.propose(&id(by), t, None, vec![tx]);
    match proposed {
        Err(ImportError::Transaction(e)) => e.reason,
        other => panic!("expected a transaction error, got {other:?}"),
    }
}

#[test]
fn timing_weight_and_empty_blocks_are_checked() {
    let mut c = chain(&["A", "B", "C"]);
    let head = c.head();
    let in_turn = ["A", "B", "C"]
        .into_iter()
        .find(|n| c.signer_state().in_turn(1) == Some(*id(n).id()))
        .unwrap();
    // Too early: less than a period after the parent.
    let early = c
        .propose(
            &id(in_turn),
            head.timestamp.saturating_add(Duration::from_secs(1)),
            None,
            vec![register(&id("p"), "P", 0)],
        )
        .unwrap();
    assert_eq!(import(&mut c, &early), Err(ImportError::TooEarly));
    // Empty before the heartbeat.
    let empty = c
        .propose(
            &id(in_turn),
            head.timestamp.saturating_add(Duration::from_secs(10)),
            None,
            vec![],
        )
        .unwrap();
    assert_eq!(import(&mut c, &empty), Err(ImportError::EmptyBlock));
    // Far in the future of the local clock.
    let b = block(&c, in_turn, vec![]);
    let clock = b
        .header()
        .timestamp
        .saturating_sub(Duration::from_secs(3600));
    assert!(matches!(
        c.import(&b, Validation::Full { now: clock }),
        Err(ChainError::Import(ImportError::FromTheFuture(_)))
    ));
    assert_eq!(c.head().number, 0);
    assert!(import(&mut c, &b).unwrap().new);
    assert!(
        !import(&mut c, &b).unwrap().new,
        "importing twice is harmless"
    );
}

#[test]
fn a_block_with_a_wrong_state_root_or_tampered_transactions_is_refused() {
    let mut c = chain(&["A", "B"]);
    let good = block(&c, "A", vec![register(&id("p"), "P", 0)]);
    // Re-seal the header with a different state root.
    let mut header = good.header().clone();
    header.state_root = [7; 32];
    let bad =
        SealedBlock::new(header.seal(&id("A")).unwrap(), good.transactions().to_vec()).unwrap();
    assert_eq!(import(&mut c, &bad), Err(ImportError::StateRoot));
    // Swap the transactions: the root no longer matches.
    let mut raw = pb::Block::decode(good.to_bytes().as_slice()).unwrap();
    raw.transactions = vec![register(&id("q"), "Q", 0).to_bytes().to_vec()];
    assert!(SealedBlock::from_bytes(&raw.encode_to_vec()).is_err());
    assert!(import(&mut c, &good).is_ok());
}

#[test]
fn identities_register_rotate_and_resolve_by_name() {
    let mut c = chain(&["A", "B"]);
    let anna = id("anna");
    let other_anna = id("anna-2");
    let b = block(
        &c,
        "A",
        vec![
            register(&anna, "Anna Berg", 0),
            register(&other_anna, "anna  berg", 0),
        ],
    );
    import(&mut c, &b).unwrap();
    assert_eq!(
        c.state().identity(anna.id()).unwrap().display_name,
        "Anna Berg"
    );
    assert_eq!(
        c.state().identities_named("ANNA BERG").len(),
        2,
        "names are not unique"
    );
    assert_eq!(
        tx_error(&mut c, "B", register(&anna, "Anna", 1)),
        TxRejected::AlreadyRegistered
    );

    let newer = PrekeyRing::new(
        &anna,
        Timestamp::from_unix_millis(START + 1000),
        &mut rand::rng(),
    );
    let rotate = Transaction::sign(
        &anna,
        1,
        Action::RotatePrekey {
            prekey: newer.current().clone(),
        },
    );
    add(&mut c, "B", vec![rotate]).unwrap();
    assert_eq!(
        c.state().identity(anna.id()).unwrap().prekey,
        *newer.current()
    );
    // Someone else's prekey cannot be registered as one's own.
    let stranger = id("stranger");
    let foreign = Transaction::sign(
        &stranger,
        0,
        Action::RegisterIdentity {
            display_name: "S".into(),
            prekey: newer.current().clone(),
        },
    );
    assert_eq!(tx_error(&mut c, "A", foreign), TxRejected::ForeignPrekey);
}

#[test]
fn nonces_refuse_duplicates_and_gaps() {
    let mut c = chain(&["A", "B"]);
    let p = id("p");
    add(&mut c, "A", vec![register(&p, "P", 0)]).unwrap();
    assert_eq!(c.state().next_nonce(p.id()), 1);
    let revoke = |n| {
        Transaction::sign(
            &p,
            n,
            Action::RevokeIdentity {
                subject: *p.id(),
                reason: "lost phone".into(),
            },
        )
    };
    assert_eq!(
        tx_error(&mut c, "B", revoke(0)),
        TxRejected::BadNonce {
            expected: 1,
            got: 0
        }
    );
    assert_eq!(
        tx_error(&mut c, "B", revoke(5)),
        TxRejected::BadNonce {
            expected: 1,
            got: 5
        }
    );
}

#[test]
fn only_authorities_certify_and_publish() {
    let mut c = chain(&["A", "B"]);
    let medic = id("medic");
    add(&mut c, "A", vec![register(&medic, "Medic", 0)]).unwrap();
    let until = Timestamp::from_unix_millis(START + 30 * 86_400_000);
    let certify = |by: &Identity, nonce| {
        Transaction::sign(
            by,
            nonce,
            Action::CertifyRole {
                subject: *medic.id(),
                role: "medic".into(),
                expires_at: until,
            },
        )
    };
    assert_eq!(
        tx_error(&mut c, "B", certify(&medic, 1)),
        TxRejected::NotAuthority("certify roles")
    );
    add(&mut c, "B", vec![certify(&id("A"), 0)]).unwrap();
    let now = c.head().timestamp;
    let roles = c.state().roles_of(medic.id(), now);
    assert_eq!(roles.len(), 1);
    assert_eq!(
        (roles[0].role.as_str(), roles[0].certifier),
        ("medic", *id("A").id())
    );
    assert!(
        c.state().roles_of(medic.id(), until).is_empty(),
        "roles lapse at their expiry"
    );

    let alert =
        lifeline_consensus::alert::Alert::from_pb(flood("flood-1", now.as_unix_millis())).unwrap();
    let by_medic = Transaction::sign(&medic, 1, Action::PublishAlert(Box::new(alert.clone())));
    assert_eq!(
        tx_error(&mut c, "A", by_medic),
        TxRejected::NotAuthority("publish alerts")
    );
    let by_b = Transaction::sign(&id("B"), 0, Action::PublishAlert(Box::new(alert.clone())));
    add(&mut c, "A", vec![by_b]).unwrap();
    let t = c.head().timestamp;
    assert_eq!(c.state().alerts_in_force(t, None, LIFE).len(), 1);
    assert_eq!(
        c.state()
            .alerts_in_force(
                t,
                Some(Point {
                    lat: 51.05,
                    lon: 12.05
                }),
                LIFE
            )
            .len(),
        1
    );
    assert!(
        c.state()
            .alerts_in_force(
                t,
                Some(Point {
                    lat: 48.0,
                    lon: 2.0
                }),
                LIFE
            )
            .is_empty()
    );
    let again = Transaction::sign(&id("B"), 1, Action::PublishAlert(Box::new(alert)));
    assert_eq!(
        tx_error(&mut c, "B", again),
        TxRejected::DuplicateAlert("flood-1".into())
    );

    // A Cancel takes it out of force.
    let mut cancel = flood("flood-1-cancel", t.as_unix_millis());
    cancel.msg_type = pb::AlertMsgType::Cancel.into();
    cancel.references = vec!["flood-1".into()];
    let cancel = lifeline_consensus::alert::Alert::from_pb(cancel).unwrap();
    add(
        &mut c,
        "B",
        vec![Transaction::sign(
            &id("A"),
            1,
            Action::PublishAlert(Box::new(cancel)),
        )],
    )
    .unwrap();
    assert!(
        c.state()
            .alerts_in_force(c.head().timestamp, None, LIFE)
            .is_empty()
    );
}

/// A CAP alert read from `xml`, its times moved so that it is sent at `sent_ms`.
fn cap_alert(xml: &str, sent_ms: u64) -> lifeline_consensus::alert::Alert {
    let mut a = lifeline_consensus::cap::from_cap_xml(xml).unwrap().alert;
    let shift = |t: &mut lifeline_consensus::alert::CapTime, base: Timestamp| {
        let offset = t.at.as_unix_millis() as i64 - base.as_unix_millis() as i64;
        t.at = Timestamp::from_unix_millis((sent_ms as i64 + offset) as u64 / 1000 * 1000);
    };
    let base = a.sent.at;
    shift(&mut a.sent, base);
    for info in &mut a.infos {
        for t in [&mut info.effective, &mut info.onset, &mut info.expires]
            .into_iter()
            .flatten()
        {
            shift(t, base);
        }
    }
    a
}

#[test]
fn cap_alerts_as_agencies_write_them_go_on_the_chain() {
    let mut c = chain(&["A", "B"]);
    let now = c.head().timestamp.as_unix_millis() + 60_000;
    let publish =
        |alert, nonce| Transaction::sign(&id("A"), nonce, Action::PublishAlert(Box::new(alert)));
    // Bilingual, geocode only; and a wireless alert with no <expires>.
    let storm = cap_alert(include_str!("cap/bilingual-geocode-only.xml"), now);
    let fire = cap_alert(include_str!("cap/wea-polygons-media.xml"), now);
    add(
        &mut c,
        "B",
        vec![publish(storm.clone(), 0), publish(fire.clone(), 1)],
    )
    .unwrap();
    let t = c.head().timestamp;
    let in_force = |c: &Chain<MemoryChainStore>, t, near| -> Vec<String> {
        c.state()
            .alerts_in_force(t, near, LIFE)
            .iter()
            .map(|r| r.alert.identifier.clone())
            .collect()
    };
    // Extreme (the fire) before Moderate.
    assert_eq!(
        in_force(&c, t, None),
        [fire.identifier.clone(), storm.identifier.clone()]
    );
    // Far from the fire's polygons, the storm's code-only area may apply.
    let ottawa = Point {
        lat: 45.4,
        lon: -75.7,
    };
    assert_eq!(in_force(&c, t, Some(ottawa)), [storm.identifier.as_str()]);
    // The fire has no <expires>: in force until the network's lifetime.
    let later = t.saturating_add(Duration::from_secs(48 * 3600));
    assert!(in_force(&c, later, None).contains(&fire.identifier));
    assert!(!in_force(&c, t.saturating_add(LIFE), None).contains(&fire.identifier));
    assert_eq!(
        c.state().alert(&storm.identifier).unwrap().alert,
        storm,
        "kept whole"
    );

    // A Cancel with no <info> takes the storm out of force.
    let cancel = cap_alert(include_str!("cap/cancel-without-info.xml"), now + 1_000);
    add(&mut c, "A", vec![publish(cancel.clone(), 2)]).unwrap();
    assert_eq!(
        in_force(&c, c.head().timestamp, None),
        [fire.identifier.as_str()]
    );
    assert_eq!(
        c.state().alert(&storm.identifier).unwrap().superseded_by,
        Some(cancel.identifier.clone())
    );

    // A "threat over" Update (expires = sent) naming alerts this chain never
    // carried is taken.
    let over = cap_alert(include_str!("cap/threat-over-update.xml"), now + 2_000);
    add(&mut c, "B", vec![publish(over.clone(), 3)]).unwrap();
    assert!(c.state().alert(&over.identifier).is_some());

    // A reference to an alert on the chain must name its sender.
    let mut wrong = cancel.clone();
    wrong.identifier = "cancel-2".into();
    wrong.references[0].identifier = fire.identifier.clone();
    wrong.references[0].sender = "someone@else.example".into();
    assert!(matches!(
        tx_error(&mut c, "A", publish(wrong, 4)),
        TxRejected::ReferenceSender { .. }
    ));
    // A new Alert whose every info has expired says nothing.
    let mut stale = cap_alert(include_str!("cap/oasis-a2-thunderstorm.xml"), START);
    stale.infos[0].expires = Some(lifeline_consensus::alert::CapTime::utc(
        Timestamp::from_unix_millis(START),
    ));
    assert_eq!(
        tx_error(&mut c, "A", publish(stale, 4)),
        TxRejected::AlreadyExpired
    );

    // The state, CAP alerts included, survives a snapshot and a restart.
    let g = genesis(&["A", "B"]);
    let mut parent = root(&c);
    for by in ["A", "B", "A", "B"] {
        let b = block(&c, by, vec![]);
        import(&mut c, &b).unwrap();
        for v in ["A", "B"] {
            c.add_vote(&link(&c, v, parent, at(&b))).unwrap();
        }
        parent = at(&b);
    }
    let state_root = c.state().root();
    assert!(c.finalized().number >= 4, "a snapshot was taken");
    let reopened = Chain::open(c.into_store(), &g).unwrap();
    assert_eq!(reopened.state().root(), state_root);
    assert_eq!(
        reopened.state().alert(&storm.identifier).unwrap().alert,
        storm
    );
}

#[test]
fn revocation_by_owner_or_authority_and_revoked_senders_are_refused() {
    let mut c = chain(&["A", "B"]);
    let (p, q) = (id("p"), id("q"));
    add(
        &mut c,
        "A",
        vec![register(&p, "P", 0), register(&q, "Q", 0)],
    )
    .unwrap();
    let q_revokes_p = Transaction::sign(
        &q,
        1,
        Action::RevokeIdentity {
            subject: *p.id(),
            reason: "prank".into(),
        },
    );
    assert_eq!(
        tx_error(&mut c, "B", q_revokes_p),
        TxRejected::NotOwnerOrAuthority
    );
    let authority_revokes_p = Transaction::sign(
        &id("A"),
        0,
        Action::RevokeIdentity {
            subject: *p.id(),
            reason: "reported stolen".into(),
        },
    );
    add(&mut c, "B", vec![authority_revokes_p]).unwrap();
    assert!(c.state().is_revoked(p.id()));
    assert_eq!(
        c.state().revocation(p.id()).unwrap().reason,
        "reported stolen"
    );
    let thief = Transaction::sign(
        &p,
        1,
        Action::RevokeIdentity {
            subject: *q.id(),
            reason: "x".into(),
        },
    );
    assert_eq!(tx_error(&mut c, "A", thief), TxRejected::RevokedSender);
}

#[test]
fn seals_alone_never_make_a_block_final() {
    let mut c = chain(&["A", "B", "C"]);
    let genesis = root(&c);
    let b1 = block(&c, "A", vec![]);
    import(&mut c, &b1).unwrap();
    add(&mut c, "B", vec![]).unwrap();
    let third = add(&mut c, "C", vec![]).unwrap();
    // Every signer sealed block 1 or a descendant: seal finality (which
    // honest signers moving between branches could make conflict, see
    // tests/finality.rs) would call it final. Only votes do.
    assert_eq!(third.finalized.number, 0);
    let b2 = c.store().canonical(2).unwrap().unwrap();
    let b2 = BlockRef {
        number: 2,
        hash: b2,
    };
    for by in ["A", "B"] {
        c.add_vote(&link(&c, by, genesis, at(&b1))).unwrap();
        c.add_vote(&link(&c, by, at(&b1), b2)).unwrap();
    }
    assert_eq!(
        c.finalized().number,
        0,
        "two of three signers are not more than two thirds"
    );
    c.add_vote(&link(&c, "C", at(&b1), b2)).unwrap();
    assert_eq!(c.finalized().hash, b1.hash());
}

#[test]
fn heavier_branch_wins_and_finalized_blocks_are_never_reverted() {
    let names = ["A", "B", "C"];
    let mut c = chain(&names);
    let in_turn = *names
        .iter()
        .find(|n| c.signer_state().in_turn(1) == Some(*id(n).id()))
        .unwrap();
    let others: Vec<&str> = names.iter().copied().filter(|n| *n != in_turn).collect();
    let (y, z) = (others[0], others[1]);
    // Two competing blocks at height 1: the in-turn one weighs 2, the other 1.
    let x1 = block(&c, in_turn, vec![]);
    let y1 = block(&c, y, vec![]);
    assert_eq!((x1.header().weight, y1.header().weight), (2, 1));
    import(&mut c, &y1).unwrap();
    let outcome = import(&mut c, &x1).unwrap();
    assert_eq!(
        outcome.head.hash,
        x1.hash(),
        "the heavier block is the head"
    );
    assert!(outcome.reorg);

    // Build on the lighter block elsewhere, then show it to c: two more blocks
    // make that branch heavier, and the head moves over.
    let mut other = chain(&names);
    import(&mut other, &y1).unwrap();
    let y2 = block(&other, z, vec![]);
    import(&mut other, &y2).unwrap();
    let y3 = block(&other, in_turn, vec![]);
    import(&mut other, &y3).unwrap();
    import(&mut c, &y2).unwrap();
    let outcome = import(&mut c, &y3).unwrap();
    assert_eq!(outcome.head.hash, y3.hash());
    assert!(outcome.reorg);
    assert_eq!(outcome.finalized.number, 0, "seals make nothing final");
    // All three signers link y1 to its child: y1 is final.
    for by in names {
        c.add_vote(&link(&c, by, at(&y1), at(&y2))).unwrap();
    }
    assert_eq!(c.finalized().hash, y1.hash());
    // x1 conflicts with the finalized block: it can never come back.
    assert!(matches!(
        import(&mut c, &x1),
        Err(ImportError::BelowFinality {
            number: 1,
            finalized: 1
        })
    ));
    assert_eq!(c.head().hash, y3.hash());
    // Blocks of abandoned branches are gone from the store; the final
    // branch's stay.
    assert!(c.store().block(&x1.hash()).unwrap().is_none());
    assert!(c.store().block(&y1.hash()).unwrap().is_some());
}

#[test]
fn equivocation_is_detected_and_can_be_recorded() {
    let mut c = chain(&["A", "B", "C"]);
    let first = block(&c, "A", vec![]);
    let second = c
        .propose(
            &id("A"),
            first
                .header()
                .timestamp
                .saturating_add(Duration::from_secs(1)),
            None,
            vec![],
        )
        .unwrap();
    import(&mut c, &first).unwrap();
    let outcome = import(&mut c, &second).unwrap();
    let (a, b) = outcome.equivocation.expect("two blocks by A at height 1");
    assert_eq!(c.take_evidence().len(), 1);
    let record = Transaction::sign(
        &id("B"),
        0,
        Action::RecordEquivocation {
            a: Box::new(a.clone()),
            b: Box::new(b.clone()),
        },
    );
    add(&mut c, "B", vec![record]).unwrap();
    let on_record: Vec<_> = c.state().equivocations().collect();
    assert_eq!(on_record.len(), 1);
    assert_eq!(on_record[0].signer, *id("A").id());
    let again = Transaction::sign(
        &id("C"),
        0,
        Action::RecordEquivocation {
            a: Box::new(a.clone()),
            b: Box::new(b),
        },
    );
    assert_eq!(tx_error(&mut c, "C", again), TxRejected::DuplicateEvidence);
    let same = Transaction::sign(
        &id("C"),
        0,
        Action::RecordEquivocation {
            a: Box::new(a.clone()),
            b: Box::new(a),
        },
    );
    assert_eq!(
        tx_error(&mut c, "C", same),
        TxRejected::NotEquivocation("the headers are the same block")
    );
}

#[test]
fn a_restart_restores_state_from_the_latest_snapshot() {
    let g = genesis(&["A", "B", "C"]);
    let mut c = Chain::open(MemoryChainStore::new(), &g).unwrap();
    let signers = ["A", "B", "C"];
    let mut parent = root(&c);
    for i in 0..20u64 {
        let who = id(&format!("person{i}"));
        let b = block(
            &c,
            signers[(i % 3) as usize],
            vec![register(&who, &format!("Person {i}"), 0)],
        );
        import(&mut c, &b).unwrap();
        // Every signer links the parent to the block: the parent is final.
        for by in signers {
            c.add_vote(&link(&c, by, parent, at(&b))).unwrap();
        }
        parent = at(&b);
    }
    let (head, finalized, root) = (c.head(), c.finalized(), c.state().root());
    assert_eq!(finalized.number, 19, "final one block behind the head");
    let reopened = Chain::open(c.into_store(), &g).unwrap();
    assert_eq!(reopened.head(), head);
    assert_eq!(reopened.finalized(), finalized);
    assert_eq!(reopened.state().root(), root);
    assert_eq!(reopened.state().identity_count(), 20);
    assert_eq!(reopened.state().identities_named("person 7").len(), 1);
}

#[test]
fn votes_in_blocks_change_the_signers() {
    let mut c = chain(&["A", "B"]);
    let d = *id("D").id();
    let t = c.head().timestamp.saturating_add(c.config().period);
    let b1 = c
        .propose(
            &id("A"),
            t,
            Some(Vote {
                target: d,
                authorize: true,
            }),
            vec![],
        )
        .unwrap();
    import(&mut c, &b1).unwrap();
    let t = c.head().timestamp.saturating_add(c.config().period);
    let b2 = c
        .propose(
            &id("B"),
            t,
            Some(Vote {
                target: d,
                authorize: true,
            }),
            vec![],
        )
        .unwrap();
    let outcome = import(&mut c, &b2).unwrap();
    assert_eq!(
        outcome.signer_change,
        Some(lifeline_consensus::SignerChange::Added(d))
    );
    assert!(c.signer_state().is_signer(&d));
}

#[test]
fn the_in_turn_signer_seals_first_and_recent_signers_not_at_all() {
    let mut c = chain(&["A", "B", "C"]);
    let mut rng = rand::rng();
    let in_turn = ["A", "B", "C"]
        .into_iter()
        .find(|n| c.signer_state().in_turn(1) == Some(*id(n).id()))
        .unwrap();
    let period = c.config().period;
    assert_eq!(c.sealing_delay(id(in_turn).id(), &mut rng), Some(period));
    for other in ["A", "B", "C"].into_iter().filter(|n| *n != in_turn) {
        for _ in 0..50 {
            let delay = c.sealing_delay(id(other).id(), &mut rng).unwrap();
            assert!(
                delay >= period && delay < period + Duration::from_millis(1000),
                "{delay:?}"
            );
        }
    }
    assert_eq!(
        c.sealing_delay(id("M").id(), &mut rng),
        None,
        "not a signer"
    );
    add(&mut c, in_turn, vec![]).unwrap();
    assert_eq!(
        c.sealing_delay(id(in_turn).id(), &mut rng),
        None,
        "sealed the last block"
    );
}

/// A store whose next commit fails, as a full disk would.
#[derive(Default)]
struct FailingStore {
    inner: MemoryChainStore,
    fail_next: bool,
}

#[derive(Debug)]
struct DiskFull;

impl std::fmt::Display for DiskFull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("disk full")
    }
}

impl std::error::Error for DiskFull {}

impl ChainStore for FailingStore {
    type Error = DiskFull;
    fn genesis(&self) -> Result<Option<lifeline_consensus::BlockHash>, DiskFull> {
        Ok(self.inner.genesis().unwrap())
    }
    fn block(&self, hash: &lifeline_consensus::BlockHash) -> Result<Option<Vec<u8>>, DiskFull> {
        Ok(self.inner.block(hash).unwrap())
    }
    fn canonical(&self, number: u64) -> Result<Option<lifeline_consensus::BlockHash>, DiskFull> {
        Ok(self.inner.canonical(number).unwrap())
    }
    fn head(&self) -> Result<Option<lifeline_consensus::store::StoredHead>, DiskFull> {
        Ok(self.inner.head().unwrap())
    }
    fn finalized(&self) -> Result<Option<lifeline_consensus::store::StoredHead>, DiskFull> {
        Ok(self.inner.finalized().unwrap())
    }
    fn latest_snapshot(&self) -> Result<Option<Vec<u8>>, DiskFull> {
        Ok(self.inner.latest_snapshot().unwrap())
    }
    fn last_vote(&self) -> Result<Option<lifeline_consensus::VoteRecord>, DiskFull> {
        Ok(self.inner.last_vote().unwrap())
    }
    fn commit(&mut self, batch: lifeline_consensus::store::ChainBatch) -> Result<(), DiskFull> {
        if std::mem::take(&mut self.fail_next) {
            return Err(DiskFull);
        }
        self.inner.commit(batch).unwrap();
        Ok(())
    }
}

#[test]
fn a_failed_commit_changes_nothing_the_node_sees() {
    let g = genesis(&["A", "B", "C"]);
    let mut c = Chain::open(FailingStore::default(), &g).unwrap();
    let mut blocks = Vec::new();
    for by in ["A", "B"] {
        let t = c.head().timestamp.saturating_add(c.config().heartbeat);
        let b = c.propose(&id(by), t, None, vec![]).unwrap();
        c.import(&b, Validation::Full { now: t }).unwrap();
        blocks.push(at(&b));
    }
    // A block the disk refuses is not taken.
    let t = c.head().timestamp.saturating_add(c.config().heartbeat);
    let third = c.propose(&id("C"), t, None, vec![]).unwrap();
    let (head, finalized) = (c.head(), c.finalized());
    let mut store = c.into_store();
    store.fail_next = true;
    let mut c = Chain::open(store, &g).unwrap();
    assert!(matches!(
        c.import(&third, Validation::Full { now: t }),
        Err(ChainError::Store(DiskFull))
    ));
    assert_eq!((c.head(), c.finalized()), (head, finalized));
    // The same block goes in once the disk works again.
    let outcome = c.import(&third, Validation::Full { now: t }).unwrap();
    assert_eq!(outcome.head.hash, third.hash());
    // A vote whose finality the disk refuses is not counted: sent again,
    // it finalizes.
    let vote = |by: &str, s: BlockRef, t: BlockRef| FinalityVote::sign(&id(by), g.hash(), s, t);
    let mut store = c.into_store();
    store.fail_next = true;
    let mut c = Chain::open(store, &g).unwrap();
    for by in ["A", "B"] {
        c.add_vote(&vote(by, blocks[0], blocks[1])).unwrap();
    }
    let last = vote("C", blocks[0], blocks[1]);
    assert!(matches!(
        c.add_vote(&last),
        Err(ChainError::Store(DiskFull))
    ));
    assert_eq!(c.finalized().number, 0);
    assert!(c.add_vote(&last).unwrap(), "counted now, and passed on");
    assert_eq!(c.finalized().hash, blocks[0].hash);
}

const SEVEN: [&str; 7] = ["A", "B", "C", "D", "E", "F", "G"];

fn at(b: &SealedBlock) -> BlockRef {
    BlockRef {
        number: b.header().number,
        hash: b.hash(),
    }
}

fn root(c: &Chain<MemoryChainStore>) -> BlockRef {
    BlockRef {
        number: c.finalized().number,
        hash: c.finalized().hash,
    }
}

/// `by` votes for the link from `source` to `target`.
fn link(c: &Chain<MemoryChainStore>, by: &str, source: BlockRef, target: BlockRef) -> FinalityVote {
    FinalityVote::sign(&id(by), c.genesis_hash(), source, target)
}

/// The signer in turn at `number`, by name.
fn in_turn(c: &Chain<MemoryChainStore>, number: u64) -> &'static str {
    let want = c.signer_state().in_turn(number).unwrap();
    SEVEN.into_iter().find(|n| *id(n).id() == want).unwrap()
}

#[test]
fn a_block_is_final_once_more_than_two_thirds_link_it_to_its_child() {
    let g = genesis(&SEVEN);
    let mut c = Chain::open(MemoryChainStore::new(), &g).unwrap();
    let genesis = root(&c);
    let b1 = block(&c, "A", vec![]);
    import(&mut c, &b1).unwrap();
    let b2 = block(&c, "B", vec![]);
    import(&mut c, &b2).unwrap();
    // Five of seven justify block 1; that finalizes nothing new.
    for by in ["A", "B", "C", "D", "E"] {
        c.add_vote(&link(&c, by, genesis, at(&b1))).unwrap();
    }
    assert_eq!(c.finalized().number, 0);
    // Four links from block 1 to its child are not more than two thirds.
    for by in ["A", "B", "C", "D"] {
        assert!(c.add_vote(&link(&c, by, at(&b1), at(&b2))).unwrap());
    }
    assert_eq!(c.finalized().number, 0);
    // A vote seen again changes nothing and is not passed on.
    assert!(!c.add_vote(&link(&c, "B", at(&b1), at(&b2))).unwrap());
    // The fifth finalizes block 1: one period after it, not four.
    assert!(c.add_vote(&link(&c, "E", at(&b1), at(&b2))).unwrap());
    assert_eq!(c.finalized().hash, b1.hash());
    // It was stored: a restart keeps it though no seals say so.
    let reopened = Chain::open(c.into_store(), &g).unwrap();
    assert_eq!(reopened.finalized().hash, b1.hash());
}

#[test]
fn votes_beyond_two_thirds_are_kept_but_not_passed_on() {
    let mut c = chain(&SEVEN);
    let genesis = root(&c);
    let b1 = block(&c, "A", vec![]);
    import(&mut c, &b1).unwrap();
    for by in ["A", "B", "C", "D", "E"] {
        assert!(c.add_vote(&link(&c, by, genesis, at(&b1))).unwrap());
    }
    assert!(!c.add_vote(&link(&c, "F", genesis, at(&b1))).unwrap());
    assert_eq!(c.votes().len(), 6);
}

#[test]
fn a_link_that_skips_a_block_justifies_its_target_but_finalizes_nothing() {
    let mut c = chain(&SEVEN);
    let genesis = root(&c);
    let b1 = block(&c, "A", vec![]);
    import(&mut c, &b1).unwrap();
    let b2 = block(&c, "B", vec![]);
    import(&mut c, &b2).unwrap();
    for by in ["A", "B", "C", "D", "E"] {
        c.add_vote(&link(&c, by, genesis, at(&b2))).unwrap();
    }
    assert_eq!(c.finalized().number, 0);
    // Block 2 is justified: an authority's next vote starts from it.
    let b3 = block(&c, "C", vec![]);
    import(&mut c, &b3).unwrap();
    // (After any wait for an out-of-turn block.)
    let now = b3.header().timestamp.saturating_add(c.config().period);
    let vote = c.vote(&id("F"), now).unwrap().unwrap();
    assert_eq!((vote.source, vote.target), (at(&b2), at(&b3)));
    assert_eq!(vote.verify(), Ok(()));
    // Without the votes, it would start from the finalized block.
    let mut plain = chain(&SEVEN);
    for b in [&b1, &b2, &b3] {
        import(&mut plain, b).unwrap();
    }
    let vote = plain.vote(&id("F"), now).unwrap().unwrap();
    assert_eq!(vote.source, genesis);
}

#[test]
fn a_vote_for_a_block_not_yet_seen_counts_when_the_block_arrives() {
    let mut c = chain(&SEVEN);
    let mut ahead = chain(&SEVEN);
    let genesis = root(&c);
    let b1 = block(&ahead, "A", vec![]);
    import(&mut ahead, &b1).unwrap();
    let b2 = block(&ahead, "B", vec![]);
    import(&mut ahead, &b2).unwrap();
    for by in ["A", "B", "C", "D", "E"] {
        assert!(c.add_vote(&link(&c, by, at(&b1), at(&b2))).unwrap());
    }
    import(&mut c, &b1).unwrap();
    assert_eq!(c.finalized().number, 0);
    import(&mut c, &b2).unwrap();
    assert_eq!(c.finalized().hash, b1.hash());
    // Votes at or below the finalized block are dropped and not kept.
    assert!(!c.add_vote(&link(&c, "F", genesis, at(&b1))).unwrap());
    assert_eq!(c.votes().len(), 5);
}

#[test]
fn votes_from_outsiders_other_chains_or_forgers_are_refused_and_double_votes_are_evidence() {
    let mut c = chain(&SEVEN);
    let genesis = root(&c);
    let b1 = block(&c, "A", vec![]);
    import(&mut c, &b1).unwrap();
    let b2 = block(&c, "B", vec![]);
    import(&mut c, &b2).unwrap();
    let refused = |c: &mut Chain<MemoryChainStore>, v: &FinalityVote| match c.add_vote(v) {
        Err(ChainError::Vote(e)) => e,
        other => panic!("expected a refused vote, got {other:?}"),
    };
    let outsider = link(&c, "Mallory", at(&b1), at(&b2));
    assert_eq!(
        refused(&mut c, &outsider),
        VoteError::NotASigner(*id("Mallory").id())
    );
    let other = FinalityVote::sign(
        &id("B"),
        lifeline_consensus::BlockHash([9; 32]),
        at(&b1),
        at(&b2),
    );
    assert_eq!(refused(&mut c, &other), VoteError::OtherChain);
    // B's vote with C named as signer: the signature is B's.
    let mut forged =
        pb::SignedFinalityVote::decode(link(&c, "B", at(&b1), at(&b2)).to_bytes().as_slice())
            .unwrap();
    let mut body = pb::FinalityVoteBody::decode(forged.body.as_slice()).unwrap();
    body.signer = id("C").id().as_bytes().to_vec();
    forged.body = body.encode_to_vec();
    let forged = FinalityVote::from_bytes(&forged.encode_to_vec()).unwrap();
    assert_eq!(refused(&mut c, &forged), VoteError::BadSignature);
    // D votes for height 2 twice: the second is evidence, and passed on
    // (every node must count the same votes); each counts for its own link.
    let first = link(&c, "D", at(&b1), at(&b2));
    assert!(c.add_vote(&first).unwrap());
    let second = link(&c, "D", genesis, at(&b2));
    assert!(c.add_vote(&second).unwrap(), "passed on as evidence");
    assert!(!c.add_vote(&second).unwrap(), "known now");
    let evidence = c.take_vote_evidence();
    assert_eq!(evidence, vec![(first, second)]);
    assert!(c.take_vote_evidence().is_empty());
    // With B, E and F, D makes four on the link from block 1; C's (forged
    // above) does not count.
    for by in ["B", "E", "F"] {
        c.add_vote(&link(&c, by, at(&b1), at(&b2))).unwrap();
    }
    assert_eq!(c.finalized().number, 0);
    c.add_vote(&link(&c, "G", at(&b1), at(&b2))).unwrap();
    assert_eq!(c.finalized().hash, b1.hash());
}

#[test]
fn an_authority_never_votes_twice_for_one_height_even_after_a_restart() {
    let g = genesis(&SEVEN);
    let mut c = Chain::open(MemoryChainStore::new(), &g).unwrap();
    let t = c.head().timestamp.saturating_add(c.config().heartbeat);
    let first = c.propose(&id(in_turn(&c, 1)), t, None, vec![]).unwrap();
    import(&mut c, &first).unwrap();
    assert!(c.vote(&id("Mallory"), t).unwrap().is_none(), "not a signer");
    let vote = c.vote(&id("A"), t).unwrap().unwrap();
    assert_eq!(vote.target, at(&first));
    assert!(c.vote(&id("A"), t).unwrap().is_none(), "voted already");
    // After a restart the stored record still forbids a second vote at
    // height 1, whatever block is the head there.
    let mut c = Chain::open(c.into_store(), &g).unwrap();
    assert_eq!(c.last_vote().target, 1);
    assert!(c.vote(&id("A"), t).unwrap().is_none());
    let second = block(&c, in_turn(&c, 2), vec![]);
    import(&mut c, &second).unwrap();
    let vote = c
        .vote(&id("A"), second.header().timestamp)
        .unwrap()
        .unwrap();
    assert_eq!(vote.target, at(&second));
}

#[test]
fn an_authority_waits_half_a_period_before_voting_for_an_out_of_turn_block() {
    let mut c = chain(&SEVEN);
    let t = c.head().timestamp.saturating_add(c.config().heartbeat);
    let out = SEVEN.into_iter().find(|n| *n != in_turn(&c, 1)).unwrap();
    let light = c.propose(&id(out), t, None, vec![]).unwrap();
    let heavy = c.propose(&id(in_turn(&c, 1)), t, None, vec![]).unwrap();
    import(&mut c, &light).unwrap();
    let due = t.saturating_add(c.config().period / 2);
    assert_eq!(c.vote_wait(t), Some(due));
    assert!(c.vote(&id("A"), t).unwrap().is_none());
    // The in-turn block comes meanwhile: that one is voted for at once.
    let mut d = chain(&SEVEN);
    import(&mut d, &light).unwrap();
    import(&mut c, &heavy).unwrap();
    assert_eq!(c.vote_wait(t), None);
    assert_eq!(c.vote(&id("A"), t).unwrap().unwrap().target, at(&heavy));
    // If none comes, the out-of-turn block gets its votes after the wait.
    assert!(d.vote(&id("A"), t).unwrap().is_none());
    assert_eq!(d.vote(&id("A"), due).unwrap().unwrap().target, at(&light));
}

/// The race that made seal-following votes unsafe: an out-of-turn block and
/// the heavier in-turn one at the same height, with authorities that voted
/// for the first before the second reached them. Each authority votes
/// through `Chain::vote`, and every node hears every vote.
#[test]
fn racing_blocks_at_one_height_never_finalize_two_branches() {
    let g = genesis(&SEVEN);
    let open = || Chain::open(MemoryChainStore::new(), &g).unwrap();
    let mut authorities: Vec<Chain<MemoryChainStore>> = SEVEN.iter().map(|_| open()).collect();
    let probe = open();
    let in_name = in_turn(&probe, 1);
    let out_name = SEVEN.into_iter().find(|n| *n != in_name).unwrap();
    let t = probe
        .head()
        .timestamp
        .saturating_add(probe.config().heartbeat);
    let light = probe.propose(&id(out_name), t, None, vec![]).unwrap();
    let heavy = probe.propose(&id(in_name), t, None, vec![]).unwrap();
    let late = t.saturating_add(probe.config().period);
    let mut votes = Vec::new();
    // Four authorities see only the light block until after their wait.
    for (i, name) in SEVEN.iter().enumerate() {
        if i < 4 {
            import(&mut authorities[i], &light).unwrap();
            votes.extend(authorities[i].vote(&id(name), late).unwrap());
        }
        import(&mut authorities[i], &heavy).unwrap();
        votes.extend(authorities[i].vote(&id(name), late).unwrap());
    }
    assert_eq!(votes.len(), 7, "one vote per authority at height 1");
    // Every vote reaches every authority (as gossip would).
    let hear = |authorities: &mut Vec<Chain<MemoryChainStore>>, votes: &[FinalityVote]| {
        for a in authorities.iter_mut() {
            for v in votes {
                a.add_vote(v).unwrap();
            }
        }
    };
    hear(&mut authorities, &votes);
    // Node X hears the light block and its votes only; node Y everything.
    let mut x = open();
    let mut y = open();
    import(&mut x, &light).unwrap();
    import(&mut y, &light).unwrap();
    import(&mut y, &heavy).unwrap();
    for v in &votes {
        x.add_vote(v).unwrap();
        y.add_vote(v).unwrap();
    }
    // Block 2 on the heavy block; everyone votes again.
    let b2 = block(&y, in_turn(&y, 2), vec![]);
    let mut more = Vec::new();
    for (i, name) in SEVEN.iter().enumerate() {
        import(&mut authorities[i], &b2).unwrap();
        more.extend(
            authorities[i]
                .vote(&id(name), b2.header().timestamp)
                .unwrap(),
        );
    }
    hear(&mut authorities, &more);
    import(&mut x, &heavy).unwrap();
    for c in [&mut x, &mut y] {
        import(c, &b2).unwrap();
        for v in &more {
            c.add_vote(v).unwrap();
        }
        assert!(c.finalized().number < 2);
        assert_ne!(c.finalized().hash, light.hash());
    }
    // Block 3: the link from block 2 finalizes it, and with it the heavy
    // block, on both nodes.
    let b3 = block(&y, in_turn(&y, 3), vec![]);
    let mut last = Vec::new();
    for (i, name) in SEVEN.iter().enumerate() {
        import(&mut authorities[i], &b3).unwrap();
        last.extend(
            authorities[i]
                .vote(&id(name), b3.header().timestamp)
                .unwrap(),
        );
    }
    for c in [&mut x, &mut y] {
        import(c, &b3).unwrap();
        for v in &last {
            c.add_vote(v).unwrap();
        }
        assert_eq!(c.finalized().hash, b2.hash());
        assert_eq!(c.head().hash, b3.hash());
    }
}

#[test]
fn votes_that_finalize_a_lighter_branch_move_the_head_onto_it() {
    let g = genesis(&SEVEN);
    let mut c = Chain::open(MemoryChainStore::new(), &g).unwrap();
    let genesis = root(&c);
    let t = c.head().timestamp.saturating_add(c.config().heartbeat);
    // A light branch of two out-of-turn blocks, and a heavier in-turn one.
    let outs: Vec<&str> = SEVEN
        .into_iter()
        .filter(|n| *n != in_turn(&c, 1) && *n != in_turn(&c, 2))
        .collect();
    let l1 = c.propose(&id(outs[0]), t, None, vec![]).unwrap();
    import(&mut c, &l1).unwrap();
    let t2 = t.saturating_add(c.config().heartbeat);
    let l2 = c.propose(&id(outs[1]), t2, None, vec![]).unwrap();
    import(&mut c, &l2).unwrap();
    let h1 = c
        .propose_on(&genesis.hash, &id(in_turn(&c, 1)), t, None, vec![])
        .unwrap();
    import(&mut c, &h1).unwrap();
    let h2 = c
        .propose_on(&h1.hash(), &id(in_turn(&c, 2)), t2, None, vec![])
        .unwrap();
    import(&mut c, &h2).unwrap();
    assert_eq!(c.head().hash, h2.hash());
    for by in ["A", "B", "C", "D", "E"] {
        c.add_vote(&link(&c, by, at(&l1), at(&l2))).unwrap();
    }
    assert_eq!(c.finalized().hash, l1.hash());
    assert_eq!(
        c.head().hash,
        l2.hash(),
        "the best block above the final one"
    );
    // The store agrees: reopening finds the same head and canonical chain.
    let reopened = Chain::open(c.into_store(), &g).unwrap();
    assert_eq!(reopened.head().hash, l2.hash());
    assert_eq!(reopened.finalized().hash, l1.hash());
    assert_eq!(reopened.store().canonical(2).unwrap(), Some(l2.hash()));
}

#[test]
fn a_vote_whose_record_cannot_be_stored_is_not_cast() {
    let g = genesis(&["A", "B", "C"]);
    let mut c = Chain::open(FailingStore::default(), &g).unwrap();
    let t = c.head().timestamp.saturating_add(c.config().heartbeat);
    let b1 = c.propose(&id("A"), t, None, vec![]).unwrap();
    c.import(&b1, Validation::Full { now: t }).unwrap();
    let t = t.saturating_add(c.config().period);
    let mut store = c.into_store();
    store.fail_next = true;
    let mut c = Chain::open(store, &g).unwrap();
    assert!(matches!(
        c.vote(&id("B"), t),
        Err(ChainError::Store(DiskFull))
    ));
    assert_eq!(c.last_vote().target, 0);
    // Once the disk works again, the vote is cast (and recorded).
    let vote = c.vote(&id("B"), t).unwrap().unwrap();
    assert_eq!(vote.target.hash, b1.hash());
    assert_eq!(c.store().last_vote().unwrap().unwrap().target, 1);
}

#[test]
fn a_vote_around_or_inside_another_of_the_same_signer_is_evidence() {
    let mut c = chain(&SEVEN);
    let genesis = root(&c);
    let mut b = Vec::new();
    for by in ["A", "B", "C", "D"] {
        let next = block(&c, by, vec![]);
        import(&mut c, &next).unwrap();
        b.push(at(&next));
    }
    // Votes that follow the rule: sources never fall, targets rise.
    c.add_vote(&link(&c, "A", genesis, b[0])).unwrap();
    c.add_vote(&link(&c, "A", b[0], b[1])).unwrap();
    c.add_vote(&link(&c, "A", b[0], b[3])).unwrap();
    assert!(c.take_vote_evidence().is_empty());
    // D links genesis to block 4, then block 2 to block 3: inside it.
    let outer = link(&c, "D", genesis, b[3]);
    c.add_vote(&outer).unwrap();
    let inner = link(&c, "D", b[1], b[2]);
    assert!(c.add_vote(&inner).unwrap(), "passed on as evidence");
    // E the other way round: the second vote surrounds the first.
    let first = link(&c, "E", b[1], b[2]);
    c.add_vote(&first).unwrap();
    let around = link(&c, "E", genesis, b[3]);
    c.add_vote(&around).unwrap();
    assert_eq!(
        c.take_vote_evidence(),
        vec![(outer, inner), (first, around)]
    );
    // All of them are kept (and count for their own links).
    assert_eq!(c.votes().len(), 7);
}

#[test]
fn a_second_block_on_a_branch_finality_dropped_is_still_evidence() {
    let mut c = chain(&["A", "B", "C"]);
    let first = block(&c, "A", vec![]);
    let t = first
        .header()
        .timestamp
        .saturating_add(Duration::from_secs(1));
    let second = c.propose(&id("A"), t, None, vec![]).unwrap();
    // Another block at height 1, by B: sealed on genesis like both of A's.
    let t = first
        .header()
        .timestamp
        .saturating_add(Duration::from_secs(2));
    let other = c.propose(&id("B"), t, None, vec![]).unwrap();
    import(&mut c, &first).unwrap();
    let child = block(&c, "B", vec![]);
    import(&mut c, &child).unwrap();
    for by in ["A", "B", "C"] {
        c.add_vote(&link(&c, by, at(&first), at(&child))).unwrap();
    }
    assert_eq!(c.finalized().hash, first.hash());
    // A's second block comes after block 1 is final: refused, but evidence.
    assert!(matches!(
        import(&mut c, &second),
        Err(ImportError::BelowFinality { .. })
    ));
    let evidence = c.take_evidence();
    assert_eq!(evidence.len(), 1);
    assert_eq!(
        (evidence[0].0.hash(), evidence[0].1.hash()),
        (first.hash(), second.hash())
    );
    // B's block at that height is no evidence: B sealed nothing else there.
    assert!(import(&mut c, &other).is_err());
    assert!(c.take_evidence().is_empty());
}

#[test]
fn a_broken_voting_rule_can_be_recorded_once_per_signer_and_survives_a_restart() {
    let g = genesis(&SEVEN);
    let mut c = Chain::open(MemoryChainStore::new(), &g).unwrap();
    let genesis = root(&c);
    let mut b = Vec::new();
    for by in ["A", "B", "C"] {
        let next = block(&c, by, vec![]);
        import(&mut c, &next).unwrap();
        b.push(at(&next));
    }
    let record = |by: &str, nonce, x: &FinalityVote, y: &FinalityVote| {
        Transaction::sign(
            &id(by),
            nonce,
            Action::RecordVoteEquivocation {
                a: Box::new(x.clone()),
                b: Box::new(y.clone()),
            },
        )
    };
    let not = |why| TxRejected::NotEquivocation(why);
    // D voted twice for height 2 (a clone, say); the chain takes the pair.
    let (d1, d2) = (link(&c, "D", b[0], b[1]), link(&c, "D", genesis, b[1]));
    c.add_vote(&d1).unwrap();
    c.add_vote(&d2).unwrap();
    let (x, y) = c.take_vote_evidence().pop().unwrap();
    // Votes that keep the rule, or by two signers, or for another chain,
    // or the same vote twice, are not evidence.
    let fine = link(&c, "D", b[1], b[2]);
    assert_eq!(
        tx_error(&mut c, "G", record("G", 0, &x, &fine)),
        not("the votes keep the voting rule")
    );
    let other_signer = link(&c, "E", genesis, b[1]);
    assert_eq!(
        tx_error(&mut c, "G", record("G", 0, &x, &other_signer)),
        not("the votes have different signers")
    );
    let elsewhere = FinalityVote::sign(
        &id("D"),
        lifeline_consensus::BlockHash([9; 32]),
        genesis,
        b[1],
    );
    assert_eq!(
        tx_error(&mut c, "G", record("G", 0, &x, &elsewhere)),
        not("a vote is for another chain")
    );
    assert_eq!(
        tx_error(&mut c, "G", record("G", 0, &x, &x)),
        not("the votes are for the same link")
    );
    add(&mut c, "D", vec![record("G", 0, &x, &y)]).unwrap();
    let on_record: Vec<_> = c.state().vote_equivocations().cloned().collect();
    assert_eq!(on_record.len(), 1);
    assert_eq!(on_record[0].signer, *id("D").id());
    let mut heights = [on_record[0].a, on_record[0].b];
    heights.sort();
    assert_eq!(heights, [(0, 2), (1, 2)]);
    // A surround vote by D is evidence too, but D is on record already.
    let around = link(&c, "D", genesis, b[2]);
    let inside = link(&c, "D", b[0], b[1]);
    assert_eq!(
        tx_error(&mut c, "G", record("G", 1, &around, &inside)),
        TxRejected::DuplicateEvidence
    );
    // E's surround pair goes on record.
    let (e_out, e_in) = (link(&c, "E", genesis, b[2]), link(&c, "E", b[0], b[1]));
    add(&mut c, "E", vec![record("G", 1, &e_in, &e_out)]).unwrap();
    assert_eq!(c.state().vote_equivocations().count(), 2);
    // The records come back from a snapshot: finalize past the snapshot
    // interval (4) and reopen.
    for _ in 0..4 {
        let by = in_turn(&c, c.head().number + 1);
        let next = block(&c, by, vec![]);
        let parent = BlockRef {
            number: c.head().number,
            hash: c.head().hash,
        };
        import(&mut c, &next).unwrap();
        for v in SEVEN {
            c.add_vote(&link(&c, v, parent, at(&next))).unwrap();
        }
    }
    assert!(c.finalized().number >= 4);
    let root_before = c.state().root();
    let reopened = Chain::open(c.into_store(), &g).unwrap();
    assert_eq!(reopened.state().root(), root_before);
    assert_eq!(reopened.state().vote_equivocations().count(), 2);
}

/// Attack 11: a signer that seals block after block on one parent (each
/// valid on its own) made every node keep all of them, in memory and on
/// disk. With the old code all 40 were kept here.
#[test]
fn a_signer_sealing_many_blocks_on_one_parent_costs_every_node_only_four() {
    let g = genesis(&SEVEN);
    let (mut a, mut b) = (
        Chain::open(MemoryChainStore::new(), &g).unwrap(),
        Chain::open(MemoryChainStore::new(), &g).unwrap(),
    );
    let t = a.head().timestamp.saturating_add(a.config().heartbeat);
    let siblings: Vec<SealedBlock> = (0..40)
        .map(|i| {
            a.propose(
                &id("C"),
                t.saturating_add(Duration::from_millis(i)),
                None,
                vec![],
            )
            .unwrap()
        })
        .collect();
    let mut refused = 0;
    for s in &siblings {
        match import(&mut a, s) {
            Ok(_) => {}
            Err(ImportError::TooManySiblings { kept: 4, .. }) => refused += 1,
            Err(e) => panic!("{e}"),
        }
    }
    for s in siblings.iter().rev() {
        let _ = import(&mut b, s);
    }
    let kept = |c: &Chain<MemoryChainStore>| -> Vec<_> {
        siblings
            .iter()
            .map(SealedBlock::hash)
            .filter(|h| c.contains(h).unwrap())
            .collect()
    };
    assert_eq!(
        kept(&a).len(),
        4,
        "only four of the signer's blocks are kept"
    );
    // The ones fork choice prefers, whatever order they came in.
    assert_eq!(kept(&a), kept(&b));
    assert!(kept(&a).contains(&a.head().hash));
    assert!(refused > 0, "some were refused outright");
    assert!(
        !a.take_evidence().is_empty(),
        "the equivocation is evidence"
    );
    // A block on a forgotten sibling is one this node does not have.
    let gone = siblings
        .iter()
        .find(|s| !a.contains(&s.hash()).unwrap())
        .unwrap();
    let on_gone = a
        .propose_on(
            &a.head().hash,
            &id("D"),
            t.saturating_add(a.config().heartbeat),
            None,
            vec![],
        )
        .map(|_| ());
    assert!(on_gone.is_ok());
    assert!(matches!(
        a.propose_on(&gone.hash(), &id("D"), t, None, vec![]),
        Err(ImportError::UnknownParent { .. })
    ));
}

/// Attack 11: forks that finality left behind stayed on disk for good.
#[test]
fn finality_forgets_the_forks_it_leaves_behind() {
    let g = genesis(&SEVEN);
    let mut c = Chain::open(MemoryChainStore::new(), &g).unwrap();
    let genesis = root(&c);
    let x = block(&c, "A", vec![]);
    let y = block(&c, "B", vec![]);
    import(&mut c, &x).unwrap();
    import(&mut c, &y).unwrap();
    let (kept, left) = if c.head().hash == x.hash() {
        (x, y)
    } else {
        (y, x)
    };
    let child = block(&c, "C", vec![]);
    import(&mut c, &child).unwrap();
    for by in ["A", "B", "C", "D", "E"] {
        c.add_vote(&link(&c, by, genesis, at(&kept))).unwrap();
    }
    for by in ["A", "B", "C", "D", "E"] {
        c.add_vote(&link(&c, by, at(&kept), at(&child))).unwrap();
    }
    assert_eq!(c.finalized().hash, kept.hash());
    assert!(c.contains(&kept.hash()).unwrap());
    assert!(
        !c.contains(&left.hash()).unwrap(),
        "the branch finality left is gone from memory and disk"
    );
    let store = c.into_store();
    assert!(store.block(&left.hash()).unwrap().is_none());
    assert!(store.block(&kept.hash()).unwrap().is_some());
}

/// Attack 11: registration is free, and each identity is kept by every node
/// for good. The genesis bounds how many join per block and per window;
/// the rest wait in the pool (and are no reason to seal), and the count
/// survives a restart. With the old code all 12 went into the first block.
#[test]
fn registrations_beyond_the_genesis_limits_wait_for_later_blocks() {
    use lifeline_consensus::TxPool;
    use lifeline_consensus::state::RegistrationLimits;
    let g = genesis_of(
        &["A"],
        ChainConfig {
            snapshot_interval: 1,
            registrations: Some(RegistrationLimits {
                per_block: 3,
                per_window: 5,
                window_blocks: 4,
            }),
            ..ChainConfig::default()
        },
    )
    .unwrap();
    let mut c = Chain::open(MemoryChainStore::new(), &g).unwrap();
    let people: Vec<Identity> = (0..12).map(|i| id(&format!("person {i}"))).collect();
    let mut pool = TxPool::new(100);
    for (i, p) in people.iter().enumerate() {
        pool.insert(register(p, &format!("P{i}"), 0), c.state())
            .unwrap();
    }
    // Too many for one block: refused, naming the rule.
    let four: Vec<Transaction> = (0..4).map(|i| register(&people[i], "x", 0)).collect();
    assert!(matches!(
        tx_error_all(&mut c, four),
        TxRejected::RegistrationLimit { per_block: 3, .. }
    ));
    let mut per_window = std::collections::BTreeMap::<u64, usize>::new();
    let mut idle = 0;
    while c.state().identity_count() < people.len() {
        let number = c.head().number + 1;
        let t = c.head().timestamp.saturating_add(c.config().heartbeat);
        if !pool.has_selectable(c.state(), number) {
            // Nothing may go in: an empty heartbeat block moves on.
            idle += 1;
        }
        let txs = pool.select(c.state(), number, t);
        assert!(txs.len() <= 3, "block {number} carries {}", txs.len());
        *per_window.entry(number / 4).or_default() += txs.len();
        let b = c.propose(&id("A"), t, None, txs).unwrap();
        import(&mut c, &b).unwrap();
        // One voter: a link to the child finalizes (and snapshots) each block.
        if number >= 2 {
            let parent = c.store().canonical(number - 1).unwrap().unwrap();
            let source = BlockRef {
                number: number - 1,
                hash: parent,
            };
            c.add_vote(&link(&c, "A", source, at(&b))).unwrap();
            // A restart in the middle of a window keeps its count.
            let before = c.state().registration_room(number + 1);
            c = Chain::open(c.into_store(), &g).unwrap();
            assert_eq!(c.state().registration_room(number + 1), before);
        }
        assert!(number < 40, "registrations stopped");
    }
    assert!(per_window.values().all(|&n| n <= 5), "{per_window:?}");
    assert!(idle > 0, "a full window was no reason to seal");
}

/// Like `tx_error`, for a block carrying all of `txs`.
fn tx_error_all(c: &mut Chain<MemoryChainStore>, txs: Vec<Transaction>) -> TxRejected {
    let t = c.head().timestamp.saturating_add(c.config().heartbeat);
    match c.propose(&id("A"), t, None, txs) {
        Err(ImportError::Transaction(e)) => e.reason,
        other => panic!("expected a transaction error, got {other:?}"),
    }
}
