//! Shared pieces of lifeline's integration tests.

use lifeline_consensus::chain::{ChainConfig, Genesis, Validation};
use lifeline_consensus::conformance::{genesis_of, identity_of};
use lifeline_consensus::tx::{Action, Transaction};
use lifeline_consensus::{Chain, MemoryChainStore, SealedBlock};
use lifeline_crypto::{Identity, PrekeyRing};
use rand::SeedableRng;

/// The three authorities of the scripted chain.
pub const AUTHORITIES: [&str; 3] = ["A", "B", "C"];
/// Registrations per scripted block.
pub const TXS_PER_BLOCK: usize = 2;

/// The genesis of the scripted chain (snapshots every 16 blocks, so restarts
/// exercise snapshot restores).
pub fn scripted_genesis() -> Result<Genesis, String> {
    let config = ChainConfig {
        snapshot_interval: 16,
        ..ChainConfig::default()
    };
    genesis_of(&AUTHORITIES, config).map_err(|e| e.to_string())
}

/// Blocks 1..=`count` of a deterministic chain: the authorities take turns,
/// each block registers [`TXS_PER_BLOCK`] new people. Every call gives the
/// same blocks, byte for byte. Returns them with the state root after each.
pub fn scripted_blocks(count: u64) -> Result<Vec<(SealedBlock, [u8; 32])>, String> {
    let genesis = scripted_genesis()?;
    let mut chain = Chain::open(MemoryChainStore::new(), &genesis).map_err(|e| e.to_string())?;
    let authorities: Vec<Identity> = AUTHORITIES
        .iter()
        .map(|n| identity_of(n).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let mut out = Vec::new();
    for number in 1..=count {
        let txs = (0..TXS_PER_BLOCK)
            .map(|i| {
                let person = Identity::generate(&mut rng);
                let ring = PrekeyRing::new(&person, genesis.timestamp, &mut rng);
                Transaction::sign(
                    &person,
                    0,
                    Action::RegisterIdentity {
                        display_name: format!("Person {number}-{i}"),
                        prekey: ring.current().clone(),
                    },
                )
            })
            .collect();
        let by = &authorities[usize::try_from(number % 3).unwrap_or(0)];
        let t = chain.head().timestamp.saturating_add(chain.config().period);
        let block = chain.propose(by, t, None, txs).map_err(|e| e.to_string())?;
        chain
            .import(&block, Validation::Full { now: t })
            .map_err(|e| e.to_string())?;
        out.push((block, chain.state().root()));
    }
    Ok(out)
}

/// The fixture of the custody crash test: a relay, its upstream neighbour,
/// and numbered messages for a destination the relay cannot reach.
pub mod custody {
    use lifeline_crypto::Identity;
    use lifeline_routing::wire::{Body, Frame, Message, Packet};
    use lifeline_routing::{Address, Class, MessageId};

    fn identity(name: &str) -> Identity {
        // A blake3 hash is 32 bytes: always a valid ed25519 secret key.
        match Identity::from_secret_bytes(blake3::hash(name.as_bytes()).as_bytes()) {
            Ok(id) => id,
            Err(e) => unreachable!("32 bytes are an ed25519 secret key: {e}"),
        }
    }

    /// The relay's identity.
    pub fn relay_identity() -> Identity {
        identity("custody relay")
    }

    /// The relay's upstream neighbour.
    pub fn upstream() -> Address {
        Address::from(identity("custody upstream").id())
    }

    /// Whether message `n` is for the relay itself (one in five): delivered
    /// there rather than held.
    pub fn to_relay(n: u64) -> bool {
        n % 5 == 1
    }

    fn message(n: u64) -> Message {
        let to = if to_relay(n) {
            relay_identity()
        } else {
            identity("custody destination")
        };
        let body = Body::sealed(
            Class::P2,
            Address::from(to.id()),
            0,
            30 * 24 * 3600 * 1000,
            n.to_le_bytes(),
            vec![u8::try_from(n % 251).unwrap_or(0); 512],
        );
        Message::new(body, None, 16)
    }

    /// Message `n` as the upstream sends it (one packet).
    pub fn wire_message(n: u64) -> Vec<u8> {
        Packet {
            frame: n + 1,
            index: 0,
            count: 1,
            class: Class::P2,
            data: Frame::Message(Box::new(message(n))).encode(),
        }
        .encode()
    }

    /// The id of message `n`.
    pub fn message_id(n: u64) -> MessageId {
        message(n).id
    }
}
