//! [`Recommender`]: a trained model plus its [`Catalog`] (original item ids, titles), answering top-k
//! queries with explanations. No HTTP here: the server and `cargo xtask recommend` both use it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use seqrec_data::Dataset;
use seqrec_models::{Model, Precision};
use serde::Serialize;

use crate::ServeError;

/// The items a model knows: dense ids `1..=n_items` (the model's) and the original ids of the log,
/// with optional titles, plus what a request needs to know about the model. Shared (`Arc`) between
/// the request handlers and the model worker.
#[derive(Debug)]
pub struct Catalog {
    /// `items[i - 1]` is the original id of dense item `i`.
    items: Vec<String>,
    index: HashMap<String, u32>,
    /// `titles[i]` for dense item `i` (index 0 unused); empty without metadata.
    titles: Vec<Option<String>>,
    model_name: &'static str,
    max_history: usize,
    recurrent: bool,
    model_id: String,
}

impl Catalog {
    /// A catalogue of `items` (original ids; dense id `i` is `items[i - 1]`).
    ///
    /// # Errors
    /// [`ServeError::Load`] if an id repeats.
    pub fn new(
        items: Vec<String>,
        model_name: &'static str,
        max_history: usize,
        recurrent: bool,
        model_id: String,
    ) -> Result<Self, ServeError> {
        let mut index = HashMap::with_capacity(items.len());
        for (i, id) in items.iter().enumerate() {
            if index.insert(id.clone(), i as u32 + 1).is_some() {
                return Err(ServeError::load(
                    "items.json",
                    format!("item id {id:?} appears twice"),
                ));
            }
        }
        Ok(Self {
            items,
            index,
            titles: Vec::new(),
            model_name,
            max_history,
            recurrent,
            model_id,
        })
    }

    /// Number of items.
    pub fn n_items(&self) -> usize {
        self.items.len()
    }

    /// The model's name (`sasrec`, `gru4rec`, ...).
    pub fn model_name(&self) -> &'static str {
        self.model_name
    }

    /// The identifier of the loaded checkpoint (model, run directory, best epoch).
    pub fn model_id(&self) -> &str {
        &self.model_id
    }

    /// The model's history window: longer histories are truncated to their most recent
    /// `max_history()` items before scoring.
    pub fn max_history(&self) -> usize {
        self.max_history
    }

    /// Whether the model keeps a per-user recurrent state (GRU4Rec).
    pub fn recurrent(&self) -> bool {
        self.recurrent
    }

    /// The dense id of an original item id.
    pub fn dense(&self, original: &str) -> Option<u32> {
        self.index.get(original).copied()
    }

    /// The original id of dense item `id` (`1..=n_items`).
    pub fn original(&self, id: u32) -> Option<&str> {
        self.items
            .get((id as usize).checked_sub(1)?)
            .map(String::as_str)
    }

    /// The title of dense item `id`, when metadata was loaded and names it.
    pub fn title(&self, id: u32) -> Option<&str> {
        self.titles.get(id as usize)?.as_deref()
    }

    /// Maps original ids to dense ids.
    ///
    /// # Errors
    /// [`ServeError::UnknownItem`] naming the first unknown id and its position.
    pub fn resolve<S: AsRef<str>>(&self, ids: &[S]) -> Result<Vec<u32>, ServeError> {
        ids.iter()
            .enumerate()
            .map(|(position, id)| {
                self.dense(id.as_ref())
                    .ok_or_else(|| ServeError::UnknownItem {
                        id: id.as_ref().to_owned(),
                        position,
                        n_items: self.n_items(),
                    })
            })
            .collect()
    }

    /// Reads titles from a MovieLens `movies.dat` (Latin-1 decoded); returns how many catalogue
    /// items got a title.
    ///
    /// # Errors
    /// [`ServeError::Load`] if the file cannot be read or parsed.
    pub fn load_titles(&mut self, movies: &Path) -> Result<usize, ServeError> {
        let list = seqrec_data::read_movies(movies).map_err(|e| ServeError::load(movies, e))?;
        let mut titles = vec![None; self.items.len() + 1];
        let mut found = 0;
        for m in list {
            if let Some(i) = self.dense(&m.id) {
                titles[i as usize] = Some(m.title);
                found += 1;
            }
        }
        self.titles = titles;
        Ok(found)
    }

    /// The model input for a history of dense ids: its last `max_history()` items, right-aligned and
    /// left-padded with 0 (the documented truncation).
    pub fn window(&self, history: &[u32]) -> Vec<u32> {
        let l = self.max_history;
        let mut w = vec![0u32; l];
        let take = history.len().min(l);
        w[l - take..].copy_from_slice(&history[history.len() - take..]);
        w
    }

    /// An item id as JSON: a number when the original id is a canonical unsigned integer (MovieLens),
    /// else a string.
    pub fn item_json(&self, id: u32) -> serde_json::Value {
        let s = self.original(id).unwrap_or("");
        match s.parse::<u64>() {
            Ok(n) if n.to_string() == s => serde_json::Value::from(n),
            _ => serde_json::Value::from(s),
        }
    }
}

/// Options of one top-k query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecOptions {
    /// How many items to return (fewer if the catalogue minus the excluded items is smaller).
    pub k: usize,
    /// Leave out items the history already holds.
    pub exclude_seen: bool,
}

/// One recommended item.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Recommendation {
    /// Dense item id.
    pub item: u32,
    /// The model's score.
    pub score: f32,
}

/// How much one history position drove a recommendation.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Contribution {
    /// 0-based position in the full history given.
    pub position: usize,
    /// Dense id of the history item.
    pub item: u32,
    /// Occlusion: score of the recommended item minus its score without this position. Attention:
    /// the weight of this position.
    pub value: f32,
}

/// Why an item was recommended: contributions of the history positions the model read, largest
/// first.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Explanation {
    /// The recommended item (dense id).
    pub item: u32,
    /// Score drop when each position is removed (every model).
    pub occlusion: Vec<Contribution>,
    /// Last-layer attention of the last position, averaged over heads (attention models only; the
    /// same for every recommended item of a query).
    pub attention: Option<Vec<Contribution>>,
}

/// Up to this `k`, [`top_k`] keeps a sorted list of the best `k` while it scans the row; larger `k`
/// selects among all candidates.
const SCAN_MAX_K: usize = 64;

/// Indices of the `k` largest scores of `row` (column 0, padding, never), best first; ties broken
/// by the smaller id; NaN ranks below everything. `skip` lists dense ids to leave out.
///
/// For `k <= 64` (every serving default) one pass over the row keeps the best `k` so far in a sorted
/// list: a score enters only if it beats the current `k`-th, which after the first few hundred items
/// is rare, so most blocks of 16 scores cost one vectorised compare; it allocates the exclusion mask
/// and the answer.
pub fn top_k(row: &[f32], k: usize, skip: &[u32]) -> Vec<Recommendation> {
    let mut excluded = vec![false; row.len()];
    if let Some(e) = excluded.first_mut() {
        *e = true;
    }
    for &s in skip {
        if let Some(e) = excluded.get_mut(s as usize) {
            *e = true;
        }
    }
    let key = |i: usize| {
        let s = row[i];
        if s.is_nan() { f32::NEG_INFINITY } else { s }
    };
    let recommendation = |i: usize| Recommendation {
        item: i as u32,
        score: row[i],
    };
    if k == 0 {
        return Vec::new();
    }
    if k <= SCAN_MAX_K {
        // best: (key, id), best first; equal keys keep scan (= id) order, so an equal key never
        // displaces an earlier id.
        let mut best: Vec<(f32, usize)> = Vec::with_capacity(k + 1);
        let offer = |i: usize, best: &mut Vec<(f32, usize)>| {
            if excluded[i] {
                return;
            }
            let s = key(i);
            if best.len() == k {
                if s.total_cmp(&best[k - 1].0).is_le() {
                    return;
                }
                best.pop();
            }
            let at = best.partition_point(|&(b, _)| b.total_cmp(&s).is_ge());
            best.insert(at, (s, i));
        };
        // Once `best` is full, a block of 16 scores none of which is >= the k-th best key is
        // skipped whole (a vectorised compare): an item enters only if its key beats the k-th in
        // the total order, which implies >= for a non-NaN score, and a NaN key (-inf) never does.
        for (b, block) in row.chunks(16).enumerate() {
            if best.len() == k {
                let worst = best[k - 1].0;
                if !block.iter().fold(false, |a, &x| a | (x >= worst)) {
                    continue;
                }
            }
            for j in 16 * b..16 * b + block.len() {
                offer(j, &mut best);
            }
        }
        return best.into_iter().map(|(_, i)| recommendation(i)).collect();
    }
    let mut cand: Vec<usize> = (0..row.len()).filter(|&i| !excluded[i]).collect();
    let cmp = |a: &usize, b: &usize| key(*b).total_cmp(&key(*a)).then(a.cmp(b));
    let k = k.min(cand.len());
    if k == 0 {
        return Vec::new();
    }
    if k < cand.len() {
        cand.select_nth_unstable_by(k - 1, cmp);
        cand.truncate(k);
    }
    cand.sort_unstable_by(cmp);
    cand.into_iter().map(recommendation).collect()
}

/// Options of [`Recommender::load`].
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// A MovieLens `movies.dat` giving titles.
    pub items: Option<PathBuf>,
    /// The arithmetic of the model's serving forward (`f32` by default; `bf16` on AMX tiles for
    /// SASRec, see `docs/serving.md`).
    pub precision: Precision,
}

/// A model loaded from a run directory, with its catalogue and (for `--user`) the dataset.
pub struct Recommender {
    model: Box<dyn Model>,
    catalog: Arc<Catalog>,
    dataset: Option<Dataset>,
    scores: Vec<f32>,
}

impl std::fmt::Debug for Recommender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recommender")
            .field("model_id", &self.catalog.model_id)
            .field("n_items", &self.catalog.n_items())
            .finish()
    }
}

/// The best checkpoint of a run (or its `.old` copy when a crash interrupted the swap).
fn best_dir(run: &Path) -> Result<PathBuf, ServeError> {
    [run.join("best"), run.join(".best.old")]
        .into_iter()
        .find(|p| p.is_dir())
        .ok_or_else(|| {
            ServeError::load(run, "no best/ checkpoint (has the run finished an epoch?)")
        })
}

impl Recommender {
    /// Loads the best checkpoint of the run in `run`: its config rebuilds the model (the dataset is
    /// read through the cache named in the config), `best/` restores the parameters, and
    /// `best/items.json` maps dense ids to original ids.
    ///
    /// # Errors
    /// [`ServeError::Load`] naming the file that is missing or does not match.
    pub fn load(run: &Path, opts: &LoadOptions) -> Result<Self, ServeError> {
        let cfg = seqrec_train::run::resume_config(run).map_err(|e| ServeError::load(run, e))?;
        let best = best_dir(run)?;
        let exp = seqrec_train::Experiment::load(&cfg).map_err(|e| ServeError::load(run, e))?;
        let train = exp.train().map_err(|e| ServeError::load(run, e))?;
        let mut model = cfg
            .model
            .build(&train, cfg.train.seed)
            .map_err(|e| ServeError::load(run, e))?;
        model.load(&best).map_err(|e| ServeError::load(&best, e))?;
        model
            .set_serving_precision(opts.precision)
            .map_err(|e| ServeError::load(run, e))?;
        let items_path = best.join("items.json");
        let items: Vec<String> = std::fs::read(&items_path)
            .map_err(|e| ServeError::load(&items_path, e))
            .and_then(|b| {
                serde_json::from_slice(&b).map_err(|e| ServeError::load(&items_path, e))
            })?;
        if items.len() != model.n_items() {
            return Err(ServeError::load(
                &items_path,
                format!("{} items, the model has {}", items.len(), model.n_items()),
            ));
        }
        let epoch = std::fs::read(best.join("best.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["epoch"].as_u64());
        let run_name = run
            .canonicalize()
            .unwrap_or_else(|_| run.to_owned())
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut model_id = match epoch {
            Some(e) => format!("{}/{run_name}/epoch-{e}", model.name()),
            None => format!("{}/{run_name}", model.name()),
        };
        if opts.precision != Precision::F32 {
            model_id = format!("{model_id}@{}", opts.precision);
        }
        drop(train);
        let mut rec = Self::from_model(model, items, model_id)?;
        rec.dataset = Some(exp.ds);
        if let Some(movies) = &opts.items {
            let cat = Arc::get_mut(&mut rec.catalog).expect("not shared yet");
            cat.load_titles(movies)?;
        }
        Ok(rec)
    }

    /// A recommender around an already built model (tests, custom models).
    ///
    /// # Errors
    /// [`ServeError::Load`] if `items` does not match the model or repeats an id.
    pub fn from_model(
        mut model: Box<dyn Model>,
        items: Vec<String>,
        model_id: String,
    ) -> Result<Self, ServeError> {
        if items.len() != model.n_items() {
            return Err(ServeError::load(
                "items",
                format!("{} items, the model has {}", items.len(), model.n_items()),
            ));
        }
        let recurrent = model.recurrent().is_some();
        let catalog = Catalog::new(
            items,
            model.name(),
            model.max_history(),
            recurrent,
            model_id,
        )?;
        Ok(Self {
            model,
            catalog: Arc::new(catalog),
            dataset: None,
            scores: Vec::new(),
        })
    }

    /// The catalogue (shared).
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// The model.
    pub fn model_mut(&mut self) -> &mut dyn Model {
        self.model.as_mut()
    }

    /// The whole history of a user of the run's dataset (original user id), oldest first.
    ///
    /// # Errors
    /// [`ServeError::UnknownUser`] if the dataset has no such user or was not loaded.
    pub fn user_history(&self, user: &str) -> Result<&[u32], ServeError> {
        let ds = self
            .dataset
            .as_ref()
            .ok_or_else(|| ServeError::UnknownUser(user.to_owned()))?;
        let u = ds
            .users
            .get(user)
            .ok_or_else(|| ServeError::UnknownUser(user.to_owned()))?;
        Ok(ds.items_of(u))
    }

    /// Checks `k` against the catalogue: `1..=n_items`.
    ///
    /// # Errors
    /// [`ServeError::BadK`].
    pub fn check_k(&self, k: i64) -> Result<usize, ServeError> {
        let max = self.catalog.n_items();
        if k < 1 || k as u64 > max as u64 {
            return Err(ServeError::BadK { k, max });
        }
        Ok(k as usize)
    }

    /// Scores windows `[batch, max_history]` into the internal buffer and returns it.
    fn score_windows(&mut self, windows: &[u32], batch: usize) -> &[f32] {
        let cols = self.catalog.n_items() + 1;
        self.scores.resize(batch * cols, 0.0);
        self.model
            .score_serving(windows, batch, &mut self.scores[..batch * cols]);
        &self.scores[..batch * cols]
    }

    /// The top-k items for one history of dense ids (oldest first; truncated to the model's window).
    ///
    /// # Errors
    /// [`ServeError::EmptyHistory`] for an empty history, [`ServeError::BadK`] for `k = 0`.
    pub fn recommend(
        &mut self,
        history: &[u32],
        opts: RecOptions,
    ) -> Result<Vec<Recommendation>, ServeError> {
        Ok(self
            .recommend_batch(&[(history, opts)])?
            .pop()
            .expect("one query"))
    }

    /// Top-k for several histories with ONE call to [`Model::score`] (micro-batching).
    ///
    /// # Errors
    /// As [`Recommender::recommend`], for the first bad query.
    pub fn recommend_batch(
        &mut self,
        queries: &[(&[u32], RecOptions)],
    ) -> Result<Vec<Vec<Recommendation>>, ServeError> {
        let l = self.catalog.max_history();
        let mut windows = Vec::with_capacity(queries.len() * l);
        for (h, o) in queries {
            if h.is_empty() {
                return Err(ServeError::EmptyHistory);
            }
            self.check_k(o.k as i64)?;
            let n = self.catalog.n_items() as u32;
            if let Some(p) = h.iter().position(|&i| i == 0 || i > n) {
                return Err(ServeError::UnknownItem {
                    id: h[p].to_string(),
                    position: p,
                    n_items: n as usize,
                });
            }
            windows.extend(self.catalog.window(h));
        }
        let cols = self.catalog.n_items() + 1;
        let scores = self.score_windows(&windows, queries.len());
        Ok(queries
            .iter()
            .zip(scores.chunks_exact(cols))
            .map(|((h, o), row)| top_k(row, o.k, if o.exclude_seen { h } else { &[] }))
            .collect())
    }

    /// Explains recommendations `recs` of `history` (dense ids, oldest first).
    ///
    /// Occlusion: the window the model reads and, for each of its positions, the window without that
    /// position are scored in ONE [`Model::score`] call; a position's contribution to item `r` is
    /// `score(r | window) - score(r | window without it)`. Attention (when the model has it, see
    /// [`Model::last_attention`]) is the last layer's weight of each position. Contributions are
    /// sorted largest first; positions refer to `history`.
    ///
    /// # Errors
    /// [`ServeError::EmptyHistory`] for an empty history.
    pub fn explain(
        &mut self,
        history: &[u32],
        recs: &[u32],
    ) -> Result<Vec<Explanation>, ServeError> {
        if history.is_empty() {
            return Err(ServeError::EmptyHistory);
        }
        let l = self.catalog.max_history();
        let full = self.catalog.window(history);
        let n = history.len().min(l);
        let offset = history.len() - n; // history position of window slot l - n
        let mut windows = Vec::with_capacity((n + 1) * l);
        windows.extend_from_slice(&full);
        let real = &full[l - n..];
        for j in 0..n {
            // The window without slot j, right-aligned again (one more padding slot in front).
            let mut w = vec![0u32; l];
            let rest: Vec<u32> = real
                .iter()
                .enumerate()
                .filter(|&(i, _)| i != j)
                .map(|(_, &x)| x)
                .collect();
            w[l - rest.len()..].copy_from_slice(&rest);
            windows.extend(w);
        }
        let cols = self.catalog.n_items() + 1;
        let scores = self.score_windows(&windows, n + 1).to_vec();
        let attention = self.model.last_attention(&full).map(|w| {
            let mut c: Vec<Contribution> = (0..n)
                .map(|j| Contribution {
                    position: offset + j,
                    item: real[j],
                    value: w[l - n + j],
                })
                .collect();
            sort_contributions(&mut c);
            c
        });
        Ok(recs
            .iter()
            .map(|&r| {
                let base = scores[r as usize];
                let mut occlusion: Vec<Contribution> = (0..n)
                    .map(|j| Contribution {
                        position: offset + j,
                        item: real[j],
                        value: base - scores[(j + 1) * cols + r as usize],
                    })
                    .collect();
                sort_contributions(&mut occlusion);
                Explanation {
                    item: r,
                    occlusion,
                    attention: attention.clone(),
                }
            })
            .collect())
    }
}

/// Largest value first; ties by the later (more recent) position first.
fn sort_contributions(c: &mut [Contribution]) {
    c.sort_by(|a, b| {
        b.value
            .total_cmp(&a.value)
            .then(b.position.cmp(&a.position))
    });
}
