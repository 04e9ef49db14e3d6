//! The chunks of one shard: append-only buffers of items (see `item`), each holding entries
//! of one expiry bucket only, so that a bucket that expires frees whole chunks.
//!
//! # Life of a chunk
//! - **Open**: the bucket's current chunk, appended to under the shard lock. It starts small
//!   and doubles in place up to [`CHUNK_BYTES`], so a bucket with three entries does not hold
//!   16 KiB.
//! - **Frozen**: full, or taken by the sweep or the CLOCK hand. Its bytes never change again,
//!   so they can be shared: compaction and eviction read the entries they move from a
//!   shared handle, and a large value in a chunk of its own is handed to readers as a slice
//!   of it (no copy). Small values are copied out (see [`Chunks::value`]).
//! - **Freed**: its bucket expired, or every item in it is dead, or its live items were moved
//!   to the bucket's open chunk (compaction and eviction).
//!
//! An item larger than a quarter chunk gets a chunk of its own, of its exact size, frozen
//! from the start.
//!
//! # Accounting
//! [`Chunks::allocated`] is what the chunks really allocated: each chunk's capacity plus its
//! bookkeeping ([`CHUNK_OVERHEAD`]). Holes left by overwrites and deletes stay charged until
//! their chunk is compacted, which happens as soon as half a frozen chunk is dead.

use std::collections::{BTreeMap, VecDeque};

use bytes::{Bytes, BytesMut};
use hashbrown::HashSet;

use super::item::{self, Item, NewItem, NodeTags};
use crate::base::time::Timestamp;

/// The largest chunk shared by many items. Small enough that the open chunks of many
/// buckets in many shards stay cheap, large enough that its bookkeeping is noise.
pub(super) const CHUNK_BYTES: usize = 16 * 1024;

/// Items larger than this get a chunk of their own, of exactly their size: rounding a
/// chunk up to a power of two for one such item would waste up to half of it.
const OWN_CHUNK_ABOVE: usize = CHUNK_BYTES / 4;

/// The smallest chunk: a power of two that the allocator serves without rounding.
const FIRST_CHUNK_BYTES: usize = 64;

/// Bytes charged per chunk besides its buffer: its slot in the slab, the buffer's shared
/// header, its place in the bucket's set and in the hand's queue, and allocator rounding.
pub(super) const CHUNK_OVERHEAD: u64 = 128;

/// Bytes charged per bucket a shard holds chunks of: its entry in the bucket map and its set
/// of chunks. A store spreads each bucket over all its shards, so with many buckets (long
/// TTLs on a fine schedule) and few entries this is a real part of the memory.
pub(super) const BUCKET_OVERHEAD: u64 = 192;

/// The most chunks a shard can have: chunk ids are 22 bits in the index (see `index`).
pub(super) const MAX_CHUNKS: usize = 1 << 22;

/// A chunk as the sweep holds on to it between lock holds: the id with its generation, so
/// that a chunk freed meanwhile (its items all deleted) and its id reused is not mistaken
/// for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ChunkRef {
    id: u32,
    generation: u32,
}

/// Where an item lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Location {
    pub(super) chunk: u32,
    pub(super) offset: u32,
}

/// A bucket's key in the chunk map: its fire time, or `NEVER` for entries without expiry.
const NEVER: Timestamp = Timestamp::from_millis(i64::MAX);

#[derive(Debug)]
enum Data {
    Open(BytesMut),
    Frozen(Bytes),
}

#[derive(Debug)]
struct Chunk {
    data: Data,
    /// Bytes allocated for the buffer.
    capacity: usize,
    /// The bucket's fire time, `NEVER` for entries that do not expire.
    bucket: Timestamp,
    /// Bytes of items that no index slot points at any more.
    dead: usize,
    /// Distinguishes this chunk from earlier ones that had the same id, for the queues.
    generation: u32,
    /// Whether it waits in the compaction queue.
    sparse: bool,
    /// Whether it holds one large item (see [`OWN_CHUNK_ABOVE`]).
    own: bool,
    /// Whether the sweep took it (its bucket expired): it belongs to no bucket any more,
    /// and nothing but the sweep touches it again (a bucket of the same fire time made
    /// meanwhile, by a write that read the clock just before the sweep, is another).
    due: bool,
    /// The clock value items' versions are stored relative to: the first item's.
    base: u64,
}

fn chunk_bytes(data: &Data) -> &[u8] {
    match data {
        Data::Open(bytes) => bytes,
        Data::Frozen(bytes) => bytes,
    }
}

impl Chunk {
    fn bytes(&self) -> &[u8] {
        chunk_bytes(&self.data)
    }

    fn is_frozen(&self) -> bool {
        matches!(self.data, Data::Frozen(_))
    }

    fn bucket(&self) -> Option<Timestamp> {
        (self.bucket != NEVER).then_some(self.bucket)
    }

    fn freeze(&mut self) {
        if let Data::Open(bytes) = &mut self.data {
            self.data = Data::Frozen(std::mem::take(bytes).freeze());
        }
    }
}

/// The chunks of one bucket.
#[derive(Debug, Default)]
struct Bucket {
    /// The chunk appends go to.
    open: Option<u32>,
    /// Every chunk of the bucket, the open one included.
    chunks: HashSet<u32>,
    /// Bytes allocated for its shared chunks (not those of single items): a new chunk is
    /// sized from it, so that a bucket's chunks grow geometrically to [`CHUNK_BYTES`]
    /// instead of starting large.
    capacity: usize,
}

/// How an append finds room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    /// The open chunk has room.
    InPlace(u32),
    /// The open chunk grows to this capacity first.
    Grow(u32, usize),
    /// A new open chunk of this capacity (the old one, if any, is frozen).
    Open(usize),
    /// A chunk of its own, of exactly this capacity.
    Own(usize),
}

/// The smallest chunk an item of `len` bytes can be appended to, alone: what it costs in a
/// bucket that has nothing yet.
pub(super) fn chunk_capacity_for(len: u64) -> u64 {
    if len > OWN_CHUNK_ABOVE as u64 {
        own_capacity(len as usize) as u64
    } else {
        len.next_power_of_two().max(FIRST_CHUNK_BYTES as u64)
    }
}

/// The capacity of a chunk of its own for an item of `len` bytes: rounded up to a quarter of
/// its power of two, the size classes allocators serve large blocks in. Allocating (and
/// charging) the rounded size is what the allocator would take anyway.
fn own_capacity(len: usize) -> usize {
    let step = (len.next_power_of_two() / 8).max(1);
    len.div_ceil(step) * step
}

/// A shard's chunks, by id and by bucket.
#[derive(Debug, Default)]
pub(super) struct Chunks {
    slab: Vec<Option<Chunk>>,
    free_ids: Vec<u32>,
    buckets: BTreeMap<Timestamp, Bucket>,
    /// `(id, generation)` in the order chunks were made: the CLOCK hand's path. Freed chunks
    /// leave stale pairs that the hand skips.
    hand: VecDeque<(u32, u32)>,
    /// Frozen chunks at least half dead, to be compacted.
    sparse: Vec<(u32, u32)>,
    next_generation: u32,
    /// See [`Chunks::allocated`].
    allocated: u64,
    /// The node tags items refer to.
    pub(super) tags: NodeTags,
}

impl Chunks {
    /// Bytes allocated by the chunks and their bookkeeping.
    pub(super) fn allocated(&self) -> u64 {
        self.allocated
    }

    /// The bytes an append of `item` under `bucket` would newly allocate, less what killing
    /// the item at `replaced` then frees; `None` if the shard has no chunk id left for it.
    pub(super) fn cost(
        &self,
        bucket: Option<Timestamp>,
        item: &NewItem<'_>,
        replaced: Option<Location>,
    ) -> Option<u64> {
        let plan = self.plan(bucket, item)?;
        let appends_to = match plan {
            Plan::InPlace(id) | Plan::Grow(id, _) => Some(id),
            Plan::Open(_) | Plan::Own(_) => None,
        };
        // The replaced item's chunk goes only if the new item does not land in it.
        let credit = replaced
            .filter(|old| Some(old.chunk) != appends_to)
            .map_or(0, |old| self.freed_by_kill(old));
        Some(self.plan_cost(bucket, plan)?.saturating_sub(credit))
    }

    fn plan_cost(&self, bucket: Option<Timestamp>, plan: Plan) -> Option<u64> {
        Some(match plan {
            Plan::InPlace(_) => 0,
            Plan::Grow(id, capacity) => (capacity - self.chunk(id)?.capacity) as u64,
            Plan::Open(capacity) | Plan::Own(capacity) => {
                let new_bucket = !self.buckets.contains_key(&bucket.unwrap_or(NEVER));
                capacity as u64 + CHUNK_OVERHEAD + if new_bucket { BUCKET_OVERHEAD } else { 0 }
            }
        })
    }

    fn plan(&self, bucket: Option<Timestamp>, item: &NewItem<'_>) -> Option<Plan> {
        let has_id = !self.free_ids.is_empty() || self.slab.len() < MAX_CHUNKS;
        // In a new chunk the item is the first, so its clock value is the chunk's base.
        let len = item::encoded_len(item, bucket, item.version.get());
        if len > OWN_CHUNK_ABOVE {
            return has_id.then_some(Plan::Own(own_capacity(len)));
        }
        let entry = self.buckets.get(&bucket.unwrap_or(NEVER));
        let bucket_bytes = entry.map_or(0, |b| b.capacity);
        let fresh = (bucket_bytes / 8)
            .max(len)
            .next_power_of_two()
            .clamp(FIRST_CHUNK_BYTES, CHUNK_BYTES);
        if let Some(id) = entry.and_then(|b| b.open)
            && let Some(chunk) = self.chunk(id)
        {
            let len = item::encoded_len(item, bucket, chunk.base);
            let used = chunk.bytes().len();
            if used + len <= chunk.capacity {
                return Some(Plan::InPlace(id));
            }
            // Grow in place unless a fresh chunk costs less (growing copies, and may round
            // a large chunk up further than the item needs).
            let grown = (chunk.capacity * 2)
                .max((used + len).next_power_of_two())
                .min(CHUNK_BYTES);
            if used + len <= grown && grown - chunk.capacity <= fresh {
                return Some(Plan::Grow(id, grown));
            }
        }
        has_id.then_some(Plan::Open(fresh))
    }

    /// Appends `item` under `bucket`; `None` if the shard has no chunk id left.
    pub(super) fn append(
        &mut self,
        bucket: Option<Timestamp>,
        item: &NewItem<'_>,
    ) -> Option<Location> {
        let key = bucket.unwrap_or(NEVER);
        let (id, own) = match self.plan(bucket, item)? {
            Plan::InPlace(id) => (id, false),
            Plan::Grow(id, capacity) => {
                let chunk = self.slab.get_mut(id as usize)?.as_mut()?;
                let old = chunk.capacity;
                if let Data::Open(bytes) = &mut chunk.data {
                    let mut grown = BytesMut::with_capacity(capacity);
                    grown.extend_from_slice(bytes);
                    *bytes = grown;
                }
                chunk.capacity = capacity;
                self.allocated += (capacity - old) as u64;
                if let Some(bucket) = self.buckets.get_mut(&key) {
                    bucket.capacity += capacity - old;
                }
                (id, false)
            }
            Plan::Open(capacity) => {
                if let Some(old) = self.buckets.get(&key).and_then(|b| b.open) {
                    self.freeze(old);
                }
                let id = self.make(key, capacity, false, item.version.get());
                self.buckets.entry(key).or_default().open = Some(id);
                (id, false)
            }
            Plan::Own(capacity) => (self.make(key, capacity, true, item.version.get()), true),
        };
        let chunk = self.slab.get_mut(id as usize)?.as_mut()?;
        let Data::Open(bytes) = &mut chunk.data else {
            return None;
        };
        let offset = bytes.len() as u32;
        item::encode(item, bucket, chunk.base, &mut self.tags, bytes);
        if own {
            chunk.freeze();
        }
        Some(Location { chunk: id, offset })
    }

    /// A new open chunk of `capacity` bytes in bucket `key`, for one item if `own`; the caller
    /// checked that an id is free (`plan`).
    fn make(&mut self, key: Timestamp, capacity: usize, own: bool, base: u64) -> u32 {
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1);
        let chunk = Chunk {
            data: Data::Open(BytesMut::with_capacity(capacity)),
            capacity,
            bucket: key,
            dead: 0,
            generation,
            sparse: false,
            own,
            base,
            due: false,
        };
        let id = match self.free_ids.pop() {
            Some(id) => {
                self.slab[id as usize] = Some(chunk);
                id
            }
            None => {
                self.slab.push(Some(chunk));
                (self.slab.len() - 1) as u32
            }
        };
        if !self.buckets.contains_key(&key) {
            self.allocated += BUCKET_OVERHEAD;
        }
        let bucket = self.buckets.entry(key).or_default();
        bucket.chunks.insert(id);
        if !own {
            bucket.capacity += capacity;
        }
        self.allocated += capacity as u64 + CHUNK_OVERHEAD;
        self.hand.push_back((id, generation));
        id
    }

    /// Freezes chunk `id`, detaching it from its bucket's appends. A frozen chunk that is
    /// already empty of live items is freed, one that is half dead queued for compaction.
    fn freeze(&mut self, id: u32) {
        let Some(chunk) = self.chunk_mut(id) else {
            return;
        };
        chunk.freeze();
        let key = chunk.bucket;
        if let Some(bucket) = self.buckets.get_mut(&key)
            && bucket.open == Some(id)
        {
            bucket.open = None;
        }
        self.check_dead(id);
    }

    fn chunk(&self, id: u32) -> Option<&Chunk> {
        self.slab.get(id as usize)?.as_ref()
    }

    fn chunk_mut(&mut self, id: u32) -> Option<&mut Chunk> {
        self.slab.get_mut(id as usize)?.as_mut()
    }

    /// The item at `location`, with the bytes it starts.
    pub(super) fn item(&self, location: Location) -> Option<(Item, &[u8])> {
        let chunk = self.chunk(location.chunk)?;
        let bytes = chunk.bytes().get(location.offset as usize..)?;
        let item = item::decode(bytes, chunk.bucket(), chunk.base, &self.tags)?;
        Some((item, bytes))
    }

    /// The key of `item`, decoded from `location`, without decoding it again.
    pub(super) fn key(&self, location: Location, item: &Item) -> &[u8] {
        let start = location.offset as usize + item.key_start;
        self.chunk(location.chunk)
            .and_then(|chunk| chunk.bytes().get(start..start + item.key_len))
            .unwrap_or_default()
    }

    /// The bucket the chunk at `location` belongs to.
    pub(super) fn bucket_of(&self, location: Location) -> Option<Timestamp> {
        self.chunk(location.chunk).and_then(Chunk::bucket)
    }

    /// The value of `item` at `location` as `Bytes`. A value in a chunk of its own (over
    /// 4 KiB) is handed out without copying: the slice shares the chunk, which is just the
    /// value. A smaller one is copied out, so that a reader holding it (a slow client, a
    /// journal record in flight) pins its own bytes, not the 16 KiB chunk around them.
    pub(super) fn value(&self, location: Location, item: &Item) -> Bytes {
        let Some(chunk) = self.chunk(location.chunk) else {
            return Bytes::new();
        };
        let start = location.offset as usize + item.value_start();
        let range = start..start + item.value_len;
        match &chunk.data {
            Data::Frozen(bytes) if chunk.own => bytes.slice(range),
            data => Bytes::copy_from_slice(&chunk_bytes(data)[range]),
        }
    }

    /// The bytes killing the item at `location` would give back: its whole chunk if it is the
    /// last live item there (a large value in a chunk of its own, typically).
    fn freed_by_kill(&self, location: Location) -> u64 {
        let Some((item, _)) = self.item(location) else {
            return 0;
        };
        match self.chunk(location.chunk) {
            Some(chunk) if chunk.dead + item.len() >= chunk.bytes().len() => {
                chunk.capacity as u64 + CHUNK_OVERHEAD
            }
            _ => 0,
        }
    }

    /// Marks the item of `len` bytes at `location` dead: no index slot points at it now.
    pub(super) fn kill(&mut self, location: Location, len: usize) {
        if let Some(chunk) = self.chunk_mut(location.chunk) {
            chunk.dead += len;
            self.check_dead(location.chunk);
        }
    }

    /// Frees a chunk with no live item left (an open one too: the bucket opens another when
    /// it needs one); queues a frozen one at least half dead for compaction.
    fn check_dead(&mut self, id: u32) {
        let Some(chunk) = self.chunk_mut(id) else {
            return;
        };
        let len = chunk.bytes().len();
        if chunk.dead >= len {
            self.free(id);
        } else if chunk.is_frozen() && chunk.dead * 2 >= len && !chunk.sparse {
            chunk.sparse = true;
            let generation = chunk.generation;
            self.sparse.push((id, generation));
        }
    }

    /// Frees chunk `id` (its memory goes once no reader holds a value from it).
    pub(super) fn free(&mut self, id: u32) {
        let Some(chunk) = self.slab.get_mut(id as usize).and_then(Option::take) else {
            return;
        };
        self.free_ids.push(id);
        self.allocated -= chunk.capacity as u64 + CHUNK_OVERHEAD;
        if !chunk.due
            && let Some(bucket) = self.buckets.get_mut(&chunk.bucket)
        {
            bucket.chunks.remove(&id);
            if !chunk.own {
                bucket.capacity -= chunk.capacity;
            }
            if bucket.open == Some(id) {
                bucket.open = None;
            }
            if bucket.chunks.is_empty() {
                self.buckets.remove(&chunk.bucket);
                self.allocated -= BUCKET_OVERHEAD;
            }
        }
        self.compact_queues();
    }

    /// Drops stale pairs from the hand's queue once they outnumber the chunks, so freeing
    /// cannot grow it without bound. Amortised O(1) per free.
    fn compact_queues(&mut self) {
        let live = self.slab.len() - self.free_ids.len();
        if self.hand.len() > 2 * live + 64 {
            let slab = &self.slab;
            self.hand
                .retain(|(id, generation)| is_current(slab, *id, *generation));
        }
    }

    /// Takes every bucket whose fire time is at or before `now` out of the map, freezing its
    /// open chunk, and returns the chunk ids. The chunks stay until the caller, having removed
    /// the index slots that point into them, frees them.
    /// Also returns how many buckets those were.
    pub(super) fn take_due(&mut self, now: Timestamp) -> (usize, Vec<ChunkRef>) {
        let Some(after_now) = now.as_millis().checked_add(1).map(Timestamp::from_millis) else {
            return (0, Vec::new());
        };
        let later = self.buckets.split_off(&after_now);
        let due = std::mem::replace(&mut self.buckets, later);
        let buckets = due.len();
        self.allocated -= buckets as u64 * BUCKET_OVERHEAD;
        let mut ids = Vec::new();
        for (_, bucket) in due {
            for id in bucket.chunks {
                if let Some(chunk) = self.chunk_mut(id) {
                    chunk.freeze();
                    chunk.due = true;
                    ids.push(ChunkRef {
                        id,
                        generation: chunk.generation,
                    });
                }
            }
        }
        (buckets, ids)
    }

    /// The items of a chunk the sweep took, with their locations; none if it was freed
    /// meanwhile.
    pub(super) fn due_items(&self, chunk: ChunkRef) -> Vec<(Location, Item)> {
        if is_current(&self.slab, chunk.id, chunk.generation) {
            self.items(chunk.id)
        } else {
            Vec::new()
        }
    }

    /// Frees a chunk the sweep took, unless it was freed meanwhile.
    pub(super) fn free_due(&mut self, chunk: ChunkRef) {
        if is_current(&self.slab, chunk.id, chunk.generation) {
            self.free(chunk.id);
        }
    }

    /// The items of chunk `id` with their locations, live and dead.
    pub(super) fn items(&self, id: u32) -> Vec<(Location, Item)> {
        let Some(chunk) = self.chunk(id) else {
            return Vec::new();
        };
        let bytes = chunk.bytes();
        let mut items = Vec::new();
        let mut offset = 0;
        while offset < bytes.len() {
            let Some(item) = item::decode(&bytes[offset..], chunk.bucket(), chunk.base, &self.tags)
            else {
                break;
            };
            items.push((
                Location {
                    chunk: id,
                    offset: offset as u32,
                },
                item,
            ));
            offset += item.len();
        }
        items
    }

    /// The next chunk under the CLOCK hand, taken off the hand's path (see
    /// [`Chunks::requeue`]); `None` if the shard has none. Chunks the sweep took are left to
    /// it.
    pub(super) fn next_for_hand(&mut self) -> Option<u32> {
        while let Some((id, generation)) = self.hand.pop_front() {
            if is_current(&self.slab, id, generation) && !self.is_due(id) {
                return Some(id);
            }
        }
        None
    }

    /// Freezes chunk `id` for a rewrite (detaching it from its bucket's appends); `false` if
    /// that freed it, all of it being dead.
    pub(super) fn freeze_for_rewrite(&mut self, id: u32) -> bool {
        self.freeze(id);
        self.chunk(id).is_some()
    }

    /// Puts chunk `id` back at the end of the hand's path: the hand passed it without
    /// freeing it.
    pub(super) fn requeue(&mut self, id: u32) {
        if let Some(chunk) = self.chunk(id) {
            self.hand.push_back((id, chunk.generation));
        }
    }

    fn is_due(&self, id: u32) -> bool {
        self.chunk(id).is_some_and(|chunk| chunk.due)
    }

    /// A chunk waiting for compaction, if any.
    pub(super) fn next_sparse(&mut self) -> Option<u32> {
        while let Some((id, generation)) = self.sparse.pop() {
            if is_current(&self.slab, id, generation) && !self.is_due(id) {
                return Some(id);
            }
        }
        None
    }

    /// The chunk with the most dead bytes, if any has some, frozen (an open one included: a
    /// small store may have no other): what a full store without eviction compacts before it
    /// refuses a write. `None` also if freezing freed it (all of it was dead): that freed
    /// memory too, so the caller retries.
    pub(super) fn most_dead(&mut self) -> Option<Option<u32>> {
        let id = self
            .slab
            .iter()
            .enumerate()
            .filter_map(|(id, chunk)| Some((id as u32, chunk.as_ref()?)))
            .filter(|(_, chunk)| chunk.dead > 0 && !chunk.due)
            .max_by_key(|(_, chunk)| chunk.dead)
            .map(|(id, _)| id)?;
        self.freeze(id);
        Some(self.chunk(id).is_some().then_some(id))
    }

    /// The bytes of a frozen chunk, shared.
    pub(super) fn frozen_bytes(&self, id: u32) -> Option<Bytes> {
        match &self.chunk(id)?.data {
            Data::Frozen(bytes) => Some(bytes.clone()),
            Data::Open(_) => None,
        }
    }

    /// How many chunks there are.
    pub(super) fn count(&self) -> usize {
        self.slab.len() - self.free_ids.len()
    }

    /// The bucket a chunk belongs to.
    pub(super) fn chunk_bucket(&self, id: u32) -> Option<Timestamp> {
        self.chunk(id).and_then(Chunk::bucket)
    }

    /// A line per chunk, for test failures.
    #[cfg(test)]
    pub(super) fn describe(&self) -> String {
        self.slab
            .iter()
            .enumerate()
            .filter_map(|(id, chunk)| Some((id, chunk.as_ref()?)))
            .map(|(id, c)| {
                format!(
                    "#{id} cap {} len {} dead {} frozen {} own {} bucket {:?}\n",
                    c.capacity,
                    c.bytes().len(),
                    c.dead,
                    c.is_frozen(),
                    c.own,
                    c.bucket()
                )
            })
            .collect()
    }

    /// [`Chunks::allocated`] counted the slow way, for tests.
    #[cfg(test)]
    pub(super) fn recount(&self) -> u64 {
        let chunks: u64 = self
            .slab
            .iter()
            .flatten()
            .map(|chunk| chunk.capacity as u64 + CHUNK_OVERHEAD)
            .sum();
        chunks + self.buckets.len() as u64 * BUCKET_OVERHEAD
    }
}

fn is_current(slab: &[Option<Chunk>], id: u32, generation: u32) -> bool {
    slab.get(id as usize)
        .and_then(Option::as_ref)
        .is_some_and(|chunk| chunk.generation == generation)
}
