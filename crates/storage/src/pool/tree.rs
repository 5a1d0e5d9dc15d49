//! A volume's block map: logical block index → block id (0: a hole), as a radix tree whose
//! nodes are shared between volumes, snapshots and clones (`Arc`).
//!
//! A snapshot or clone copies the root pointer: O(1), whatever the volume's size. Changing
//! an entry copies the shared nodes on its path first (path copying, as dm-thin's shared
//! btrees and ZFS's block pointers do). A block's reference count is the number of leaf
//! *slots* holding its id, counted once per distinct leaf node; so copying a shared leaf
//! adds one reference to each id in it ([`BlockMap::set`]'s `on_copy`), and dropping the
//! last holder of a leaf removes one from each ([`BlockMap::release`]).
//!
//! Every `Arc` of the tree lives inside the pool's state, under its lock: a node's strong
//! count is exactly the number of maps (or parent nodes) that share it.

use std::collections::HashMap;
use std::sync::Arc;

const BITS: u32 = 9;
pub const FANOUT: usize = 1 << BITS;
/// Levels of the tree: 4 × 9 bits of block index (2^36 blocks: 4 PiB at 64 KiB).
const LEVELS: u32 = 4;
pub const MAX_BLOCKS: u64 = 1 << (BITS * LEVELS);

#[derive(Clone)]
enum Node {
    Inner(Box<[Option<Arc<Node>>]>),
    Leaf(Box<[u64]>),
}

fn slot(idx: u64, level: u32) -> usize {
    ((idx >> (BITS * level)) as usize) & (FANOUT - 1)
}

#[derive(Clone, Default)]
pub struct BlockMap {
    root: Option<Arc<Node>>,
}

impl BlockMap {
    /// The id at `idx` (0 for a hole or an index past the tree).
    pub fn get(&self, idx: u64) -> u64 {
        if idx >= MAX_BLOCKS {
            return 0;
        }
        let mut node = match &self.root {
            Some(n) => n,
            None => return 0,
        };
        let mut level = LEVELS - 1;
        loop {
            match &**node {
                Node::Leaf(ids) => return ids[slot(idx, 0)],
                Node::Inner(children) => match &children[slot(idx, level)] {
                    Some(child) => node = child,
                    None => return 0,
                },
            }
            level -= 1;
        }
    }

    /// Whether the entry at `idx` is in nodes no other map shares: its block may then be
    /// written in place when its own reference count is 1.
    pub fn exclusive(&self, idx: u64) -> bool {
        let mut node = match &self.root {
            Some(n) => n,
            None => return false,
        };
        let mut level = LEVELS - 1;
        loop {
            if Arc::strong_count(node) != 1 {
                return false;
            }
            match &**node {
                Node::Leaf(_) => return true,
                Node::Inner(children) => match &children[slot(idx, level)] {
                    Some(child) => node = child,
                    None => return false,
                },
            }
            level -= 1;
        }
    }

    /// Sets the entry at `idx` (< MAX_BLOCKS) to `id` and returns the id it held. Shared
    /// nodes on the path are copied first; `on_copy` gets every id of a copied leaf.
    pub fn set(&mut self, idx: u64, id: u64, on_copy: &mut dyn FnMut(u64)) -> u64 {
        debug_assert!(idx < MAX_BLOCKS);
        if self.root.is_none() {
            if id == 0 {
                return 0;
            }
            self.root = Some(Arc::new(new_node(LEVELS - 1)));
        }
        let mut node = match self.root.as_mut() {
            Some(n) => n,
            None => return 0,
        };
        let mut level = LEVELS - 1;
        loop {
            unshare(node, on_copy);
            match Arc::make_mut(node) {
                Node::Leaf(ids) => {
                    return std::mem::replace(&mut ids[slot(idx, 0)], id);
                }
                Node::Inner(children) => {
                    let child = &mut children[slot(idx, level)];
                    if child.is_none() {
                        if id == 0 {
                            return 0;
                        }
                        *child = Some(Arc::new(new_node(level - 1)));
                    }
                    match child {
                        Some(c) => node = c,
                        None => return 0,
                    }
                }
            }
            level -= 1;
        }
    }

    /// Calls `f(idx, id)` for every mapped entry with `start <= idx < end`, in order.
    pub fn for_each(&self, start: u64, end: u64, f: &mut dyn FnMut(u64, u64)) {
        if let Some(root) = &self.root {
            visit(root, LEVELS - 1, 0, start, end, f);
        }
    }

    /// Calls `f(id, exclusive)` for every mapped entry: `exclusive` when no other map shares
    /// the leaf holding it.
    pub fn for_each_owned(&self, f: &mut dyn FnMut(u64, bool)) {
        fn walk(node: &Arc<Node>, shared: bool, f: &mut dyn FnMut(u64, bool)) {
            let shared = shared || Arc::strong_count(node) > 1;
            match &**node {
                Node::Leaf(ids) => ids.iter().filter(|&&i| i != 0).for_each(|&i| f(i, !shared)),
                Node::Inner(children) => children.iter().flatten().for_each(|c| walk(c, shared, f)),
            }
        }
        if let Some(root) = &self.root {
            walk(root, false, f);
        }
    }

    /// Drops this map; `on_free` gets every id of each leaf no other map holds.
    pub fn release(self, on_free: &mut dyn FnMut(u64)) {
        fn drop_node(node: Arc<Node>, on_free: &mut dyn FnMut(u64)) {
            match Arc::try_unwrap(node) {
                Ok(Node::Leaf(ids)) => ids.iter().filter(|&&i| i != 0).for_each(|&i| on_free(i)),
                Ok(Node::Inner(children)) => {
                    for child in children.into_vec().into_iter().flatten() {
                        drop_node(child, on_free);
                    }
                }
                // Shared: the other holders keep it.
                Err(_) => {}
            }
        }
        if let Some(root) = self.root {
            drop_node(root, on_free);
        }
    }
}

fn new_node(level: u32) -> Node {
    if level == 0 {
        Node::Leaf(vec![0; FANOUT].into_boxed_slice())
    } else {
        Node::Inner(vec![None; FANOUT].into_boxed_slice())
    }
}

/// Replaces a shared node by a private copy.
fn unshare(node: &mut Arc<Node>, on_copy: &mut dyn FnMut(u64)) {
    if Arc::strong_count(node) == 1 {
        return;
    }
    if let Node::Leaf(ids) = &**node {
        ids.iter().filter(|&&i| i != 0).for_each(|&i| on_copy(i));
    }
    *node = Arc::new((**node).clone());
}

fn visit(node: &Node, level: u32, base: u64, start: u64, end: u64, f: &mut dyn FnMut(u64, u64)) {
    match node {
        Node::Leaf(ids) => {
            for (i, &id) in ids.iter().enumerate() {
                let idx = base + i as u64;
                if id != 0 && idx >= start && idx < end {
                    f(idx, id);
                }
            }
        }
        Node::Inner(children) => {
            // Each child covers FANOUT^level entries.
            let span = 1u64 << (BITS * level);
            for (i, child) in children.iter().enumerate() {
                let lo = base + i as u64 * span;
                if lo >= end || lo + span <= start {
                    continue;
                }
                if let Some(c) = child {
                    visit(c, level - 1, lo, start, end, f);
                }
            }
        }
    }
}

/// The maps of a pool as stored in a checkpoint: each node once, however many maps share
/// it, children before their parents.
#[derive(serde::Serialize, serde::Deserialize, Default)]
pub struct Forest {
    nodes: Vec<StoredNode>,
    /// Per map: its root node's index.
    roots: Vec<(u32, Option<u32>)>,
}

#[derive(serde::Serialize, serde::Deserialize)]
enum StoredNode {
    /// (slot, id) of the mapped entries.
    Leaf(Vec<(u16, u64)>),
    /// (slot, node index) of the present children.
    Inner(Vec<(u16, u32)>),
}

impl Forest {
    pub fn store<'a>(maps: impl Iterator<Item = (u32, &'a BlockMap)>) -> Forest {
        fn store_node(
            node: &Arc<Node>,
            forest: &mut Forest,
            seen: &mut HashMap<*const Node, u32>,
        ) -> u32 {
            if let Some(&i) = seen.get(&Arc::as_ptr(node)) {
                return i;
            }
            let stored = match &**node {
                Node::Leaf(ids) => StoredNode::Leaf(
                    (0u16..)
                        .zip(ids.iter())
                        .filter(|(_, &id)| id != 0)
                        .map(|(s, &id)| (s, id))
                        .collect(),
                ),
                Node::Inner(children) => StoredNode::Inner(
                    (0u16..)
                        .zip(children.iter())
                        .filter_map(|(s, c)| c.as_ref().map(|c| (s, store_node(c, forest, seen))))
                        .collect(),
                ),
            };
            let i = forest.nodes.len() as u32;
            forest.nodes.push(stored);
            seen.insert(Arc::as_ptr(node), i);
            i
        }
        let mut forest = Forest::default();
        let mut seen = HashMap::new();
        for (key, map) in maps {
            let root = map
                .root
                .as_ref()
                .map(|r| store_node(r, &mut forest, &mut seen));
            forest.roots.push((key, root));
        }
        forest
    }

    /// Rebuilds the maps, sharing restored; `on_leaf_id` gets every id once per distinct
    /// leaf (the reference counts). Fails on a malformed forest.
    pub fn load(self, on_leaf_id: &mut dyn FnMut(u64)) -> Result<Vec<(u32, BlockMap)>, String> {
        let mut built: Vec<(Arc<Node>, u32)> = Vec::with_capacity(self.nodes.len());
        for stored in self.nodes {
            let (node, level) = match stored {
                StoredNode::Leaf(entries) => {
                    let mut ids = vec![0u64; FANOUT];
                    for (s, id) in entries {
                        let slot = ids.get_mut(s as usize).ok_or("leaf slot out of range")?;
                        *slot = id;
                        on_leaf_id(id);
                    }
                    (Node::Leaf(ids.into_boxed_slice()), 0)
                }
                StoredNode::Inner(entries) => {
                    let mut children = vec![None; FANOUT];
                    let mut level = None;
                    for (s, child) in entries {
                        let (c, l) = built
                            .get(child as usize)
                            .ok_or("child index out of range")?;
                        if *level.get_or_insert(*l) != *l {
                            return Err("children of one node at different levels".into());
                        }
                        *children
                            .get_mut(s as usize)
                            .ok_or("inner slot out of range")? = Some(c.clone());
                    }
                    let level = level.map_or(1, |l| l + 1);
                    (Node::Inner(children.into_boxed_slice()), level)
                }
            };
            built.push((Arc::new(node), level));
        }
        let mut maps = Vec::new();
        for (key, root) in self.roots {
            let root = match root {
                None => None,
                Some(i) => {
                    let (n, level) = built.get(i as usize).ok_or("root index out of range")?;
                    if *level != LEVELS - 1 {
                        return Err("a root node is not at the top level".into());
                    }
                    Some(n.clone())
                }
            };
            maps.push((key, BlockMap { root }));
        }
        Ok(maps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_and_sharing() {
        let mut a = BlockMap::default();
        let mut copies = Vec::new();
        assert_eq!(a.set(5, 10, &mut |i| copies.push(i)), 0);
        assert_eq!(a.set(MAX_BLOCKS - 1, 11, &mut |i| copies.push(i)), 0);
        assert_eq!(a.get(5), 10);
        assert_eq!(a.get(MAX_BLOCKS - 1), 11);
        assert_eq!(a.get(6), 0);
        assert!(a.exclusive(5));
        assert!(copies.is_empty());

        let snap = a.clone();
        assert!(!a.exclusive(5));
        // Writing copies the shared leaf: its ids gain a reference.
        assert_eq!(a.set(7, 12, &mut |i| copies.push(i)), 0);
        assert_eq!(copies, vec![10]);
        assert!(a.exclusive(5));
        assert_eq!(snap.get(7), 0);
        assert_eq!(a.get(7), 12);

        // Releasing the snapshot frees only what the volume does not hold.
        let mut freed = Vec::new();
        snap.release(&mut |i| freed.push(i));
        assert_eq!(freed, vec![10]);
        let mut seen = Vec::new();
        a.for_each(0, MAX_BLOCKS, &mut |idx, id| seen.push((idx, id)));
        assert_eq!(seen, vec![(5, 10), (7, 12), (MAX_BLOCKS - 1, 11)]);
        let mut ranged = Vec::new();
        a.for_each(6, 8, &mut |idx, _| ranged.push(idx));
        assert_eq!(ranged, vec![7]);
    }

    #[test]
    fn forest_round_trip_keeps_sharing() {
        let mut a = BlockMap::default();
        for i in 0..2000 {
            a.set(i * 3, i + 1, &mut |_| {});
        }
        let b = a.clone();
        a.set(0, 9999, &mut |_| {});
        let forest = Forest::store([(1, &a), (2, &b)].into_iter());
        let bytes = postcard::to_stdvec(&forest).unwrap();
        let forest: Forest = postcard::from_bytes(&bytes).unwrap();
        let mut refs = HashMap::new();
        let maps = forest
            .load(&mut |id| *refs.entry(id).or_insert(0) += 1)
            .unwrap();
        let (a2, b2) = (&maps[0].1, &maps[1].1);
        assert_eq!(a2.get(0), 9999);
        assert_eq!(b2.get(0), 1);
        assert_eq!(a2.get(3 * 1500), 1501);
        // Only the first leaf was copied: ids in later leaves are referenced once.
        assert_eq!(refs[&1501], 1);
        assert_eq!(refs[&2], 2);
        assert!(!a2.exclusive(3 * 1500));
        assert!(a2.exclusive(0));
    }
}
