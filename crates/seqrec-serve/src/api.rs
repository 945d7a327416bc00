//! Request decoding and response encoding of the HTTP API, kept apart from the server so they can be
//! tested (and fuzzed) without sockets. Every decoding error is a [`ServeError::BadRequest`] (or
//! another 4xx variant) saying what was wrong.

use std::borrow::Cow;
use std::marker::PhantomData;
use std::path::PathBuf;

use serde::Deserialize;
use serde::de::{Deserializer, Visitor};
use serde_json::{Map, Value, json};

use crate::ServeError;
use crate::engine::Answer;
use crate::recommender::{Catalog, Contribution};

/// Longest accepted item or user id, in bytes.
pub const MAX_ID_BYTES: usize = 256;
/// Contributions listed per recommended item in an HTTP explanation.
pub const EXPLAIN_TOP: usize = 5;

/// `POST /v1/recommend` body.
#[derive(Clone, Debug, PartialEq)]
pub struct RecommendRequest {
    /// Original item ids, oldest first.
    pub history: Vec<String>,
    /// Requested `k` (checked against the catalogue later; default 10).
    pub k: i64,
    /// Leave out seen items (default true).
    pub exclude_seen: bool,
    /// Explain each recommendation (default false).
    pub explain: bool,
}

/// `POST /v1/recommend` body as [`decode_recommend_borrowed`] gives it: item ids borrowed from the
/// request body where JSON allows it (a string without escapes).
#[derive(Clone, Debug, PartialEq)]
pub struct RecommendRequestRef<'a> {
    /// Original item ids, oldest first.
    pub history: Vec<Cow<'a, str>>,
    /// Requested `k` (checked against the catalogue later; default 10).
    pub k: i64,
    /// Leave out seen items (default true).
    pub exclude_seen: bool,
    /// Explain each recommendation (default false).
    pub explain: bool,
}

/// `POST /v1/users/{user}/events` body.
#[derive(Clone, Debug, PartialEq)]
pub struct EventRequest {
    /// Original item id.
    pub item: String,
    /// Unix seconds (default: now).
    pub timestamp: Option<i64>,
}

fn bad(msg: impl Into<String>) -> ServeError {
    ServeError::BadRequest(msg.into())
}

fn object(body: &[u8]) -> Result<Map<String, Value>, ServeError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| bad(format!("malformed JSON: {e}")))?;
    match v {
        Value::Object(m) => Ok(m),
        other => Err(bad(format!(
            "the body must be a JSON object, got {}",
            kind(&other)
        ))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn check_keys(m: &Map<String, Value>, allowed: &[&str]) -> Result<(), ServeError> {
    for k in m.keys() {
        if !allowed.contains(&k.as_str()) {
            return Err(bad(format!(
                "unknown field {k:?} (expected {})",
                allowed.join(", ")
            )));
        }
    }
    Ok(())
}

/// An item id: a non-negative integer or a non-empty string of at most [`MAX_ID_BYTES`] bytes.
pub fn item_id(v: &Value, what: &dyn std::fmt::Display) -> Result<String, ServeError> {
    match v {
        Value::Number(n) => match n.as_u64() {
            Some(u) => Ok(u.to_string()),
            None => Err(bad(format!(
                "{what}: item ids are non-negative integers or strings, got {n}"
            ))),
        },
        Value::String(s) if s.is_empty() => Err(bad(format!("{what}: empty item id"))),
        Value::String(s) if s.len() > MAX_ID_BYTES => Err(bad(format!(
            "{what}: item id longer than {MAX_ID_BYTES} bytes"
        ))),
        Value::String(s) => Ok(s.clone()),
        other => Err(bad(format!(
            "{what}: item ids are non-negative integers or strings, got {}",
            kind(other)
        ))),
    }
}

fn boolean(m: &Map<String, Value>, key: &str, default: bool) -> Result<bool, ServeError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(bad(format!("{key} must be a boolean, got {}", kind(other)))),
    }
}

fn integer(m: &Map<String, Value>, key: &str) -> Result<Option<i64>, ServeError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| bad(format!("{key} must be an integer, got {n}"))),
        Some(other) => Err(bad(format!(
            "{key} must be an integer, got {}",
            kind(other)
        ))),
    }
}

/// Decodes a `POST /v1/recommend` body; `max_items` bounds the history length.
///
/// # Errors
/// [`ServeError::BadRequest`] for malformed JSON, wrong types or unknown fields;
/// [`ServeError::EmptyHistory`]; [`ServeError::HistoryTooLong`].
pub fn decode_recommend(body: &[u8], max_items: usize) -> Result<RecommendRequest, ServeError> {
    let m = object(body)?;
    check_keys(&m, &["history", "k", "exclude_seen", "explain"])?;
    let history = match m.get("history") {
        None => return Err(bad("missing field \"history\" (an array of item ids)")),
        Some(Value::Array(a)) => a,
        Some(other) => {
            return Err(bad(format!(
                "history must be an array of item ids, got {}",
                kind(other)
            )));
        }
    };
    if history.is_empty() {
        return Err(ServeError::EmptyHistory);
    }
    if history.len() > max_items {
        return Err(ServeError::HistoryTooLong {
            len: history.len(),
            max: max_items,
        });
    }
    let history = history
        .iter()
        .enumerate()
        // The label is formatted only for an error (it used to cost a `format!` per item).
        .map(|(i, v)| item_id(v, &format_args!("history[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RecommendRequest {
        history,
        k: integer(&m, "k")?.unwrap_or(10),
        exclude_seen: boolean(&m, "exclude_seen", true)?,
        explain: boolean(&m, "explain", false)?,
    })
}

/// The usual `POST /v1/recommend` body, read straight into typed fields (no JSON tree, string ids
/// borrowed): anything unusual fails here and goes to [`decode_recommend`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FastRecommend<'a> {
    #[serde(borrow)]
    history: Vec<FastId<'a>>,
    // A missing `Option` field is `None`.
    k: Option<i64>,
    exclude_seen: Option<bool>,
    explain: Option<bool>,
}

/// An item id as [`item_id`] reads it (a non-negative integer, written in decimal, or a string),
/// before the checks on its length.
struct FastId<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for FastId<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Id<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for Id<'a> {
            type Value = Cow<'a, str>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an item id (a non-negative integer or a string)")
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v.to_string()))
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Cow::Borrowed(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v.to_owned()))
            }
        }
        d.deserialize_any(Id(PhantomData)).map(FastId)
    }
}

/// [`decode_recommend`] without building a JSON tree and copying every id: a body of the usual
/// shape (an object with `history` and optional `k`, `exclude_seen`, `explain`, valid ids) is read
/// straight into the request, its string ids borrowed from `body`. Any other body (malformed, not
/// an object, wrong types, unknown or repeated fields, empty, over-long or bad ids) is decoded
/// again by [`decode_recommend`], so the answer, and every error message, is the same as
/// `decode_recommend`'s.
///
/// # Errors
/// As [`decode_recommend`].
pub fn decode_recommend_borrowed(
    body: &[u8],
    max_items: usize,
) -> Result<RecommendRequestRef<'_>, ServeError> {
    // A struct also deserializes from a JSON array of its fields: only objects take the fast path.
    let is_object = body.trim_ascii_start().first() == Some(&b'{');
    if is_object && let Ok(fast) = serde_json::from_slice::<FastRecommend<'_>>(body) {
        let ids_ok = fast
            .history
            .iter()
            .all(|id| !id.0.is_empty() && id.0.len() <= MAX_ID_BYTES);
        if ids_ok && !fast.history.is_empty() && fast.history.len() <= max_items {
            return Ok(RecommendRequestRef {
                history: fast.history.into_iter().map(|id| id.0).collect(),
                k: fast.k.unwrap_or(10),
                exclude_seen: fast.exclude_seen.unwrap_or(true),
                explain: fast.explain.unwrap_or(false),
            });
        }
    }
    let slow = decode_recommend(body, max_items)?;
    Ok(RecommendRequestRef {
        history: slow.history.into_iter().map(Cow::Owned).collect(),
        k: slow.k,
        exclude_seen: slow.exclude_seen,
        explain: slow.explain,
    })
}

/// Decodes a `POST /v1/users/{user}/events` body.
///
/// # Errors
/// [`ServeError::BadRequest`] saying what was wrong.
pub fn decode_event(body: &[u8]) -> Result<EventRequest, ServeError> {
    let m = object(body)?;
    check_keys(&m, &["item", "timestamp"])?;
    let item = match m.get("item") {
        None => return Err(bad("missing field \"item\"")),
        Some(v) => item_id(v, &"item")?,
    };
    Ok(EventRequest {
        item,
        timestamp: integer(&m, "timestamp")?,
    })
}

/// Decodes a `POST /v1/admin/reload` body: empty, `null`, or `{"run": "<dir>"}`.
///
/// # Errors
/// [`ServeError::BadRequest`] saying what was wrong.
pub fn decode_reload(body: &[u8]) -> Result<Option<PathBuf>, ServeError> {
    if body.iter().all(u8::is_ascii_whitespace) || body.trim_ascii() == b"null" {
        return Ok(None);
    }
    let m = object(body)?;
    check_keys(&m, &["run"])?;
    match m.get("run") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(PathBuf::from(s))),
        Some(other) => Err(bad(format!(
            "run must be a non-empty string (a run directory), got {}",
            kind(other)
        ))),
    }
}

/// The query string of `GET /v1/users/{user}/recommendations`: `k` (default 10), `exclude_seen`
/// (default true), `explain` (default false).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecsQuery {
    /// Requested `k`.
    pub k: i64,
    /// Leave out seen items.
    pub exclude_seen: bool,
    /// Explain.
    pub explain: bool,
}

/// Decodes the query string (`None`: no `?`).
///
/// # Errors
/// [`ServeError::BadRequest`] for an unknown key or a value that does not parse.
pub fn decode_query(q: Option<&str>) -> Result<RecsQuery, ServeError> {
    let mut out = RecsQuery {
        k: 10,
        exclude_seen: true,
        explain: false,
    };
    for pair in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let flag = |v: &str| match v {
            "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            _ => Err(bad(format!("{key} must be true or false, got {v:?}"))),
        };
        match key {
            "k" => {
                out.k = value
                    .parse()
                    .map_err(|_| bad(format!("k must be an integer, got {value:?}")))?
            }
            "exclude_seen" => out.exclude_seen = flag(value)?,
            "explain" => out.explain = flag(value)?,
            _ => {
                return Err(bad(format!(
                    "unknown query parameter {key:?} (expected k, exclude_seen, explain)"
                )));
            }
        }
    }
    Ok(out)
}

/// Checks `k` against the catalogue: `1..=min(n_items, 1000)`.
///
/// # Errors
/// [`ServeError::BadK`].
pub fn check_k(k: i64, catalog: &Catalog) -> Result<usize, ServeError> {
    let max = catalog.n_items().min(1000);
    if k < 1 || k > max as i64 {
        return Err(ServeError::BadK { k, max });
    }
    Ok(k as usize)
}

fn contributions(cat: &Catalog, c: &[Contribution], value_name: &str) -> Value {
    Value::Array(
        c.iter()
            .take(EXPLAIN_TOP)
            .map(|c| {
                let mut o = Map::new();
                o.insert("item".into(), cat.item_json(c.item));
                o.insert("position".into(), json!(c.position));
                o.insert(value_name.into(), json!(c.value));
                if let Some(t) = cat.title(c.item) {
                    o.insert("title".into(), json!(t));
                }
                Value::Object(o)
            })
            .collect(),
    )
}

/// The JSON response of a recommendation: `{"model_id", "history_used", "truncated", "items": [{"item",
/// "score", "title"?, "explanation"?}]}`.
pub fn encode_answer(cat: &Catalog, history_len: usize, ans: &Answer) -> Value {
    let items: Vec<Value> = ans
        .recs
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut o = Map::new();
            o.insert("item".into(), cat.item_json(r.item));
            o.insert("score".into(), json!(r.score));
            if let Some(t) = cat.title(r.item) {
                o.insert("title".into(), json!(t));
            }
            if let Some(ex) = ans.explanations.as_ref().and_then(|e| e.get(i)) {
                let mut e = Map::new();
                e.insert(
                    "occlusion".into(),
                    contributions(cat, &ex.occlusion, "score_drop"),
                );
                if let Some(a) = &ex.attention {
                    e.insert("attention".into(), contributions(cat, a, "weight"));
                }
                o.insert("explanation".into(), Value::Object(e));
            }
            Value::Object(o)
        })
        .collect();
    json!({
        "model_id": cat.model_id(),
        "history_used": history_len.min(cat.max_history()),
        "truncated": history_len > cat.max_history(),
        "items": items,
    })
}

/// The JSON error body: `{"error": {"code", "message"}}`.
pub fn encode_error(code: &str, message: &str) -> Value {
    json!({"error": {"code": code, "message": message}})
}
