//! Chain sync between direct neighbours, as a sans-IO state machine.
//!
//! Neighbours announce their chain status. A node whose neighbour has a
//! heavier chain asks it for canonical blocks in ranges and imports them with
//! full validation. If the first block of a range does not connect (the node
//! is on another branch), it asks again from just above its finalized block,
//! where both chains must meet. One request is in flight at a time; a request
//! that gets no answer times out and another neighbour is tried.
//!
//! Finality votes are announced and pulled: a node that counts a new vote
//! tells its other neighbours its 8-byte id (`HaveVotes`), and a neighbour
//! that lacks it asks for it (`GetVotes`), from another announcer if the
//! first does not answer within [`VOTE_ASK_TIMEOUT`]. Each vote then crosses
//! each link about once instead of once each way, at the cost of two more
//! one-way delays per hop. An authority pushes its own votes to every
//! neighbour ([`Sync::publish_vote`]): nobody has them yet.
//!
//! Inputs: `handle_message`, `handle_timeout`, `handle_peer_gone`,
//! `publish_vote`. Outputs: `poll_transmit` (messages for neighbours). Time
//! comes in as an argument.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::time::Duration;

use lifeline_crypto::Timestamp;
use lifeline_crypto::wire::{DecodeError, decode_bounded};
use prost::Message;

use crate::block::{BlockHash, MAX_BLOCK_LEN, SealedBlock};
use crate::chain::{Chain, ChainError, ImportError, Validation};
use crate::finality::{FinalityVote, MAX_VOTE_IDS_PER_MESSAGE, MAX_VOTES_PER_MESSAGE, VoteError};
use crate::store::ChainStore;
use crate::wire::pb;

/// Most blocks asked for or served in one message.
pub const MAX_BLOCKS_PER_MESSAGE: u32 = 256;
/// Most bytes of blocks served in one message.
pub const MAX_SYNC_MESSAGE_LEN: usize = 8 * 1024 * 1024;
/// How long an answer may take before another neighbour is asked.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A neighbour's chain, as it announced it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerChain {
    /// Its head's height.
    pub head_number: u64,
    /// Its head's hash.
    pub head_hash: BlockHash,
    /// Its head's total weight.
    pub total_weight: u64,
    /// Its finalized height.
    pub finalized_number: u64,
    /// The height of the highest justified block it knows: its head
    /// descends from that block.
    pub justified_number: u64,
}

/// A message between neighbours.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncMessage {
    /// "This is my chain."
    Status {
        /// The genesis hash (peers on other chains are ignored).
        genesis: BlockHash,
        /// The chain.
        chain: PeerChain,
    },
    /// "Send me canonical blocks from `from`, at most `max`."
    GetBlocks {
        /// First height.
        from: u64,
        /// How many at most.
        max: u32,
    },
    /// Encoded blocks, ascending.
    Blocks(Vec<Vec<u8>>),
    /// Finality votes (signatures not checked yet).
    Votes(Vec<FinalityVote>),
    /// "I have the votes with these ids."
    HaveVotes(Vec<u64>),
    /// "Send me the votes with these ids."
    GetVotes(Vec<u64>),
}

impl SyncMessage {
    /// Encodes for the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        use pb::sync_message::Kind;
        let kind = match self {
            Self::Status { genesis, chain } => Kind::Status(pb::ChainStatus {
                genesis: genesis.0.to_vec(),
                head_number: chain.head_number,
                head_hash: chain.head_hash.0.to_vec(),
                total_weight: chain.total_weight,
                finalized_number: chain.finalized_number,
                justified_number: chain.justified_number,
            }),
            Self::GetBlocks { from, max } => Kind::GetBlocks(pb::GetBlocks {
                from: *from,
                max: *max,
            }),
            Self::Blocks(blocks) => Kind::Blocks(pb::Blocks {
                blocks: blocks.clone(),
            }),
            Self::Votes(votes) => Kind::Votes(pb::FinalityVotes {
                votes: votes.iter().map(FinalityVote::to_pb).collect(),
            }),
            Self::HaveVotes(ids) => Kind::HaveVotes(pb::VoteIds { ids: ids.clone() }),
            Self::GetVotes(ids) => Kind::GetVotes(pb::VoteIds { ids: ids.clone() }),
        };
        pb::SyncMessage { kind: Some(kind) }.encode_to_vec()
    }

    /// Decodes from the wire, bounded.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        use lifeline_crypto::wire::fixed;
        use pb::sync_message::Kind;
        let raw: pb::SyncMessage = decode_bounded("SyncMessage", bytes, MAX_SYNC_MESSAGE_LEN)?;
        let missing = DecodeError::InvalidField {
            what: "SyncMessage",
            field: "kind",
            reason: "missing",
        };
        Ok(match raw.kind.ok_or(missing)? {
            Kind::Status(s) => Self::Status {
                genesis: BlockHash(fixed("ChainStatus", "genesis", &s.genesis)?),
                chain: PeerChain {
                    head_number: s.head_number,
                    head_hash: BlockHash(fixed("ChainStatus", "head_hash", &s.head_hash)?),
                    total_weight: s.total_weight,
                    finalized_number: s.finalized_number,
                    justified_number: s.justified_number,
                },
            },
            Kind::GetBlocks(g) => Self::GetBlocks {
                from: g.from,
                max: g.max,
            },
            Kind::Blocks(b) => {
                if b.blocks.len() > MAX_BLOCKS_PER_MESSAGE as usize {
                    return Err(DecodeError::InvalidField {
                        what: "Blocks",
                        field: "blocks",
                        reason: "more blocks than one message may carry",
                    });
                }
                Self::Blocks(b.blocks)
            }
            Kind::Votes(v) => {
                if v.votes.len() > MAX_VOTES_PER_MESSAGE {
                    return Err(DecodeError::InvalidField {
                        what: "FinalityVotes",
                        field: "votes",
                        reason: "more votes than there may be signers",
                    });
                }
                Self::Votes(
                    v.votes
                        .into_iter()
                        .map(FinalityVote::from_pb)
                        .collect::<Result<_, _>>()?,
                )
            }
            Kind::HaveVotes(v) => Self::HaveVotes(vote_ids(v)?),
            Kind::GetVotes(v) => Self::GetVotes(vote_ids(v)?),
        })
    }
}

fn vote_ids(v: pb::VoteIds) -> Result<Vec<u64>, DecodeError> {
    if v.ids.len() > MAX_VOTE_IDS_PER_MESSAGE {
        return Err(DecodeError::InvalidField {
            what: "VoteIds",
            field: "ids",
            reason: "more ids than one message may carry",
        });
    }
    Ok(v.ids)
}

/// How long a node waits for a vote it asked a neighbour for before it asks
/// another neighbour that announced it.
pub const VOTE_ASK_TIMEOUT: Duration = Duration::from_secs(2);
/// Most vote ids a node remembers having (oldest forgotten first): a vote
/// announced again after that is fetched and found a duplicate.
const MAX_KNOWN_VOTES: usize = 4096;
/// Most votes a node waits for at once, and from one neighbour.
const MAX_WANTED_VOTES: usize = 1024;
const MAX_WANTED_PER_PEER: usize = 256;
/// Most other announcers remembered per wanted vote.
const MAX_ANNOUNCERS: usize = 8;

/// A vote announced to this node that it does not have yet.
struct Wanted<P> {
    asked: P,
    deadline: Timestamp,
    others: Vec<P>,
}

/// What a neighbour did wrong, for the daemon's ban policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Misbehaviour {
    /// Blocks that failed validation.
    pub invalid_blocks: u32,
    /// Answers nobody asked for.
    pub unsolicited: u32,
    /// Finality votes whose signature did not verify.
    pub forged_votes: u32,
    /// Answers that brought no block this node did not have: a neighbour
    /// that claims a chain it does not deliver.
    pub useless: u32,
    /// Requests for blocks beyond what a neighbour may ask
    /// ([`REQUEST_BURST`], then one per [`REQUEST_INTERVAL`]): not served.
    pub excess_requests: u32,
}

/// Requests for blocks a neighbour may make at once. Each costs this node up
/// to 256 reads and an answer of up to 8 MiB for a frame of a dozen bytes;
/// an honest neighbour has one in flight at a time.
pub const REQUEST_BURST: u32 = 16;
/// Then one per this long (50 a second, up to 12,800 blocks a second: more
/// than a node imports; each costs the node about a millisecond).
pub const REQUEST_INTERVAL: Duration = Duration::from_millis(20);

/// A neighbour's allowance of requests for blocks.
#[derive(Clone, Copy, Debug)]
struct Allowance {
    tokens: u32,
    refilled: Timestamp,
}

/// A neighbour whose answers brought nothing new: how many in a row, and
/// until when it is not asked (doubling with each).
#[derive(Clone, Copy, Debug)]
struct Strikes {
    count: u32,
    not_before: Option<Timestamp>,
}

/// This node's own key, used by another node: what [`Sync::watch_key`]
/// saw. An authority that sees it must not seal or vote (docs/chain.md,
/// Clones): two nodes acting with one key are what makes finality conflict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyInUse {
    /// A block this node did not seal, sealed with its key.
    Block {
        /// Its height.
        number: u64,
        /// Its hash.
        hash: BlockHash,
    },
    /// A finality vote this node did not cast: signed with its key, for a
    /// height above its own latest vote.
    Vote {
        /// The source's height.
        source: u64,
        /// The target's height.
        target: u64,
    },
}

struct Request<P> {
    peer: P,
    from: u64,
    /// When it was sent.
    sent: Timestamp,
    deadline: Timestamp,
}

/// What a neighbour's answers took: the bytes of its last one, and the
/// rate its answers came at (bytes a second, smoothed). A request's
/// deadline leaves room for an answer as large as the last at that rate.
#[derive(Clone, Copy, Debug, Default)]
struct AnswerRate {
    last_bytes: u64,
    bytes_per_s: u64,
}

/// The longest a request's deadline grows to for a slow neighbour.
pub const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// An answer with blocks, being imported a few blocks at a time.
struct Importing<P> {
    peer: P,
    /// The height the request asked from.
    from: u64,
    /// Blocks in the answer.
    count: usize,
    /// Those not imported yet.
    blocks: VecDeque<Vec<u8>>,
    /// New blocks so far.
    new: usize,
    /// Its first block is on another branch.
    elsewhere: bool,
    /// The neighbour went away meanwhile: nothing is counted against it.
    gone: bool,
}

/// Sync with the node's neighbours (`P` names a neighbour).
pub struct Sync<P> {
    /// Neighbours on this chain: where votes go.
    neighbours: BTreeSet<P>,
    /// Neighbours' chains worth asking for blocks.
    peers: HashMap<P, PeerChain>,
    misbehaviour: HashMap<P, Misbehaviour>,
    /// Neighbours whose last answers brought nothing new: asked after every
    /// other, and not at all for a while.
    strikes: HashMap<P, Strikes>,
    /// Neighbours whose request timed out, with when it was sent: their
    /// late answer is still welcome, and not unsolicited (a slow link is
    /// no offence), and it teaches how slow the link is.
    late: HashMap<P, Timestamp>,
    /// How fast each neighbour's answers came.
    rates: HashMap<P, AnswerRate>,
    in_flight: Option<Request<P>>,
    outbox: VecDeque<(P, SyncMessage)>,
    /// Height to ask from next, when walking back to find where branches meet.
    restart_from: Option<u64>,
    /// Where a neighbour's branch goes on: the height after the last block
    /// it sent that connected, when that did not make it the head (its
    /// branch is longer than one answer, and not preferred yet).
    continue_from: Option<(P, u64)>,
    /// Ids of votes this node has seen (verified, or refused for a reason
    /// other than forgery), so that it does not fetch them again.
    known_votes: HashSet<u64>,
    known_order: VecDeque<u64>,
    /// Votes announced to this node that it asked for.
    wanted: HashMap<u64, Wanted<P>>,
    /// This node's own key, if it watches for another node using it, and
    /// since when.
    watch: Option<(lifeline_crypto::NodeId, Timestamp)>,
    /// The first sign of another node using it, and who brought it.
    key_in_use: Option<(P, KeyInUse)>,
    /// The answer being imported.
    importing: Option<Importing<P>>,
    /// Blocks imported per step (see [`Sync::set_import_step`]).
    import_step: usize,
    /// Requests for blocks each neighbour may still make.
    allowances: HashMap<P, Allowance>,
    /// A request per neighbour waiting for its allowance.
    deferred: BTreeMap<P, (u64, u32)>,
}

impl<P: Clone + Eq + Hash + Ord> Default for Sync<P> {
    fn default() -> Self {
        Self::new()
    }
}

impl<P: Clone + Eq + Hash + Ord> Sync<P> {
    /// No neighbours yet.
    pub fn new() -> Self {
        Self {
            neighbours: BTreeSet::new(),
            peers: HashMap::new(),
            misbehaviour: HashMap::new(),
            strikes: HashMap::new(),
            late: HashMap::new(),
            rates: HashMap::new(),
            in_flight: None,
            outbox: VecDeque::new(),
            restart_from: None,
            continue_from: None,
            known_votes: HashSet::new(),
            known_order: VecDeque::new(),
            wanted: HashMap::new(),
            watch: None,
            key_in_use: None,
            importing: None,
            import_step: usize::MAX,
            allowances: HashMap::new(),
            deferred: BTreeMap::new(),
        }
    }

    /// Watches for blocks and finality votes signed with `key` (this
    /// authority's own) that this node did not make: a block new to the
    /// chain that a neighbour sent, with a timestamp at or after `since`
    /// (when this node started: older blocks may be its own from before,
    /// if its store was lost), or a vote whose target is above the node's
    /// own latest vote ([`Chain::last_vote`]). This node's own blocks and
    /// votes coming back from neighbours are neither: the chain has the
    /// blocks, and its vote record covers the votes, across restarts too.
    pub fn watch_key(&mut self, key: lifeline_crypto::NodeId, since: Timestamp) {
        self.watch = Some((key, since));
    }

    /// The first block or vote by the watched key that this node did not
    /// make, and the neighbour that sent it ([`Sync::watch_key`]).
    pub fn key_in_use(&self) -> Option<&(P, KeyInUse)> {
        self.key_in_use.as_ref()
    }

    fn saw_key_in_use(&mut self, peer: &P, what: KeyInUse) {
        if self.key_in_use.is_none() {
            self.key_in_use = Some((peer.clone(), what));
        }
    }

    /// The status message announcing `chain`.
    pub fn status<S: ChainStore>(chain: &Chain<S>) -> SyncMessage {
        let head = chain.head();
        SyncMessage::Status {
            genesis: chain.genesis_hash(),
            chain: PeerChain {
                head_number: head.number,
                head_hash: head.hash,
                total_weight: head.total_weight,
                finalized_number: chain.finalized().number,
                justified_number: chain.justified().number,
            },
        }
    }

    /// What `peer` did wrong so far.
    pub fn misbehaviour(&self, peer: &P) -> Misbehaviour {
        self.misbehaviour.get(peer).copied().unwrap_or_default()
    }

    /// Whether `peer` may have another request for blocks served now; takes
    /// one from its allowance if so.
    fn allow_request(&mut self, peer: &P, now: Timestamp) -> bool {
        let a = self.allowances.entry(peer.clone()).or_insert(Allowance {
            tokens: REQUEST_BURST,
            refilled: now,
        });
        let interval = REQUEST_INTERVAL.as_millis().max(1) as u64;
        let earned = now
            .as_unix_millis()
            .saturating_sub(a.refilled.as_unix_millis())
            / interval;
        if earned > 0 {
            a.tokens = a
                .tokens
                .saturating_add(u32::try_from(earned).unwrap_or(u32::MAX))
                .min(REQUEST_BURST);
            a.refilled = a
                .refilled
                .saturating_add(Duration::from_millis(earned.saturating_mul(interval)));
        }
        if a.tokens == 0 {
            return false;
        }
        a.tokens -= 1;
        true
    }

    /// A neighbour went away.
    pub fn handle_peer_gone(&mut self, peer: &P) {
        self.allowances.remove(peer);
        self.deferred.remove(peer);
        self.neighbours.remove(peer);
        self.peers.remove(peer);
        self.strikes.remove(peer);
        self.late.remove(peer);
        self.rates.remove(peer);
        // Counts go with the neighbour: what it did is the daemon's to act
        // on (a ban) while it is here, and this map stays as small as the
        // neighbourhood.
        self.misbehaviour.remove(peer);
        if self.in_flight.as_ref().is_some_and(|r| &r.peer == peer) {
            self.in_flight = None;
        }
        if let Some(job) = self.importing.as_mut().filter(|j| &j.peer == peer) {
            // Its blocks are checked like anyone's; only nothing is counted.
            job.gone = true;
        }
    }

    /// A message from `peer` arrived.
    pub fn handle_message<S: ChainStore>(
        &mut self,
        peer: P,
        message: SyncMessage,
        chain: &mut Chain<S>,
        now: Timestamp,
    ) -> Result<(), ChainError<S::Error>> {
        match message {
            SyncMessage::Status {
                genesis,
                chain: theirs,
            } => {
                if genesis == chain.genesis_hash() {
                    if self.neighbours.insert(peer.clone()) {
                        // A new neighbour hears of the votes it may have
                        // missed, so that it can count the next ones at once.
                        let ids: Vec<u64> = chain.votes().iter().map(FinalityVote::id).collect();
                        for chunk in ids.chunks(MAX_VOTE_IDS_PER_MESSAGE) {
                            self.outbox
                                .push_back((peer.clone(), SyncMessage::HaveVotes(chunk.to_vec())));
                        }
                    }
                    self.peers.insert(peer, theirs);
                }
            }
            SyncMessage::GetBlocks { from, max } => {
                if self.allow_request(&peer, now) {
                    let blocks = serve(chain, from, max)?;
                    self.outbox.push_back((peer, SyncMessage::Blocks(blocks)));
                } else if self.deferred.insert(peer.clone(), (from, max)).is_some() {
                    // One request waits for the allowance (an honest
                    // neighbour has one in flight); one more replaces it.
                    self.misbehaviour.entry(peer).or_default().excess_requests += 1;
                }
            }
            SyncMessage::Blocks(blocks) => self.handle_blocks(peer, blocks, chain, now)?,
            SyncMessage::Votes(votes) => self.handle_votes(Some(peer), votes, chain)?,
            SyncMessage::HaveVotes(ids) => self.handle_have_votes(peer, ids, now),
            SyncMessage::GetVotes(ids) => {
                let votes: Vec<FinalityVote> = chain
                    .votes()
                    .into_iter()
                    .filter(|v| ids.contains(&v.id()))
                    .take(MAX_VOTES_PER_MESSAGE)
                    .collect();
                if !votes.is_empty() {
                    self.outbox.push_back((peer, SyncMessage::Votes(votes)));
                }
            }
        }
        self.maybe_request(chain, now);
        Ok(())
    }

    fn handle_blocks<S: ChainStore>(
        &mut self,
        peer: P,
        blocks: Vec<Vec<u8>>,
        chain: &mut Chain<S>,
        now: Timestamp,
    ) -> Result<(), ChainError<S::Error>> {
        let request = match self.in_flight.take_if(|r| r.peer == peer) {
            Some(request) => request,
            // An answer after its request timed out: as welcome as in time
            // (the blocks are checked all the same).
            None if let Some(sent) = self.late.remove(&peer) => Request {
                peer: peer.clone(),
                from: chain.head().number.saturating_add(1),
                sent,
                deadline: now,
            },
            None => {
                self.misbehaviour.entry(peer).or_default().unsolicited += 1;
                return Ok(());
            }
        };
        if blocks.is_empty() {
            // It has nothing from there (its chain moved): wait for its next status.
            self.peers.remove(&peer);
        } else {
            self.measure(&peer, &request, &blocks, now);
        }
        // One answer at a time: an earlier one still importing finishes first.
        self.import_all(chain, now)?;
        self.importing = Some(Importing {
            peer,
            from: request.from,
            count: blocks.len(),
            blocks: blocks.into(),
            new: 0,
            elsewhere: false,
            gone: false,
        });
        self.import_some(chain, now, self.import_step)
    }

    /// Learns from an answer how fast `peer`'s answers come.
    fn measure(&mut self, peer: &P, request: &Request<P>, blocks: &[Vec<u8>], now: Timestamp) {
        let bytes: u64 = blocks.iter().map(|b| b.len() as u64).sum();
        let took_ms = now
            .as_unix_millis()
            .saturating_sub(request.sent.as_unix_millis())
            .max(1);
        let sample = bytes.saturating_mul(1000) / took_ms;
        let rate = self.rates.entry(peer.clone()).or_default();
        rate.last_bytes = bytes;
        // Smoothed, a quarter for the newest: one quick answer does not
        // undo what a slow link showed.
        rate.bytes_per_s = if rate.bytes_per_s == 0 {
            sample
        } else {
            (rate.bytes_per_s.saturating_mul(3) + sample) / 4
        };
    }

    /// How long a request to `peer` may take: [`REQUEST_TIMEOUT`], or
    /// twice what an answer as large as its last took at the rate its
    /// answers came, if that is longer (at most [`MAX_REQUEST_TIMEOUT`]).
    fn request_timeout(&self, peer: &P) -> Duration {
        let needed = self
            .rates
            .get(peer)
            .filter(|r| r.bytes_per_s > 0)
            .map_or(Duration::ZERO, |r| {
                Duration::from_millis(r.last_bytes.saturating_mul(2000) / r.bytes_per_s)
            });
        needed.clamp(REQUEST_TIMEOUT, MAX_REQUEST_TIMEOUT)
    }

    /// Whether blocks of an answer wait to be imported: call
    /// [`Sync::continue_import`] (see [`Sync::set_import_step`]).
    pub fn importing(&self) -> bool {
        self.importing.is_some()
    }

    /// How many blocks of an answer [`Sync::handle_message`] and each
    /// [`Sync::continue_import`] import (at least 1; all of them unless
    /// set). Each import is a signature check and a synced write, so a
    /// daemon imports a few at a time and handles its other work in
    /// between: a neighbour sending blocks must not hold up an SOS.
    pub fn set_import_step(&mut self, blocks: usize) {
        self.import_step = blocks.max(1);
    }

    /// Imports the next blocks of the answer being imported, if any.
    pub fn continue_import<S: ChainStore>(
        &mut self,
        chain: &mut Chain<S>,
        now: Timestamp,
    ) -> Result<(), ChainError<S::Error>> {
        self.import_some(chain, now, self.import_step)?;
        self.maybe_request(chain, now);
        Ok(())
    }

    fn import_all<S: ChainStore>(
        &mut self,
        chain: &mut Chain<S>,
        now: Timestamp,
    ) -> Result<(), ChainError<S::Error>> {
        self.import_some(chain, now, usize::MAX)
    }

    /// Imports up to `budget` blocks of the answer being imported; after its
    /// last one, weighs what the answer was worth.
    fn import_some<S: ChainStore>(
        &mut self,
        chain: &mut Chain<S>,
        now: Timestamp,
        budget: usize,
    ) -> Result<(), ChainError<S::Error>> {
        let Some(mut job) = self.importing.take() else {
            return Ok(());
        };
        let mut done = false;
        for _ in 0..budget {
            let Some(bytes) = job.blocks.pop_front() else {
                done = true;
                break;
            };
            let i = job.count - job.blocks.len() - 1;
            if !self.import_one(&mut job, i, &bytes, chain, now)? {
                done = true;
                break;
            }
        }
        if done || job.blocks.is_empty() {
            self.weigh(job, now);
        } else {
            self.importing = Some(job);
        }
        Ok(())
    }

    /// Imports block `i` of an answer; `false` if the rest of the answer is
    /// not worth importing.
    fn import_one<S: ChainStore>(
        &mut self,
        job: &mut Importing<P>,
        i: usize,
        bytes: &[u8],
        chain: &mut Chain<S>,
        now: Timestamp,
    ) -> Result<bool, ChainError<S::Error>> {
        let peer = job.peer.clone();
        let block = match SealedBlock::from_bytes(bytes) {
            Ok(block) => block,
            Err(_) => {
                self.blame_invalid(job);
                return Ok(false);
            }
        };
        match chain.import(&block, Validation::Full { now }) {
            Ok(imported) => {
                job.new += usize::from(imported.new);
                // Validated, so the signature is the key's own.
                let h = block.header();
                if imported.new
                    && self
                        .watch
                        .is_some_and(|(key, since)| key == h.signer && h.timestamp >= since)
                {
                    let what = KeyInUse::Block {
                        number: imported.block.number,
                        hash: imported.block.hash,
                    };
                    self.saw_key_in_use(&peer, what);
                }
                if i + 1 == job.count && job.count == MAX_BLOCKS_PER_MESSAGE as usize {
                    // A full answer: its branch may go on above.
                    let next = imported.block.number.saturating_add(1);
                    self.continue_from = Some((peer, next));
                }
                Ok(true)
            }
            Err(ChainError::Import(ImportError::UnknownParent { .. })) if i == 0 => {
                job.elsewhere = true;
                // Another branch: ask again from where both must meet.
                let floor = chain.finalized().number.saturating_add(1);
                if job.from > floor {
                    self.restart_from = Some(floor);
                } else {
                    // Not even from just above the finalized block: its
                    // chain left this one below finality, and asking
                    // again would get the same blocks for ever. Not
                    // asked again until it announces another chain.
                    self.peers.remove(&peer);
                }
                Ok(false)
            }
            // Its signer's fault, not the neighbour's that passed it on.
            Err(ChainError::Import(ImportError::TooManySiblings { .. })) => Ok(false),
            Err(ChainError::Import(_)) => {
                self.blame_invalid(job);
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    fn blame_invalid(&mut self, job: &Importing<P>) {
        if !job.gone {
            self.misbehaviour
                .entry(job.peer.clone())
                .or_default()
                .invalid_blocks += 1;
        }
        // Not asked again until it announces another chain.
        self.peers.remove(&job.peer);
    }

    /// What an answer was worth, once imported.
    fn weigh(&mut self, job: Importing<P>, now: Timestamp) {
        let Importing {
            peer,
            count,
            new,
            elsewhere,
            gone,
            ..
        } = job;
        if gone {
            return;
        }
        if new > 0 {
            self.strikes.remove(&peer);
        } else if count > 0 && !elsewhere {
            // Its claim did not hold (or it raced another neighbour): the
            // others go first, and it waits, longer each time.
            self.misbehaviour.entry(peer.clone()).or_default().useless += 1;
            self.strike(peer, now);
        }
    }

    /// A neighbour's request brought nothing: the others go first, and from
    /// the second time in a row it waits (one may be a race with another
    /// neighbour's answer, or a request lost), 10 s, then twice as long each
    /// time up to about 5 minutes.
    fn strike(&mut self, peer: P, now: Timestamp) {
        let s = self.strikes.entry(peer).or_insert(Strikes {
            count: 0,
            not_before: None,
        });
        s.count = s.count.saturating_add(1);
        if s.count >= 2 {
            let wait = REQUEST_TIMEOUT.saturating_mul(1 << (s.count - 2).min(5));
            s.not_before = Some(now.saturating_add(wait));
        }
    }

    /// This node (an authority) votes: the vote is counted here and sent,
    /// whole, to every neighbour. Make it with [`Chain::vote`].
    pub fn publish_vote<S: ChainStore>(
        &mut self,
        vote: FinalityVote,
        chain: &mut Chain<S>,
    ) -> Result<(), ChainError<S::Error>> {
        self.handle_votes(None, vec![vote], chain)
    }

    /// This node, if it is an authority, votes for the chain's head when
    /// [`Chain::vote`] lets it (recorded in the store first) and publishes
    /// the vote. Call it whenever the head may have moved, and again at
    /// [`Chain::vote_wait`].
    pub fn cast_vote<S: ChainStore>(
        &mut self,
        identity: &lifeline_crypto::Identity,
        chain: &mut Chain<S>,
        now: Timestamp,
    ) -> Result<(), ChainError<S::Error>> {
        match chain.vote(identity, now)? {
            Some(vote) => self.publish_vote(vote, chain),
            None => Ok(()),
        }
    }

    /// A neighbour announced votes: ask it for those this node has not seen
    /// and is not already waiting for (bounded per neighbour and in all).
    fn handle_have_votes(&mut self, peer: P, ids: Vec<u64>, now: Timestamp) {
        let mut asked_here = self.wanted.values().filter(|w| w.asked == peer).count();
        let mut ask = Vec::new();
        for id in ids {
            if self.known_votes.contains(&id) {
                continue;
            }
            if let Some(w) = self.wanted.get_mut(&id) {
                if w.asked != peer && w.others.len() < MAX_ANNOUNCERS && !w.others.contains(&peer) {
                    w.others.push(peer.clone());
                }
                continue;
            }
            if self.wanted.len() >= MAX_WANTED_VOTES || asked_here >= MAX_WANTED_PER_PEER {
                continue;
            }
            self.wanted.insert(
                id,
                Wanted {
                    asked: peer.clone(),
                    deadline: now.saturating_add(VOTE_ASK_TIMEOUT),
                    others: Vec::new(),
                },
            );
            asked_here += 1;
            ask.push(id);
        }
        if !ask.is_empty() {
            self.outbox.push_back((peer, SyncMessage::GetVotes(ask)));
        }
    }

    /// Remembers that this node has seen vote `id`.
    fn know_vote(&mut self, id: u64) {
        self.wanted.remove(&id);
        if self.known_votes.insert(id) {
            self.known_order.push_back(id);
            if self.known_order.len() > MAX_KNOWN_VOTES
                && let Some(old) = self.known_order.pop_front()
            {
                self.known_votes.remove(&old);
            }
        }
    }

    /// Counts `votes` (from `from`, or this node's own) and passes the new
    /// ones on to every other neighbour, in one message each.
    fn handle_votes<S: ChainStore>(
        &mut self,
        from: Option<P>,
        votes: Vec<FinalityVote>,
        chain: &mut Chain<S>,
    ) -> Result<(), ChainError<S::Error>> {
        let mut fresh = Vec::new();
        for vote in votes {
            let id = vote.id();
            if self.known_votes.contains(&id) {
                // Seen already: no signature check, nothing to pass on.
                self.wanted.remove(&id);
                continue;
            }
            if let Some(peer) = &from
                && self.watch.is_some_and(|(key, _)| key == vote.signer)
                && vote.target.number > chain.last_vote().target
                && vote.genesis == chain.genesis_hash()
                && vote.verify().is_ok()
            {
                let what = KeyInUse::Vote {
                    source: vote.source.number,
                    target: vote.target.number,
                };
                self.saw_key_in_use(peer, what);
            }
            match chain.add_vote(&vote) {
                Ok(needed) => {
                    self.know_vote(id);
                    if needed {
                        fresh.push(vote);
                    }
                }
                Err(ChainError::Vote(VoteError::BadSignature)) => {
                    if let Some(peer) = &from {
                        self.misbehaviour
                            .entry(peer.clone())
                            .or_default()
                            .forged_votes += 1;
                    }
                }
                // Another chain, or a signer this node does not count (yet):
                // not passed on, not fetched again, and not the neighbour's
                // fault. (A vote that breaks the voting rule is kept and
                // passed on, as evidence: `Chain::add_vote`.)
                Err(ChainError::Vote(_)) => self.know_vote(id),
                Err(e) => return Err(e),
            }
        }
        if fresh.is_empty() {
            return Ok(());
        }
        let ids: Vec<u64> = fresh.iter().map(FinalityVote::id).collect();
        for peer in &self.neighbours {
            let message = match &from {
                // Our own: every neighbour needs them.
                None => SyncMessage::Votes(fresh.clone()),
                Some(from) if from == peer => continue,
                Some(_) => SyncMessage::HaveVotes(ids.clone()),
            };
            self.outbox.push_back((peer.clone(), message));
        }
        Ok(())
    }

    /// Time passed: a request that got no answer is given up, and votes
    /// asked for in vain are asked of the next neighbour that announced
    /// them (or forgotten, if none did).
    pub fn handle_timeout<S: ChainStore>(&mut self, chain: &Chain<S>, now: Timestamp) {
        if let Some(request) = self.in_flight.take_if(|r| r.deadline <= now) {
            // Someone else goes first next time, and it is asked again
            // after a wait, longer each time. Its chain is not forgotten: a
            // request lost on the way (sent before the link was up, say)
            // left a node that had heard a neighbour's only status waiting
            // for a new head that, with no authority sealing, never came.
            self.late.insert(request.peer.clone(), request.sent);
            self.strike(request.peer, now);
        }
        for s in self.strikes.values_mut() {
            s.not_before = s.not_before.filter(|t| *t > now);
        }
        let waiting: Vec<P> = self.deferred.keys().cloned().collect();
        for peer in waiting {
            if !self.allow_request(&peer, now) {
                continue;
            }
            if let Some((from, max)) = self.deferred.remove(&peer)
                && let Ok(blocks) = serve(chain, from, max)
            {
                self.outbox.push_back((peer, SyncMessage::Blocks(blocks)));
            }
        }
        let mut expired: Vec<u64> = self
            .wanted
            .iter()
            .filter(|(_, w)| w.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        // In a fixed order, so that a simulation replays exactly.
        expired.sort_unstable();
        let mut ask: BTreeMap<P, Vec<u64>> = BTreeMap::new();
        for id in expired {
            let Some(w) = self.wanted.get_mut(&id) else {
                continue;
            };
            if w.others.is_empty() {
                self.wanted.remove(&id);
                continue;
            }
            w.asked = w.others.remove(0);
            w.deadline = now.saturating_add(VOTE_ASK_TIMEOUT);
            ask.entry(w.asked.clone()).or_default().push(id);
        }
        for (peer, ids) in ask {
            self.outbox.push_back((peer, SyncMessage::GetVotes(ids)));
        }
        self.maybe_request(chain, now);
    }

    /// When sync wants to be woken for its timeout.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        let request = self.in_flight.as_ref().map(|r| r.deadline);
        let votes = self.wanted.values().map(|w| w.deadline).min();
        let waiting = self.strikes.values().filter_map(|s| s.not_before).min();
        let serve = self
            .deferred
            .keys()
            .filter_map(|p| self.allowances.get(p))
            .map(|a| a.refilled.saturating_add(REQUEST_INTERVAL))
            .min();
        request
            .into_iter()
            .chain(votes)
            .chain(waiting)
            .chain(serve)
            .min()
    }

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<(P, SyncMessage)> {
        self.outbox.pop_front()
    }

    /// Whether a neighbour has a chain this node would prefer and lacks
    /// (sync is not done).
    pub fn behind<S: ChainStore>(&self, chain: &Chain<S>) -> bool {
        self.peers.values().any(|p| worth_asking(chain, p))
    }

    fn maybe_request<S: ChainStore>(&mut self, chain: &Chain<S>, now: Timestamp) {
        // While an answer is imported, what to ask next is not known yet.
        if self.in_flight.is_some() || self.importing.is_some() {
            return;
        }
        let head = chain.head();
        // The best chain this node lacks, from those whose answers have
        // brought something (a claim is only a claim); the lowest peer wins
        // a tie, so the choice never depends on hashing order.
        let strikes = &self.strikes;
        let best = self
            .peers
            .iter()
            .filter(|(peer, p)| {
                let waiting = strikes
                    .get(*peer)
                    .is_some_and(|s| s.not_before.is_some_and(|t| t > now));
                !waiting && worth_asking(chain, p)
            })
            .max_by_key(|(peer, p)| {
                let struck = strikes.get(*peer).map_or(0, |s| s.count);
                (
                    std::cmp::Reverse(struck),
                    p.justified_number,
                    p.total_weight,
                    std::cmp::Reverse(*peer),
                )
            });
        let Some((peer, theirs)) = best else {
            return;
        };
        let go_on = self
            .continue_from
            .take()
            .and_then(|(p, from)| (&p == peer).then_some(from));
        let from = self
            .restart_from
            .take()
            .or(go_on)
            .unwrap_or(head.number.saturating_add(1))
            .min(theirs.head_number);
        let peer = peer.clone();
        self.in_flight = Some(Request {
            peer: peer.clone(),
            from,
            sent: now,
            deadline: now.saturating_add(self.request_timeout(&peer)),
        });
        self.outbox.push_back((
            peer,
            SyncMessage::GetBlocks {
                from,
                max: MAX_BLOCKS_PER_MESSAGE,
            },
        ));
    }
}

/// Whether a neighbour's announced chain is worth asking for: this node
/// lacks its head, and fork choice may prefer it. That is a chain above a
/// higher justified block (however light: the head follows justification),
/// or one at least as heavy. A heavier chain with a lower justified height
/// is asked for too: it is most often this node's own branch, grown by a
/// neighbour that has not heard the latest votes yet. Heads as heavy as
/// this node's are fetched because fork choice breaks that tie the same way
/// everywhere, but only on nodes that hold both heads: without it, two
/// signers that sealed competing blocks at one height can each wait on the
/// other forever (each may only seal on the branch the other is on). Once
/// the node holds a neighbour's head it does not ask again, whatever fork
/// choice made of it.
fn worth_asking<S: ChainStore>(chain: &Chain<S>, theirs: &PeerChain) -> bool {
    let head = chain.head();
    if theirs.head_hash == head.hash || chain.contains(&theirs.head_hash).unwrap_or(true) {
        return false;
    }
    theirs.justified_number > chain.justified().number || theirs.total_weight >= head.total_weight
}

/// Canonical blocks from `from`, at most `max` (capped) and at most
/// [`MAX_SYNC_MESSAGE_LEN`] bytes.
fn serve<S: ChainStore>(
    chain: &Chain<S>,
    from: u64,
    max: u32,
) -> Result<Vec<Vec<u8>>, ChainError<S::Error>> {
    let mut blocks = Vec::new();
    let mut size = 0usize;
    let count = u64::from(max.min(MAX_BLOCKS_PER_MESSAGE));
    for number in from.max(1)..from.max(1).saturating_add(count) {
        let Some(bytes) = chain.canonical_block(number)? else {
            break;
        };
        size = size.saturating_add(bytes.len());
        if size > MAX_SYNC_MESSAGE_LEN.saturating_sub(MAX_BLOCK_LEN.min(1024)) && !blocks.is_empty()
        {
            break;
        }
        blocks.push(bytes);
    }
    Ok(blocks)
}
