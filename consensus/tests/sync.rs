//! Sync between two nodes, driven like the daemon will: messages go through
//! their wire encoding, and time is passed in.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use lifeline_consensus::chain::{ChainConfig, Genesis, Validation};
use lifeline_consensus::conformance::{genesis_of, identity_of};
use lifeline_consensus::sync::{Sync, SyncMessage, VOTE_ASK_TIMEOUT};
use lifeline_consensus::{
    BlockRef, Chain, ChainStore, FinalityVote, MemoryChainStore, SealedBlock,
};
use lifeline_crypto::Timestamp;
use prost::Message;

fn genesis() -> Genesis {
    let config = ChainConfig {
        snapshot_interval: 500,
        ..ChainConfig::default()
    };
    genesis_of(&["A", "B", "C"], config).unwrap()
}

fn grow(chain: &mut Chain<MemoryChainStore>, blocks: u64, signer_offset: usize) {
    let names = ["A", "B", "C"];
    for i in 0..blocks {
        let by = identity_of(names[(i as usize + signer_offset) % 3]).unwrap();
        let t = chain
            .head()
            .timestamp
            .saturating_add(chain.config().heartbeat);
        let block = chain.propose(&by, t, None, vec![]).unwrap();
        chain.import(&block, Validation::Full { now: t }).unwrap();
    }
}

/// Runs both sync machines until no messages are left; returns how many
/// messages crossed.
fn exchange(
    a: &mut Chain<MemoryChainStore>,
    b: &mut Chain<MemoryChainStore>,
    now: Timestamp,
) -> usize {
    let (mut sync_a, mut sync_b) = (Sync::<&str>::new(), Sync::<&str>::new());
    // Each announces its chain.
    sync_a
        .handle_message("b", wire(Sync::<&str>::status(b)), a, now)
        .unwrap();
    sync_b
        .handle_message("a", wire(Sync::<&str>::status(a)), b, now)
        .unwrap();
    let mut crossed = 0;
    let mut now = now;
    let mut idle = 0;
    loop {
        let mut moved = false;
        while let Some((_, m)) = sync_a.poll_transmit() {
            sync_b.handle_message("a", wire(m), b, now).unwrap();
            crossed += 1;
            moved = true;
        }
        while let Some((_, m)) = sync_b.poll_transmit() {
            sync_a.handle_message("b", wire(m), a, now).unwrap();
            crossed += 1;
            moved = true;
        }
        if moved {
            idle = 0;
            continue;
        }
        // Nothing to send: time passes a little (requests for blocks beyond
        // a neighbour's burst wait for its allowance).
        idle += 1;
        if idle > 2 {
            return crossed;
        }
        now = now.saturating_add(lifeline_consensus::sync::REQUEST_INTERVAL);
        sync_a.handle_timeout(a, now);
        sync_b.handle_timeout(b, now);
    }
}

fn wire(m: SyncMessage) -> SyncMessage {
    SyncMessage::from_bytes(&m.to_bytes()).unwrap()
}

#[test]
fn a_node_offline_for_ten_thousand_blocks_catches_up() {
    let g = genesis();
    let mut online = Chain::open(MemoryChainStore::new(), &g).unwrap();
    let mut offline = Chain::open(MemoryChainStore::new(), &g).unwrap();
    grow(&mut online, 10_000, 0);
    let now = online.head().timestamp;
    let crossed = exchange(&mut online, &mut offline, now);
    assert_eq!(offline.head(), online.head());
    assert_eq!(offline.finalized(), online.finalized());
    assert_eq!(offline.state().root(), online.state().root());
    // 10,000 blocks in ranges of 256: about 40 requests and 40 answers.
    assert!(crossed <= 2 * (10_000 / 256 + 2), "{crossed} messages");
}

#[test]
fn a_node_on_a_lighter_branch_switches_to_the_heavier_one() {
    let g = genesis();
    let mut a = Chain::open(MemoryChainStore::new(), &g).unwrap();
    let mut b = Chain::open(MemoryChainStore::new(), &g).unwrap();
    // Both build on the same block 1, then diverge: b's branch is one block
    // long, a's is longer; neither finalizes anything above block 1 that the
    // other lacks.
    grow(&mut a, 1, 0);
    let shared = a.canonical_block(1).unwrap().unwrap();
    b.import(
        &lifeline_consensus::SealedBlock::from_bytes(&shared).unwrap(),
        Validation::Full {
            now: a.head().timestamp,
        },
    )
    .unwrap();
    grow(&mut b, 1, 2);
    grow(&mut a, 3, 1);
    assert_ne!(a.head().hash, b.head().hash);
    let now = a
        .head()
        .timestamp
        .saturating_add(std::time::Duration::from_secs(60));
    exchange(&mut a, &mut b, now);
    assert_eq!(b.head(), a.head());
}

#[test]
fn garbage_and_unsolicited_blocks_are_counted_not_fatal() {
    let g = genesis();
    let mut chain = Chain::open(MemoryChainStore::new(), &g).unwrap();
    let mut sync = Sync::<u8>::new();
    let now = Timestamp::from_unix_millis(1_700_000_000_000);
    sync.handle_message(7, SyncMessage::Blocks(vec![vec![1, 2, 3]]), &mut chain, now)
        .unwrap();
    assert_eq!(sync.misbehaviour(&7).unsolicited, 1);
    assert!(SyncMessage::from_bytes(&[0xff, 0xff]).is_err());
    assert_eq!(chain.head().number, 0);
}

#[test]
fn two_nodes_on_equally_heavy_competing_blocks_agree_on_one() {
    let g = genesis_of(&["A", "B", "C", "D", "E"], ChainConfig::default()).unwrap();
    let mut a = Chain::open(MemoryChainStore::new(), &g).unwrap();
    let mut b = Chain::open(MemoryChainStore::new(), &g).unwrap();
    let t1 = a.head().timestamp.saturating_add(a.config().heartbeat);
    let one = a
        .propose(&identity_of("A").unwrap(), t1, None, vec![])
        .unwrap();
    a.import(&one, Validation::Full { now: t1 }).unwrap();
    b.import(&one, Validation::Full { now: t1 }).unwrap();
    // Two signers out of turn for block 2 seal competing blocks of equal weight.
    let in_turn = a.signer_state().in_turn(2).unwrap();
    let out: Vec<_> = ["B", "C", "D", "E"]
        .iter()
        .map(|n| identity_of(n).unwrap())
        .filter(|id| *id.id() != in_turn)
        .take(2)
        .collect();
    let t2 = t1.saturating_add(a.config().heartbeat);
    let on_a = a.propose(&out[0], t2, None, vec![]).unwrap();
    let on_b = b.propose(&out[1], t2, None, vec![]).unwrap();
    a.import(&on_a, Validation::Full { now: t2 }).unwrap();
    b.import(&on_b, Validation::Full { now: t2 }).unwrap();
    assert_eq!(a.head().total_weight, b.head().total_weight);
    assert_ne!(a.head().hash, b.head().hash);
    exchange(&mut a, &mut b, t2);
    assert_eq!(a.head(), b.head(), "both pick the same of the two blocks");
    assert!(a.contains(&on_b.hash()).unwrap() && b.contains(&on_a.hash()).unwrap());
}

#[test]
fn a_heavier_chain_that_conflicts_with_finality_is_not_asked_for_again_and_again() {
    let g = genesis();
    let mut ours = Chain::open(MemoryChainStore::new(), &g).unwrap();
    let mut theirs = Chain::open(MemoryChainStore::new(), &g).unwrap();
    // Different signers at every height from block 1: the branches part at
    // genesis. Ours has finalized blocks; theirs is longer and heavier.
    grow(&mut ours, 4, 0);
    grow(&mut theirs, 12, 1);
    // Every signer links block 3 to block 4: block 3 is final here.
    let canonical = |c: &Chain<MemoryChainStore>, number| BlockRef {
        number,
        hash: c.store().canonical(number).unwrap().unwrap(),
    };
    for by in ["A", "B", "C"] {
        let vote = FinalityVote::sign(
            &identity_of(by).unwrap(),
            g.hash(),
            canonical(&ours, 3),
            canonical(&ours, 4),
        );
        ours.add_vote(&vote).unwrap();
    }
    assert_eq!(ours.finalized().number, 3);
    assert!(theirs.head().total_weight > ours.head().total_weight);
    let now = theirs.head().timestamp;
    let mut sync = Sync::<u8>::new();
    let mut serving = Sync::<u8>::new();
    sync.handle_message(1, wire(Sync::<u8>::status(&theirs)), &mut ours, now)
        .unwrap();
    // Serve every request; count them. Before the fix this never ended:
    // "from the head" did not connect, "from above finality" did not
    // either, and then it asked from the head again.
    let mut requests = 0;
    while let Some((_, m)) = sync.poll_transmit() {
        if matches!(m, SyncMessage::HaveVotes(_)) {
            // Ours tells the new neighbour of the votes it keeps.
            continue;
        }
        assert!(matches!(m, SyncMessage::GetBlocks { .. }));
        requests += 1;
        assert!(
            requests <= 2,
            "asked {requests} times for a chain that cannot connect"
        );
        serving
            .handle_message(0, wire(m), &mut theirs, now)
            .unwrap();
        while let Some((_, answer)) = serving.poll_transmit() {
            sync.handle_message(1, wire(answer), &mut ours, now)
                .unwrap();
        }
    }
    assert_eq!(requests, 2);
    assert!(ours.head().total_weight < theirs.head().total_weight);
    assert_eq!(
        sync.misbehaviour(&1),
        Default::default(),
        "not malice: a conflict"
    );
    // A new announcement is asked about once more, and no more than that.
    sync.handle_message(1, wire(Sync::<u8>::status(&theirs)), &mut ours, now)
        .unwrap();
    assert!(sync.poll_transmit().is_some());
}

/// Delivers what each node's sync wants sent (through the wire encoding)
/// until nothing is left; returns the vote messages as (from, to, votes).
fn settle(
    chains: &mut [Chain<MemoryChainStore>],
    syncs: &mut [Sync<usize>],
    now: Timestamp,
) -> Vec<(usize, usize, usize)> {
    let mut votes = Vec::new();
    loop {
        let mut moved = false;
        for from in 0..syncs.len() {
            while let Some((to, m)) = syncs[from].poll_transmit() {
                if let SyncMessage::Votes(v) = &m {
                    votes.push((from, to, v.len()));
                }
                syncs[to]
                    .handle_message(from, wire(m), &mut chains[to], now)
                    .unwrap();
                moved = true;
            }
        }
        if !moved {
            return votes;
        }
    }
}

/// Chains, syncs, blocks 1 and 2, and the time.
type VotingNodes = (
    Vec<Chain<MemoryChainStore>>,
    Vec<Sync<usize>>,
    [SealedBlock; 2],
    Timestamp,
);

/// Chains for nodes `0..n` of a 7-authority chain, each with blocks 1 and
/// 2 (returned), and syncs that heard each listed neighbour's status.
fn voting_nodes(n: usize, links: &[(usize, usize)]) -> VotingNodes {
    let names = ["A", "B", "C", "D", "E", "F", "G"];
    let g = genesis_of(&names, ChainConfig::default()).unwrap();
    let mut chains: Vec<_> = (0..n)
        .map(|_| Chain::open(MemoryChainStore::new(), &g).unwrap())
        .collect();
    let mut t = chains[0].head().timestamp;
    let mut blocks = Vec::new();
    for by in ["A", "B"] {
        t = t.saturating_add(g.config.heartbeat);
        let b = chains[0]
            .propose(&identity_of(by).unwrap(), t, None, vec![])
            .unwrap();
        for c in &mut chains {
            c.import(&b, Validation::Full { now: t }).unwrap();
        }
        blocks.push(b);
    }
    let mut syncs: Vec<Sync<usize>> = (0..n).map(|_| Sync::new()).collect();
    for &(x, y) in links {
        for (from, to) in [(x, y), (y, x)] {
            let status = Sync::<usize>::status(&chains[from]);
            syncs[to]
                .handle_message(from, wire(status), &mut chains[to], t)
                .unwrap();
        }
    }
    settle(&mut chains, &mut syncs, t);
    let blocks: [SealedBlock; 2] = blocks.try_into().unwrap();
    (chains, syncs, blocks, t)
}

fn at(b: &SealedBlock) -> BlockRef {
    BlockRef {
        number: b.header().number,
        hash: b.hash(),
    }
}

#[test]
fn finality_votes_cross_a_line_of_nodes_once_and_finalize_at_the_far_end() {
    // A line: 0 - 1 - 2.
    let (mut chains, mut syncs, [b1, b2], t) = voting_nodes(3, &[(0, 1), (1, 2)]);
    let genesis = BlockRef {
        number: 0,
        hash: chains[0].genesis_hash(),
    };
    // Five authorities publish their votes at node 0: a link into block 1
    // and one from it to block 2.
    for by in ["A", "B", "C", "D", "E"] {
        for (source, target) in [(genesis, at(&b1)), (at(&b1), at(&b2))] {
            let vote = FinalityVote::sign(
                &identity_of(by).unwrap(),
                chains[0].genesis_hash(),
                source,
                target,
            );
            syncs[0].publish_vote(vote, &mut chains[0]).unwrap();
        }
    }
    let sent = settle(&mut chains, &mut syncs, t);
    for c in &chains {
        assert_eq!(
            c.finalized().hash,
            b1.hash(),
            "every node saw block 1 final"
        );
    }
    // Votes went 0 → 1 → 2, never back. Node 1 announced all ten, but once
    // block 1 was final there it served only the five above it: the links
    // into block 1 no longer matter to anyone.
    let count = |hop: (usize, usize)| -> usize {
        sent.iter()
            .filter(|(f, t, _)| (*f, *t) == hop)
            .map(|(_, _, n)| n)
            .sum()
    };
    assert_eq!((count((0, 1)), count((1, 2))), (10, 5));
    assert_eq!(count((1, 0)) + count((2, 1)), 0, "nothing went back");
    // A sixth vote for a link that has five already is kept, not passed on.
    let sixth = FinalityVote::sign(
        &identity_of("F").unwrap(),
        chains[0].genesis_hash(),
        at(&b1),
        at(&b2),
    );
    syncs[0].publish_vote(sixth, &mut chains[0]).unwrap();
    assert!(settle(&mut chains, &mut syncs, t).is_empty());
}

#[test]
fn a_new_neighbour_is_sent_the_votes_it_missed() {
    let (mut chains, mut syncs, [b1, b2], t) = voting_nodes(2, &[]);
    for by in ["A", "B", "C", "D", "E"] {
        let vote = FinalityVote::sign(
            &identity_of(by).unwrap(),
            chains[0].genesis_hash(),
            at(&b1),
            at(&b2),
        );
        syncs[0].publish_vote(vote, &mut chains[0]).unwrap();
    }
    assert_eq!(chains[0].finalized().hash, b1.hash());
    assert_eq!(chains[1].finalized().number, 0);
    // Node 1 turns up and announces itself: node 0 sends what it kept.
    let status = Sync::<usize>::status(&chains[1]);
    syncs[0]
        .handle_message(1, wire(status), &mut chains[0], t)
        .unwrap();
    settle(&mut chains, &mut syncs, t);
    assert_eq!(chains[1].finalized().hash, b1.hash());
}

#[test]
fn a_forged_vote_is_counted_against_its_sender_and_not_passed_on() {
    let (mut chains, mut syncs, [b1, b2], t) = voting_nodes(2, &[(0, 1)]);
    // B's vote, with its target changed after signing.
    let vote = FinalityVote::sign(
        &identity_of("B").unwrap(),
        chains[0].genesis_hash(),
        at(&b1),
        at(&b2),
    );
    let mut signed =
        lifeline_consensus::wire::pb::SignedFinalityVote::decode(vote.to_bytes().as_slice())
            .unwrap();
    let mut body =
        lifeline_consensus::wire::pb::FinalityVoteBody::decode(signed.body.as_slice()).unwrap();
    body.target_hash = vec![8; 32];
    signed.body = body.encode_to_vec();
    let forged = FinalityVote::from_bytes(&signed.encode_to_vec()).unwrap();
    syncs[0]
        .handle_message(7, SyncMessage::Votes(vec![forged]), &mut chains[0], t)
        .unwrap();
    assert_eq!(syncs[0].misbehaviour(&7).forged_votes, 1);
    assert!(
        syncs[0].poll_transmit().is_none(),
        "not passed on to node 1"
    );
    // The genuine vote counts and is announced to node 1.
    let id = vote.id();
    syncs[0]
        .handle_message(7, SyncMessage::Votes(vec![vote]), &mut chains[0], t)
        .unwrap();
    assert_eq!(
        syncs[0].poll_transmit(),
        Some((1, SyncMessage::HaveVotes(vec![id])))
    );
}

#[test]
fn an_announced_vote_is_fetched_once_and_from_another_neighbour_if_the_first_is_silent() {
    // Node 0 between neighbours 1 and 2.
    let (mut chains, mut syncs, [b1, b2], t) = voting_nodes(3, &[(0, 1), (0, 2)]);
    let vote = FinalityVote::sign(
        &identity_of("C").unwrap(),
        chains[0].genesis_hash(),
        at(&b1),
        at(&b2),
    );
    let id = vote.id();
    let have = SyncMessage::HaveVotes(vec![id]);
    syncs[0]
        .handle_message(1, wire(have.clone()), &mut chains[0], t)
        .unwrap();
    assert_eq!(
        syncs[0].poll_transmit(),
        Some((1, SyncMessage::GetVotes(vec![id])))
    );
    // Neighbour 2 announces it too: not asked while 1 may still answer.
    syncs[0]
        .handle_message(2, wire(have.clone()), &mut chains[0], t)
        .unwrap();
    assert_eq!(syncs[0].poll_transmit(), None);
    let deadline = t.saturating_add(VOTE_ASK_TIMEOUT);
    assert_eq!(syncs[0].poll_timeout(), Some(deadline));
    // 1 stays silent: at the deadline 2 is asked.
    syncs[0].handle_timeout(&chains[0], deadline);
    assert_eq!(
        syncs[0].poll_transmit(),
        Some((2, SyncMessage::GetVotes(vec![id])))
    );
    syncs[0]
        .handle_message(
            2,
            wire(SyncMessage::Votes(vec![vote])),
            &mut chains[0],
            deadline,
        )
        .unwrap();
    // Counted, and announced to the other neighbour, not back to 2.
    assert_eq!(chains[0].votes().len(), 1);
    assert_eq!(syncs[0].poll_transmit(), Some((1, have.clone())));
    assert_eq!(syncs[0].poll_transmit(), None);
    // Announced again later: nothing is fetched, nothing is waited for.
    syncs[0]
        .handle_message(1, wire(have), &mut chains[0], deadline)
        .unwrap();
    assert_eq!(syncs[0].poll_transmit(), None);
    assert_eq!(syncs[0].poll_timeout(), None);
}

#[test]
fn one_neighbour_cannot_make_a_node_wait_for_more_than_256_votes() {
    let (mut chains, mut syncs, _, t) = voting_nodes(2, &[(0, 1)]);
    let ids: Vec<u64> = (0..1000).collect();
    syncs[0]
        .handle_message(1, wire(SyncMessage::HaveVotes(ids)), &mut chains[0], t)
        .unwrap();
    match syncs[0].poll_transmit() {
        Some((1, SyncMessage::GetVotes(asked))) => assert_eq!(asked.len(), 256),
        other => panic!("expected one request, got {other:?}"),
    }
    // Unanswered, they are forgotten at the deadline (nobody else has them).
    syncs[0].handle_timeout(&chains[0], t.saturating_add(VOTE_ASK_TIMEOUT));
    assert_eq!(syncs[0].poll_transmit(), None);
    assert_eq!(syncs[0].poll_timeout(), None);
}

/// Issue 22's clone protection: an authority whose key also runs on
/// another node sees that node's blocks and votes, and not its own coming
/// back.
#[test]
fn an_authority_notices_another_node_sealing_or_voting_with_its_key() {
    use lifeline_consensus::KeyInUse;
    let g = genesis();
    let (a_id, b_id) = (identity_of("A").unwrap(), identity_of("B").unwrap());
    let open = || Chain::open(MemoryChainStore::new(), &g).unwrap();
    let (mut ours, mut theirs) = (open(), open());
    let mut sync = Sync::<u8>::new();
    sync.watch_key(*a_id.id(), g.timestamp);
    let seal = |c: &mut Chain<MemoryChainStore>, by: &lifeline_crypto::Identity| {
        let t = c.head().timestamp.saturating_add(c.config().heartbeat);
        let b = c.propose(by, t, None, vec![]).unwrap();
        c.import(&b, Validation::Full { now: t }).unwrap();
        b
    };
    // Feeds `theirs`'s chain to `ours` the way a neighbour would.
    let feed = |sync: &mut Sync<u8>,
                ours: &mut Chain<MemoryChainStore>,
                theirs: &mut Chain<MemoryChainStore>| {
        let now = theirs.head().timestamp;
        let mut serving = Sync::<u8>::new();
        sync.handle_message(1, wire(Sync::<u8>::status(theirs)), ours, now)
            .unwrap();
        while let Some((_, m)) = sync.poll_transmit() {
            serving.handle_message(0, wire(m), theirs, now).unwrap();
            while let Some((_, answer)) = serving.poll_transmit() {
                sync.handle_message(1, wire(answer), ours, now).unwrap();
            }
        }
    };
    // Our own block, and our own vote, coming back: not a clone.
    let x1 = seal(&mut ours, &a_id);
    theirs.import(&x1, Validation::IgnoreTiming).unwrap();
    let now = x1.header().timestamp.saturating_add(g.config.period);
    sync.cast_vote(&a_id, &mut ours, now).unwrap();
    let mine = ours.votes().pop().unwrap();
    seal(&mut theirs, &b_id);
    feed(&mut sync, &mut ours, &mut theirs);
    sync.handle_message(1, SyncMessage::Votes(vec![mine]), &mut ours, now)
        .unwrap();
    assert_eq!(ours.head(), theirs.head());
    assert_eq!(sync.key_in_use(), None);
    // A vote that claims our key but does not verify is a forgery, not a
    // clone: a neighbour cannot make an authority stop that way.
    let clone_vote = FinalityVote::sign(
        &a_id,
        g.hash(),
        BlockRef {
            number: 1,
            hash: x1.hash(),
        },
        BlockRef {
            number: 2,
            hash: theirs.head().hash,
        },
    );
    let mut forged =
        lifeline_consensus::wire::pb::SignedFinalityVote::decode(clone_vote.to_bytes().as_slice())
            .unwrap();
    forged.signature[0] ^= 1;
    let forged = FinalityVote::from_bytes(&forged.encode_to_vec()).unwrap();
    sync.handle_message(1, SyncMessage::Votes(vec![forged]), &mut ours, now)
        .unwrap();
    assert_eq!(sync.key_in_use(), None);
    // The clone votes for height 2, above our own latest vote.
    sync.handle_message(
        1,
        wire(SyncMessage::Votes(vec![clone_vote])),
        &mut ours,
        now,
    )
    .unwrap();
    assert_eq!(
        sync.key_in_use(),
        Some(&(
            1,
            KeyInUse::Vote {
                source: 1,
                target: 2
            }
        ))
    );
    // On a fresh sync, a block the clone sealed with our key: not if it
    // is older than our start (it may be our own from before a lost
    // store), but one sealed since.
    seal(&mut theirs, &identity_of("C").unwrap());
    let x4 = seal(&mut theirs, &a_id);
    let mut sync = Sync::<u8>::new();
    let after_x4 = x4.header().timestamp.saturating_add(g.config.period);
    sync.watch_key(*a_id.id(), after_x4);
    let mut old = open();
    feed(&mut sync, &mut old, &mut theirs);
    assert_eq!(old.head(), theirs.head());
    assert_eq!(sync.key_in_use(), None);
    let mut sync = Sync::<u8>::new();
    sync.watch_key(*a_id.id(), x4.header().timestamp);
    feed(&mut sync, &mut ours, &mut theirs);
    assert_eq!(
        sync.key_in_use(),
        Some(&(
            1,
            KeyInUse::Block {
                number: 4,
                hash: x4.hash()
            }
        ))
    );
}

/// One node behind, two honest neighbours sharing `honest`'s chain, and
/// with `with_liar` a third that lies (see below). Whether the node caught
/// up, the messages it took, and what the liar's answers were counted as.
fn catch_up(
    g: &Genesis,
    honest: &mut Chain<MemoryChainStore>,
    with_liar: bool,
) -> (bool, usize, u32) {
    use lifeline_consensus::sync::PeerChain;
    let mut behind = Chain::open(MemoryChainStore::new(), g).unwrap();
    let mut sync = Sync::<&str>::new();
    let (mut sync_h1, mut sync_h2) = (Sync::<&str>::new(), Sync::<&str>::new());
    let now = honest.head().timestamp;
    let lie = SyncMessage::Status {
        genesis: honest.genesis_hash(),
        chain: PeerChain {
            head_number: 5_000,
            head_hash: lifeline_consensus::BlockHash([7; 32]),
            total_weight: u64::MAX,
            finalized_number: 4_000,
            justified_number: 4_999,
        },
    };
    for (name, s) in [("h1", &mut sync_h1), ("h2", &mut sync_h2)] {
        sync.handle_message(name, wire(Sync::<&str>::status(honest)), &mut behind, now)
            .unwrap();
        s.handle_message("x", wire(Sync::<&str>::status(&behind)), honest, now)
            .unwrap();
    }
    if with_liar {
        sync.handle_message("liar", wire(lie.clone()), &mut behind, now)
            .unwrap();
    }
    let mut messages = 0;
    let mut later = now;
    while messages < 2_000 && behind.head() != honest.head() {
        let Some((to, m)) = sync.poll_transmit() else {
            // Nothing to send: time passes to the next timeout.
            let Some(t) = sync.poll_timeout() else { break };
            later = later.max(t);
            sync.handle_timeout(&behind, later);
            continue;
        };
        messages += 1;
        let answer = match to {
            "liar" => {
                // A block the node has (its head), then the lie again.
                let mine = behind.canonical_block(behind.head().number).unwrap();
                let blocks = SyncMessage::Blocks(mine.into_iter().collect());
                sync.handle_message("liar", wire(blocks), &mut behind, later)
                    .unwrap();
                sync.handle_message("liar", wire(lie.clone()), &mut behind, later)
                    .unwrap();
                continue;
            }
            "h1" => {
                sync_h1.handle_message("x", wire(m), honest, later).unwrap();
                sync_h1.poll_transmit()
            }
            _ => {
                sync_h2.handle_message("x", wire(m), honest, later).unwrap();
                sync_h2.poll_transmit()
            }
        };
        if let Some((_, answer)) = answer {
            messages += 1;
            sync.handle_message(to, wire(answer), &mut behind, later)
                .unwrap();
        }
    }
    (
        behind.head() == honest.head(),
        messages,
        sync.misbehaviour(&"liar").useless,
    )
}

/// Issue 23, item 2: one liar among three neighbours. It claims the
/// heaviest chain there can be, and answers every request with a block the
/// node has already. The old sync believed the claim every time: it asked
/// the liar again after each useless answer, and never the honest two (the
/// node stayed at height 0 after 2,000 messages here). Now a claim that
/// brings nothing puts the liar behind the others, and the node catches up
/// with about as many messages as without it.
#[test]
fn a_node_behind_catches_up_whatever_one_liar_claims() {
    let g = genesis();
    let mut honest = Chain::open(MemoryChainStore::new(), &g).unwrap();
    grow(&mut honest, 1_000, 0);
    let (caught_up, honest_only, _) = catch_up(&g, &mut honest, false);
    assert!(caught_up);
    let (caught_up, with_liar, useless) = catch_up(&g, &mut honest, true);
    assert!(caught_up, "stuck behind a liar after {with_liar} messages");
    assert!(
        with_liar <= honest_only + 4,
        "{with_liar} messages with the liar, {honest_only} without"
    );
    assert!(useless >= 1);
}

/// Issue 23, item 9: a slow honest neighbour answers after the request
/// timed out. The old sync counted the answer as unsolicited and threw it
/// away (three such answers got the neighbour banned); now it is used and
/// not held against anyone.
#[test]
fn a_late_answer_is_used_and_not_held_against_a_slow_neighbour() {
    use lifeline_consensus::sync::REQUEST_TIMEOUT;
    let g = genesis();
    let mut slow = Chain::open(MemoryChainStore::new(), &g).unwrap();
    grow(&mut slow, 20, 0);
    let mut behind = Chain::open(MemoryChainStore::new(), &g).unwrap();
    let (mut sync, mut sync_slow) = (Sync::<&str>::new(), Sync::<&str>::new());
    let now = slow.head().timestamp;
    sync.handle_message("slow", wire(Sync::<&str>::status(&slow)), &mut behind, now)
        .unwrap();
    let (_, request) = sync.poll_transmit().unwrap();
    sync_slow
        .handle_message("x", wire(request), &mut slow, now)
        .unwrap();
    let (_, answer) = sync_slow.poll_transmit().unwrap();
    // The answer takes longer than the timeout.
    let later = now
        .saturating_add(REQUEST_TIMEOUT)
        .saturating_add(REQUEST_TIMEOUT);
    sync.handle_timeout(&behind, later);
    sync.handle_message("slow", wire(answer), &mut behind, later)
        .unwrap();
    assert_eq!(sync.misbehaviour(&"slow").unsolicited, 0);
    assert_eq!(behind.head(), slow.head());
    // The timeout asked it again, so one more answer is welcome too; the
    // next, unasked, is counted; and forgotten when the neighbour goes.
    for unsolicited in [0, 1] {
        sync.handle_message(
            "slow",
            wire(SyncMessage::Blocks(vec![])),
            &mut behind,
            later,
        )
        .unwrap();
        assert_eq!(sync.misbehaviour(&"slow").unsolicited, unsolicited);
    }
    sync.handle_peer_gone(&"slow");
    assert_eq!(sync.misbehaviour(&"slow").unsolicited, 0);
}

/// Issue 23, item 12: a daemon imports an answer a few blocks at a time
/// (each is a signature check and a synced write) and does its other work
/// in between. Sliced, it catches up exactly as at once, and asks for
/// nothing more while an answer is half imported.
#[test]
fn an_answer_imported_a_few_blocks_at_a_time_catches_up_the_same() {
    let g = genesis();
    let mut online = Chain::open(MemoryChainStore::new(), &g).unwrap();
    let mut behind = Chain::open(MemoryChainStore::new(), &g).unwrap();
    grow(&mut online, 600, 0);
    let now = online.head().timestamp;
    let mut serving = Sync::<&str>::new();
    let mut sync = Sync::<&str>::new();
    sync.set_import_step(4);
    sync.handle_message("a", wire(Sync::<&str>::status(&online)), &mut behind, now)
        .unwrap();
    let (mut steps, mut answers) = (0, 0);
    for _ in 0..1_000 {
        while sync.importing() {
            // Half imported: no request goes out yet.
            assert!(sync.poll_transmit().is_none(), "asked again mid-answer");
            let before = behind.head().number;
            sync.continue_import(&mut behind, now).unwrap();
            assert!(
                behind.head().number - before <= 4,
                "more than a step at once"
            );
            steps += 1;
        }
        let Some((_, request)) = sync.poll_transmit() else {
            break;
        };
        serving
            .handle_message("b", wire(request), &mut online, now)
            .unwrap();
        let (_, answer) = serving.poll_transmit().unwrap();
        sync.handle_message("a", wire(answer), &mut behind, now)
            .unwrap();
        answers += 1;
    }
    assert_eq!(behind.head(), online.head());
    assert_eq!(behind.state().root(), online.state().root());
    // 600 blocks: three answers (256, 256, 88) and a last, empty one.
    assert!((3..=4).contains(&answers), "{answers} answers");
    assert!(steps >= 600 / 4 - 3, "{steps} steps");
}

/// A request lost on the way (the daemon sent it before its stream to the
/// neighbour was open) timed out, and the old sync forgot the neighbour's
/// chain: with no authority sealing, no new status ever came, and the node
/// never caught up. Now the neighbour is asked again.
#[test]
fn a_lost_request_is_asked_again_without_a_new_status() {
    use lifeline_consensus::sync::REQUEST_TIMEOUT;
    let g = genesis();
    let mut ahead = Chain::open(MemoryChainStore::new(), &g).unwrap();
    grow(&mut ahead, 20, 0);
    let mut behind = Chain::open(MemoryChainStore::new(), &g).unwrap();
    let (mut sync, mut serving) = (Sync::<&str>::new(), Sync::<&str>::new());
    let now = ahead.head().timestamp;
    sync.handle_message("a", wire(Sync::<&str>::status(&ahead)), &mut behind, now)
        .unwrap();
    let lost = sync.poll_transmit();
    assert!(lost.is_some(), "it asked");
    let later = now.saturating_add(REQUEST_TIMEOUT);
    sync.handle_timeout(&behind, later);
    let (to, again) = sync.poll_transmit().expect("asked again after the timeout");
    assert_eq!(to, "a");
    serving
        .handle_message("b", wire(again), &mut ahead, later)
        .unwrap();
    let (_, answer) = serving.poll_transmit().unwrap();
    sync.handle_message("a", wire(answer), &mut behind, later)
        .unwrap();
    assert_eq!(behind.head(), ahead.head());
}

/// Issue 23, item 9: a request for blocks is a dozen bytes and costs the
/// node up to 256 reads and an 8 MiB answer. The old sync served every one:
/// a neighbour sending a hundred at once got a hundred answers, each up to
/// 8 MiB for the node to queue. Now each neighbour gets a burst
/// and then one every 20 ms; one more waits for that, the rest are counted
/// and never served.
#[test]
fn a_neighbour_asking_for_blocks_again_and_again_is_served_at_a_bounded_rate() {
    use lifeline_consensus::sync::{REQUEST_BURST, REQUEST_INTERVAL};
    let g = genesis();
    let mut chain = Chain::open(MemoryChainStore::new(), &g).unwrap();
    grow(&mut chain, 300, 0);
    let mut sync = Sync::<&str>::new();
    let now = chain.head().timestamp;
    let ask = |sync: &mut Sync<&str>, chain: &mut Chain<MemoryChainStore>, who, at| {
        for _ in 0..100 {
            let request = SyncMessage::GetBlocks { from: 1, max: 256 };
            sync.handle_message(who, wire(request), chain, at).unwrap();
        }
        std::iter::from_fn(|| sync.poll_transmit()).count()
    };
    let burst = REQUEST_BURST as usize;
    assert_eq!(ask(&mut sync, &mut chain, "greedy", now), burst);
    // One waits for the allowance (an honest neighbour has one in flight);
    // the rest are counted.
    assert_eq!(
        sync.misbehaviour(&"greedy").excess_requests,
        100 - REQUEST_BURST - 1
    );
    // Another neighbour is not affected.
    assert_eq!(ask(&mut sync, &mut chain, "other", now), burst);
    // The waiting ones (one each) are served when the allowance allows,
    // not before.
    let wake = sync.poll_timeout().expect("a request waits");
    assert_eq!(wake, now.saturating_add(REQUEST_INTERVAL));
    sync.handle_timeout(&chain, wake);
    let served: Vec<&str> = std::iter::from_fn(|| sync.poll_transmit())
        .map(|(to, _)| to)
        .collect();
    assert_eq!(served, ["greedy", "other"]);
    assert!(sync.poll_timeout().is_none_or(|t| t > wake));
}

/// Issue 23, item 9: a neighbour on a slow link answers, but after the
/// 10 s timeout. The old sync gave every request 10 s whatever the link,
/// so such a neighbour struck out on every request. Its late answer now
/// teaches the rate its answers come at, and the next request waits long
/// enough for one as large.
#[test]
fn a_slow_neighbours_next_request_waits_as_long_as_its_answers_take() {
    use lifeline_consensus::sync::{MAX_REQUEST_TIMEOUT, REQUEST_TIMEOUT};
    use std::time::Duration;
    let g = genesis();
    let mut ahead = Chain::open(MemoryChainStore::new(), &g).unwrap();
    grow(&mut ahead, 300, 0);
    let mut behind = Chain::open(MemoryChainStore::new(), &g).unwrap();
    let (mut sync, mut serving) = (Sync::<&str>::new(), Sync::<&str>::new());
    let now = ahead.head().timestamp;
    sync.handle_message("slow", wire(Sync::<&str>::status(&ahead)), &mut behind, now)
        .unwrap();
    let (_, request) = sync.poll_transmit().expect("it asked");
    assert_eq!(
        sync.poll_timeout(),
        Some(now.saturating_add(REQUEST_TIMEOUT)),
        "a first request waits the base timeout"
    );
    serving
        .handle_message("behind", wire(request), &mut ahead, now)
        .unwrap();
    let (_, answer) = serving.poll_transmit().unwrap();
    // The answer takes 30 s on the slow link: the request timed out first.
    sync.handle_timeout(&behind, now.saturating_add(REQUEST_TIMEOUT));
    let late = now.saturating_add(Duration::from_secs(30));
    sync.handle_message("slow", wire(answer), &mut behind, late)
        .unwrap();
    while sync.importing() {
        sync.continue_import(&mut behind, late).unwrap();
    }
    assert_eq!(behind.head().number, 256, "the late answer was used");
    // Its strike waits out; the next request gets as long as an answer
    // that large took, twice over.
    let again = late.saturating_add(MAX_REQUEST_TIMEOUT);
    sync.handle_timeout(&behind, again);
    sync.handle_message(
        "slow",
        wire(Sync::<&str>::status(&ahead)),
        &mut behind,
        again,
    )
    .unwrap();
    let mut asked = false;
    while let Some((to, m)) = sync.poll_transmit() {
        asked |= to == "slow" && matches!(m, SyncMessage::GetBlocks { .. });
    }
    assert!(asked, "it asked the slow neighbour again");
    let deadline = sync.poll_timeout().expect("a request is in flight");
    let waits = deadline.saturating_duration_since(again);
    // (The request asked again after the timeout is the one the answer is
    // taken for, so the answer seems to take 20 s: twice that is 40 s.)
    assert!(
        waits > Duration::from_secs(30),
        "the next request waits only {waits:?} for a neighbour whose answers take 30 s"
    );
}
