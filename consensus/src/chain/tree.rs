//! The tree of blocks above the finalized block, with each block's children
//! indexed, so that what a block's siblings are, what grows from a block,
//! and what finality drops are found without walking the whole tree for
//! every block (which made a long stall of finality quadratic).

use std::collections::{HashMap, HashSet};

use crate::block::{BlockHash, SealedBlock};
use crate::state::ChainState;

use super::Head;

/// One block of the tree of blocks that are not final yet (and the finalized block).
#[derive(Clone)]
pub(super) struct Node {
    pub(super) head: Head,
    pub(super) parent: BlockHash,
    /// The most recent block number at or before this one where its signer was
    /// in turn (EIP-3436's third tie-break); `None` for the genesis/snapshot root.
    pub(super) last_in_turn: Option<u64>,
    pub(super) block: Option<SealedBlock>,
    pub(super) state: ChainState,
}

/// The blocks above the finalized block, on every branch.
#[derive(Default)]
pub(super) struct Tree {
    nodes: HashMap<BlockHash, Node>,
    /// Each parent's children in the tree (the finalized block's too).
    children: HashMap<BlockHash, Vec<BlockHash>>,
}

impl Tree {
    pub(super) fn get(&self, hash: &BlockHash) -> Option<&Node> {
        self.nodes.get(hash)
    }

    pub(super) fn contains_key(&self, hash: &BlockHash) -> bool {
        self.nodes.contains_key(hash)
    }

    pub(super) fn insert(&mut self, hash: BlockHash, node: Node) {
        let siblings = self.children.entry(node.parent).or_default();
        if !siblings.contains(&hash) {
            siblings.push(hash);
        }
        self.nodes.insert(hash, node);
    }

    /// The children of `parent` in the tree.
    pub(super) fn children(&self, parent: &BlockHash) -> &[BlockHash] {
        self.children.get(parent).map_or(&[], Vec::as_slice)
    }

    /// `from` (if the tree has it) and every block above it, in no order.
    pub(super) fn subtree(&self, from: &BlockHash) -> Vec<BlockHash> {
        let mut found = Vec::new();
        if self.nodes.contains_key(from) {
            found.push(*from);
        }
        let mut i = 0;
        let mut frontier = self.children(from).to_vec();
        while let Some(h) = frontier.get(i).copied() {
            i += 1;
            found.push(h);
            frontier.extend_from_slice(self.children(&h));
        }
        found
    }

    /// Removes `from` and every block above it; returns their hashes.
    pub(super) fn remove_subtree(&mut self, from: &BlockHash) -> Vec<BlockHash> {
        let gone = self.subtree(from);
        if let Some(parent) = self.nodes.get(from).map(|n| n.parent)
            && let Some(siblings) = self.children.get_mut(&parent)
        {
            siblings.retain(|h| h != from);
            if siblings.is_empty() {
                self.children.remove(&parent);
            }
        }
        for h in &gone {
            self.nodes.remove(h);
            self.children.remove(h);
        }
        gone
    }

    /// Makes `f` the new root: keeps only the blocks above it, and returns
    /// `f`'s node and the hashes of the dropped blocks that are not below
    /// `f` on its branch (those are history, and stay stored).
    pub(super) fn reroot(&mut self, f: &BlockHash) -> Option<(Node, Vec<BlockHash>)> {
        let below = self.branch_below(f);
        let keep: HashSet<BlockHash> = self.subtree(f).into_iter().collect();
        let root = self.nodes.get(f)?.clone();
        let mut dropped = Vec::new();
        self.nodes.retain(|h, _| {
            let kept = keep.contains(h) && h != f;
            if !kept && h != f && !below.contains(h) {
                dropped.push(*h);
            }
            kept
        });
        let nodes = &self.nodes;
        self.children
            .retain(|parent, _| parent == f || nodes.contains_key(parent));
        Some((root, dropped))
    }

    /// The blocks of the tree that would be dropped if `f` became the root
    /// (the forks finality leaves behind): what [`Tree::reroot`] returns,
    /// without changing anything.
    pub(super) fn forks_left_by(&self, f: &BlockHash) -> Vec<BlockHash> {
        let below = self.branch_below(f);
        let keep: HashSet<BlockHash> = self.subtree(f).into_iter().collect();
        self.nodes
            .keys()
            .filter(|h| !keep.contains(h) && !below.contains(h))
            .copied()
            .collect()
    }

    /// The tree's blocks strictly below `hash` on its branch.
    fn branch_below(&self, hash: &BlockHash) -> HashSet<BlockHash> {
        let mut below = HashSet::new();
        let mut cursor = self.nodes.get(hash).map(|n| n.parent);
        while let Some(c) = cursor {
            let Some(n) = self.nodes.get(&c) else { break };
            below.insert(c);
            cursor = Some(n.parent);
        }
        below
    }
}
