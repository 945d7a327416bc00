//! The prepared dataset: dense ids, two-way vocabularies and per-user time-ordered sequences.

use std::collections::HashMap;

/// A dense item or user id. `0` is reserved for padding; real ids are `1..=N`.
pub type Id = u32;

/// The padding id, never assigned to a real user or item.
pub const PAD: Id = 0;

/// Two-way map between original ids (as written in the source file) and dense ids `1..=N`.
///
/// ```
/// use seqrec_data::Vocab;
/// let mut v = Vocab::new();
/// assert_eq!(v.intern("1193"), 1);
/// assert_eq!(v.intern("661"), 2);
/// assert_eq!(v.intern("1193"), 1);
/// assert_eq!(v.original(2), Some("661"));
/// assert_eq!(v.get("661"), Some(2));
/// assert_eq!(v.len(), 2);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Vocab {
    /// `originals[i]` is the original id of dense id `i + 1`.
    originals: Vec<String>,
    index: HashMap<String, Id>,
}

impl Vocab {
    /// An empty vocabulary.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a vocabulary whose dense id `i + 1` is `originals[i]`.
    ///
    /// Returns `Err(duplicate)` when an original id appears twice.
    pub fn from_originals(originals: Vec<String>) -> Result<Self, String> {
        let mut index = HashMap::with_capacity(originals.len());
        for (i, id) in originals.iter().enumerate() {
            if index.insert(id.clone(), i as Id + 1).is_some() {
                return Err(id.clone());
            }
        }
        Ok(Self { originals, index })
    }

    /// Returns the dense id of `original`, assigning the next free one if it is new.
    pub fn intern(&mut self, original: &str) -> Id {
        if let Some(&id) = self.index.get(original) {
            return id;
        }
        self.originals.push(original.to_owned());
        let id = self.originals.len() as Id;
        self.index.insert(original.to_owned(), id);
        id
    }

    /// The dense id of `original`, if known.
    pub fn get(&self, original: &str) -> Option<Id> {
        self.index.get(original).copied()
    }

    /// The original id of dense id `id`; `None` for [`PAD`] or an id out of range.
    pub fn original(&self, id: Id) -> Option<&str> {
        let i = (id as usize).checked_sub(1)?;
        self.originals.get(i).map(String::as_str)
    }

    /// Number of real entries (the largest dense id).
    pub fn len(&self) -> usize {
        self.originals.len()
    }

    /// True when no id has been assigned.
    pub fn is_empty(&self) -> bool {
        self.originals.is_empty()
    }

    /// Original ids in dense order (`originals()[i]` has dense id `i + 1`).
    pub fn originals(&self) -> &[String] {
        &self.originals
    }
}

/// A prepared interaction log: every user's events in time order, with dense ids.
///
/// Storage is compressed-sparse-row: the events of user `u` (`1..=n_users`) are
/// `items[offsets[u]..offsets[u + 1]]` with matching `timestamps`. User `0` is the
/// padding user and has no events.
///
/// ```
/// use seqrec_data::{Dataset, Vocab};
/// let users = Vocab::from_originals(vec!["a".into(), "b".into()]).unwrap();
/// let items = Vocab::from_originals(vec!["x".into(), "y".into(), "z".into()]).unwrap();
/// let ds = Dataset::from_sequences(users, items, vec![
///     (vec![1, 2, 3], vec![10, 20, 30]),
///     (vec![3, 1], vec![5, 6]),
/// ]).unwrap();
/// assert_eq!(ds.n_events(), 5);
/// assert_eq!(ds.items_of(2), &[3, 1]);
/// assert_eq!(ds.item_counts(), vec![0, 2, 1, 2]);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// Original user ids (or session ids) and their dense ids.
    pub users: Vocab,
    /// Original item ids and their dense ids.
    pub items: Vocab,
    offsets: Vec<usize>,
    item_seq: Vec<Id>,
    time_seq: Vec<i64>,
}

impl Dataset {
    /// Builds a dataset from one `(items, timestamps)` sequence per user, in dense-user order
    /// (`sequences[0]` belongs to user 1).
    ///
    /// Checks the invariants every consumer relies on: one sequence per user in the user
    /// vocabulary, items in `1..=items.len()`, equal lengths, non-decreasing timestamps.
    pub fn from_sequences(
        users: Vocab,
        items: Vocab,
        sequences: Vec<(Vec<Id>, Vec<i64>)>,
    ) -> Result<Self, String> {
        if sequences.len() != users.len() {
            return Err(format!(
                "{} sequences for {} users",
                sequences.len(),
                users.len()
            ));
        }
        let total: usize = sequences.iter().map(|(s, _)| s.len()).sum();
        let mut offsets = Vec::with_capacity(users.len() + 2);
        offsets.push(0);
        offsets.push(0);
        let mut item_seq = Vec::with_capacity(total);
        let mut time_seq = Vec::with_capacity(total);
        for (u, (seq, times)) in sequences.into_iter().enumerate() {
            if seq.len() != times.len() {
                return Err(format!(
                    "user {}: {} items but {} timestamps",
                    u + 1,
                    seq.len(),
                    times.len()
                ));
            }
            if let Some(&bad) = seq.iter().find(|&&i| i == PAD || i as usize > items.len()) {
                return Err(format!(
                    "user {}: item id {bad} outside 1..={}",
                    u + 1,
                    items.len()
                ));
            }
            if times.windows(2).any(|w| w[0] > w[1]) {
                return Err(format!("user {}: timestamps are not in time order", u + 1));
            }
            item_seq.extend_from_slice(&seq);
            time_seq.extend_from_slice(&times);
            offsets.push(item_seq.len());
        }
        Ok(Self {
            users,
            items,
            offsets,
            item_seq,
            time_seq,
        })
    }

    /// Builds a dataset from raw CSR parts without copying. Same checks as [`Dataset::from_sequences`].
    ///
    /// `offsets` has `users.len() + 2` entries, `offsets[0] == offsets[1] == 0` (the padding user).
    pub fn from_parts(
        users: Vocab,
        items: Vocab,
        offsets: Vec<usize>,
        item_seq: Vec<Id>,
        time_seq: Vec<i64>,
    ) -> Result<Self, String> {
        if offsets.len() != users.len() + 2 || offsets[0] != 0 || offsets[1] != 0 {
            return Err(format!(
                "offsets must have {} entries starting 0, 0",
                users.len() + 2
            ));
        }
        if offsets.windows(2).any(|w| w[0] > w[1]) || *offsets.last().unwrap() != item_seq.len() {
            return Err("offsets must be non-decreasing and end at the number of events".into());
        }
        if item_seq.len() != time_seq.len() {
            return Err(format!(
                "{} items but {} timestamps",
                item_seq.len(),
                time_seq.len()
            ));
        }
        if let Some(&bad) = item_seq
            .iter()
            .find(|&&i| i == PAD || i as usize > items.len())
        {
            return Err(format!("item id {bad} outside 1..={}", items.len()));
        }
        for u in 1..offsets.len() - 1 {
            if time_seq[offsets[u]..offsets[u + 1]]
                .windows(2)
                .any(|w| w[0] > w[1])
            {
                return Err(format!("user {u}: timestamps are not in time order"));
            }
        }
        Ok(Self {
            users,
            items,
            offsets,
            item_seq,
            time_seq,
        })
    }

    /// Number of users (dense user ids are `1..=n_users`).
    pub fn n_users(&self) -> usize {
        self.users.len()
    }

    /// Number of items (dense item ids are `1..=n_items`).
    pub fn n_items(&self) -> usize {
        self.items.len()
    }

    /// Total number of events.
    pub fn n_events(&self) -> usize {
        self.item_seq.len()
    }

    /// The items of user `u` in time order (empty for the padding user 0).
    pub fn items_of(&self, u: Id) -> &[Id] {
        let u = u as usize;
        &self.item_seq[self.offsets[u]..self.offsets[u + 1]]
    }

    /// The timestamps of user `u`'s events, parallel to [`Dataset::items_of`].
    pub fn times_of(&self, u: Id) -> &[i64] {
        let u = u as usize;
        &self.time_seq[self.offsets[u]..self.offsets[u + 1]]
    }

    /// Iterates over dense user ids `1..=n_users`.
    pub fn user_ids(&self) -> impl Iterator<Item = Id> + '_ {
        1..=self.n_users() as Id
    }

    /// Number of events per item, indexed by dense item id (entry 0, padding, is 0).
    pub fn item_counts(&self) -> Vec<u32> {
        let mut counts = vec![0u32; self.n_items() + 1];
        for &i in &self.item_seq {
            counts[i as usize] += 1;
        }
        counts
    }

    /// The CSR parts: `(offsets, items, timestamps)`.
    pub fn parts(&self) -> (&[usize], &[Id], &[i64]) {
        (&self.offsets, &self.item_seq, &self.time_seq)
    }
}
