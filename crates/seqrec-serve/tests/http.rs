//! End to end over HTTP: the real server on an ephemeral loopback port, tiny models trained here.

mod common;

use std::path::PathBuf;
use std::sync::OnceLock;

use common::*;
use proptest::prelude::*;
use seqrec_serve::{LoadOptions, RecOptions, Recommender};
use serde_json::json;

/// Tiny runs shared by the tests of this file: (scratch dir, sasrec seed 1, sasrec seed 2, gru4rec).
fn runs() -> &'static (PathBuf, PathBuf, PathBuf, PathBuf) {
    static RUNS: OnceLock<(PathBuf, PathBuf, PathBuf, PathBuf)> = OnceLock::new();
    RUNS.get_or_init(|| {
        let dir = scratch("http-runs");
        let a = train_run(&dir, "sasrec-a", "sasrec", 1, 6);
        let b = train_run(&dir, "sasrec-b", "sasrec", 2, 2);
        let g = train_run(&dir, "gru", "gru4rec", 3, 4);
        (dir, a, b, g)
    })
}

#[test]
fn recommend_matches_the_library_and_truncates_long_histories() {
    let (_, run, _, _) = runs();
    let dir = scratch("http-recommend");
    let s = start(run, &dir, None);
    let mut c = client(&s);
    let (st, v) = post(
        &mut c,
        "/v1/recommend",
        &json!({"history": [101, "105", 120], "k": 5}),
    );
    assert_eq!(st, 200, "{v}");
    // The same query through the library, bit for bit.
    let mut rec = Recommender::load(run, &LoadOptions::default()).unwrap();
    let cat = rec.catalog().clone();
    let h = cat.resolve(&["101", "105", "120"]).unwrap();
    let want = rec
        .recommend(
            &h,
            RecOptions {
                k: 5,
                exclude_seen: true,
            },
        )
        .unwrap();
    let want_ids: Vec<u64> = want
        .iter()
        .map(|r| cat.original(r.item).unwrap().parse().unwrap())
        .collect();
    assert_eq!(items(&v), want_ids);
    // Scores are f32 in the model: the JSON number reads back to the same f32.
    let want_scores: Vec<f32> = want.iter().map(|r| r.score).collect();
    let got: Vec<f32> = scores(&v).iter().map(|&x| x as f32).collect();
    assert_eq!(got, want_scores);
    assert!(!items(&v).contains(&101) && !items(&v).contains(&120));
    assert_eq!(v["truncated"], false);
    assert_eq!(v["model_id"].as_str().unwrap(), cat.model_id());
    // 20 items: the model reads the last 12; the answer equals the one for those 12 (seen items are
    // excluded from the whole history in both, so compare without exclusion).
    let long: Vec<u64> = (0..20).map(|i| 101 + (i * 7) % 30).collect();
    let (st, v1) = post(
        &mut c,
        "/v1/recommend",
        &json!({"history": long, "k": 10, "exclude_seen": false}),
    );
    assert_eq!(st, 200);
    assert_eq!(
        (v1["truncated"].clone(), v1["history_used"].clone()),
        (json!(true), json!(12))
    );
    let (_, v2) = post(
        &mut c,
        "/v1/recommend",
        &json!({"history": long[8..], "k": 10, "exclude_seen": false}),
    );
    assert_eq!(items(&v1), items(&v2));
    // Explanations: one per item, occlusion and attention entries name history items.
    let (st, v) = post(
        &mut c,
        "/v1/recommend",
        &json!({"history": [120, 111, 127, 105], "k": 2, "explain": true}),
    );
    assert_eq!(st, 200);
    let ex = &v["items"][0]["explanation"];
    assert_eq!(ex["occlusion"].as_array().unwrap().len(), 4);
    assert_eq!(ex["attention"].as_array().unwrap().len(), 4);
    assert_eq!(ex["occlusion"][0]["item"], 105, "{ex}");
    s.shutdown().unwrap();
}

#[test]
fn events_then_recommendations_for_window_and_recurrent_models() {
    let (_, sasrec, _, gru) = runs();
    for (name, run) in [("sasrec", sasrec), ("gru4rec", gru)] {
        let dir = scratch(&format!("http-events-{name}"));
        let s = start(run, &dir, None);
        let mut c = client(&s);
        let (st, _) = get(&mut c, "/v1/users/alice/recommendations?k=5");
        assert_eq!(st, 404, "{name}: a user without events");
        let mut hist = Vec::new();
        for (t, item) in [104u64, 113, 122, 101, 110, 119, 128, 107]
            .into_iter()
            .enumerate()
        {
            let (st, v) = post(
                &mut c,
                "/v1/users/alice/events",
                &json!({"item": item, "timestamp": 1000 + t}),
            );
            assert_eq!((st, v["events"].as_u64()), (200, Some(t as u64 + 1)), "{v}");
            hist.push(item);
            // After every event: the user's recommendations equal a stateless query on the history
            // (for GRU4Rec, the incrementally stepped state against a full re-run).
            let (st, mine) = get(
                &mut c,
                "/v1/users/alice/recommendations?k=5&exclude_seen=false",
            );
            assert_eq!(st, 200, "{mine}");
            let (_, fresh) = post(
                &mut c,
                "/v1/recommend",
                &json!({"history": hist, "k": 5, "exclude_seen": false}),
            );
            assert_eq!(items(&mine), items(&fresh), "{name} after {} events", t + 1);
            for (a, b) in scores(&mine).iter().zip(scores(&fresh)) {
                assert!(
                    (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                    "{name}: {a} vs {b}"
                );
            }
        }
        // exclude_seen applies to the stored history.
        let (_, v) = get(&mut c, "/v1/users/alice/recommendations?k=10");
        assert!(items(&v).iter().all(|i| !hist.contains(i)), "{v}");
        assert_eq!(v["user"], "alice");
        assert_eq!(s.state().engine().catalog().model_name(), name);
        s.shutdown().unwrap();
    }
}

#[test]
fn auth_refusals_change_nothing() {
    let (_, run, other, _) = runs();
    let dir = scratch("http-auth");
    let s = start(run, &dir, Some("s3cret"));
    let mut c = client(&s);
    let before = get(&mut c, "/healthz").1["model_id"].clone();
    for headers in [
        vec![],
        vec![("authorization", "Bearer wrong")],
        vec![("authorization", "s3cret")],
    ] {
        let r = c
            .request(
                "POST",
                "/v1/users/bob/events",
                &headers,
                Some(br#"{"item": 101}"#),
            )
            .unwrap();
        assert_eq!(r.status, 401, "{}", r.text());
        assert_eq!(r.json()["error"]["code"], "unauthorized");
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
        let body = json!({"run": other}).to_string();
        let r = c
            .request("POST", "/v1/admin/reload", &headers, Some(body.as_bytes()))
            .unwrap();
        assert_eq!(r.status, 401);
    }
    // Nothing was stored, nothing reloaded.
    assert_eq!(get(&mut c, "/v1/users/bob/recommendations").0, 404);
    assert_eq!(get(&mut c, "/healthz").1["model_id"], before);
    // The read endpoint needs no token; the right token works.
    assert_eq!(
        post(&mut c, "/v1/recommend", &json!({"history": [101]})).0,
        200
    );
    let (st, v) = post_auth(
        &mut c,
        "/v1/users/bob/events",
        "s3cret",
        &json!({"item": 101}),
    );
    assert_eq!((st, v["events"].as_u64()), (200, Some(1)));
    s.shutdown().unwrap();
}

#[test]
fn every_bad_input_is_a_4xx_json_error() {
    let (_, run, _, _) = runs();
    let dir = scratch("http-bad");
    let mut cfg = server_config(run, &dir, None);
    cfg.body_limit = 4096;
    cfg.max_history_items = 100;
    let s = seqrec_serve::server::Server::start(cfg).unwrap();
    let mut c = client(&s);
    let cases: Vec<(&str, &str, &[u8], u16, &str)> = vec![
        (
            "POST",
            "/v1/recommend",
            br#"{"history": [101, 999]}"#,
            400,
            "unknown_item",
        ),
        (
            "POST",
            "/v1/recommend",
            br#"{"history": []}"#,
            400,
            "empty_history",
        ),
        (
            "POST",
            "/v1/recommend",
            br#"{"history": [101], "k": 0}"#,
            400,
            "bad_k",
        ),
        (
            "POST",
            "/v1/recommend",
            br#"{"history": [101], "k": 31}"#,
            400,
            "bad_k",
        ),
        (
            "POST",
            "/v1/recommend",
            br#"{"history": [101], "k": -3}"#,
            400,
            "bad_k",
        ),
        (
            "POST",
            "/v1/recommend",
            br#"{"history": [101], "k": 2.5}"#,
            400,
            "bad_request",
        ),
        (
            "POST",
            "/v1/recommend",
            br#"{"history": [101"#,
            400,
            "bad_request",
        ),
        ("POST", "/v1/recommend", b"", 400, "bad_request"),
        (
            "POST",
            "/v1/recommend",
            br#"[101, 102]"#,
            400,
            "bad_request",
        ),
        (
            "POST",
            "/v1/recommend",
            br#"{"history": [-1]}"#,
            400,
            "bad_request",
        ),
        (
            "POST",
            "/v1/recommend",
            br#"{"history": [1.5]}"#,
            400,
            "bad_request",
        ),
        (
            "POST",
            "/v1/recommend",
            br#"{"history": [null]}"#,
            400,
            "bad_request",
        ),
        (
            "POST",
            "/v1/recommend",
            br#"{"history": "101"}"#,
            400,
            "bad_request",
        ),
        (
            "POST",
            "/v1/recommend",
            br#"{"items": [101]}"#,
            400,
            "bad_request",
        ),
        (
            "POST",
            "/v1/recommend",
            br#"{"history": [101], "explain": "yes"}"#,
            400,
            "bad_request",
        ),
        ("POST", "/v1/recommend", b"\xff\xfe\x00", 400, "bad_request"),
        (
            "POST",
            "/v1/users/u1/events",
            br#"{"item": 999}"#,
            400,
            "unknown_item",
        ),
        ("POST", "/v1/users/u1/events", br#"{}"#, 400, "bad_request"),
        (
            "POST",
            "/v1/users/u1/events",
            br#"{"item": 101, "timestamp": "now"}"#,
            400,
            "bad_request",
        ),
        (
            "GET",
            "/v1/users/u1/recommendations?k=abc",
            b"",
            400,
            "bad_request",
        ),
        ("GET", "/v1/users/u1/recommendations?k=0", b"", 400, "bad_k"),
        (
            "GET",
            "/v1/users/u1/recommendations?color=red",
            b"",
            400,
            "bad_request",
        ),
        (
            "GET",
            "/v1/users/nobody/recommendations",
            b"",
            404,
            "unknown_user",
        ),
        (
            "POST",
            "/v1/admin/reload",
            br#"{"run": "/no/such/run"}"#,
            400,
            "bad_request",
        ),
        (
            "POST",
            "/v1/admin/reload",
            br#"{"run": 5}"#,
            400,
            "bad_request",
        ),
        ("GET", "/v1/recommend", b"", 405, "method_not_allowed"),
        ("GET", "/nope", b"", 404, "not_found"),
    ];
    for (method, path, body, status, code) in cases {
        let body = (method == "POST").then_some(body);
        let r = c.request(method, path, &[], body).unwrap();
        let v = r.json();
        assert_eq!(
            (r.status, v["error"]["code"].as_str()),
            (status, Some(code)),
            "{method} {path} {:?}: {}",
            body.map(String::from_utf8_lossy),
            r.text()
        );
        assert!(!v["error"]["message"].as_str().unwrap().is_empty());
    }
    // Over-long history (beyond the request limit) and over-size body.
    let long: Vec<u64> = (0..101).map(|i| 101 + i % 30).collect();
    let (st, v) = post(&mut c, "/v1/recommend", &json!({"history": long}));
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (400, Some("history_too_long"))
    );
    let big = format!(r#"{{"history": [101], "pad": "{}"}}"#, "x".repeat(5000));
    let r = c
        .request("POST", "/v1/recommend", &[], Some(big.as_bytes()))
        .unwrap();
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_str()),
        (413, Some("body_too_large"))
    );
    // The user u1 got no event from the refused writes.
    let mut c = client(&s);
    assert_eq!(get(&mut c, "/v1/users/u1/recommendations").0, 404);
    // Metrics count the 4xx by endpoint and status; no 5xx anywhere.
    let r = c.request("GET", "/metrics", &[], None).unwrap();
    let m = r.text();
    assert!(
        m.contains(r#"seqrec_http_requests_total{endpoint="/v1/recommend",status="400"}"#),
        "{m}"
    );
    assert!(
        m.contains(r#"seqrec_http_requests_total{endpoint="/v1/recommend",status="413"}"#),
        "{m}"
    );
    assert!(m.contains(
        "seqrec_http_request_duration_seconds_bucket{endpoint=\"/v1/recommend\",le=\"+Inf\"}"
    ));
    assert!(
        m.contains("seqrec_model_info{model=\"sasrec\",model_id=\"sasrec/sasrec-a/epoch-6\"} 1"),
        "{m}"
    );
    assert!(!m.contains("status=\"5"), "{m}");
    s.shutdown().unwrap();
}

#[test]
fn reload_under_concurrent_requests_fails_none() {
    let (_, a, b, _) = runs();
    let dir = scratch("http-reload");
    let s = start(a, &dir, Some("t"));
    let addr = s.addr();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut c = seqrec_serve::client::HttpClient::connect(addr).unwrap();
                let mut seen = std::collections::BTreeSet::new();
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) || n < 20 {
                    let h = json!({"history": [101 + w, 110, 120], "k": 5});
                    let (st, v) = post(&mut c, "/v1/recommend", &h);
                    assert_eq!(st, 200, "{v}");
                    assert_eq!(items(&v).len(), 5);
                    seen.insert(v["model_id"].as_str().unwrap().to_owned());
                    n += 1;
                }
                (n, seen)
            })
        })
        .collect();
    let mut c = client(&s);
    let mut ids = Vec::new();
    for target in [b, a, b] {
        std::thread::sleep(std::time::Duration::from_millis(30));
        let (st, v) = post_auth(&mut c, "/v1/admin/reload", "t", &json!({"run": target}));
        assert_eq!(st, 200, "{v}");
        ids.push(v["model_id"].as_str().unwrap().to_owned());
    }
    std::thread::sleep(std::time::Duration::from_millis(30));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut seen_all = std::collections::BTreeSet::new();
    for w in workers {
        let (n, seen) = w.join().unwrap();
        assert!(n >= 20);
        seen_all.extend(seen);
    }
    assert_eq!(
        ids,
        [
            "sasrec/sasrec-b/epoch-2",
            "sasrec/sasrec-a/epoch-6",
            "sasrec/sasrec-b/epoch-2"
        ]
    );
    assert!(seen_all.contains("sasrec/sasrec-b/epoch-2"), "{seen_all:?}");
    // An empty body reloads the run being served.
    let (st, v) = post_auth(&mut c, "/v1/admin/reload", "t", &json!(null));
    assert_eq!(
        (st, v["model_id"].as_str()),
        (200, Some("sasrec/sasrec-b/epoch-2"))
    );
    let r = c.request("GET", "/metrics", &[], None).unwrap();
    assert!(
        r.text().contains("seqrec_model_reloads_total 4"),
        "{}",
        r.text()
    );
    s.shutdown().unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Arbitrary bytes, and arbitrary JSON-ish values, as request bodies: never a 5xx, never a
    /// dropped connection.
    #[test]
    fn arbitrary_bodies_never_give_5xx(
        raw in prop::collection::vec(any::<u8>(), 0..200),
        hist in prop::collection::vec(prop_oneof![
            (0i64..200).prop_map(|x| json!(x)),
            "[a-z0-9]{0,4}".prop_map(|s| json!(s)),
            Just(json!(null)), Just(json!(-1)), Just(json!(1e300)), Just(json!([1]))], 0..14),
        k in prop_oneof![Just(json!(null)), (-5i64..40).prop_map(|x| json!(x)), Just(json!("10"))],
        path in prop_oneof![Just("/v1/recommend"), Just("/v1/users/p/events"), Just("/v1/admin/reload")],
    ) {
        static SERVER: OnceLock<seqrec_serve::server::Server> = OnceLock::new();
        let s = SERVER.get_or_init(|| {
            let (_, run, _, _) = runs();
            start(run, &scratch("http-fuzz"), None)
        });
        let mut c = client(s);
        let structured = json!({"history": hist, "k": k, "item": hist.first().cloned().unwrap_or(json!(1))});
        for body in [raw.clone(), structured.to_string().into_bytes()] {
            // Reload only with structured bodies that cannot name a run (a random one would reload).
            if path == "/v1/admin/reload" && serde_json::from_slice::<serde_json::Value>(&body)
                .map(|v| v.get("run").is_some()).unwrap_or(false) {
                continue;
            }
            let r = c.request("POST", path, &[], Some(&body)).unwrap();
            prop_assert!(r.status < 500, "{} {}: {}", path, r.status, r.text());
            if r.status != 200 {
                prop_assert!(r.json()["error"]["code"].is_string(), "{}", r.text());
            }
        }
    }

    /// The decoders alone, on many more inputs: Ok or a 4xx error, never a panic.
    #[test]
    fn decoders_never_panic(raw in prop::collection::vec(any::<u8>(), 0..300), q in ".{0,40}") {
        use seqrec_serve::api::*;
        for e in [
            decode_recommend(&raw, 100).err(),
            decode_recommend_borrowed(&raw, 100).err(),
            decode_event(&raw).err(),
            decode_reload(&raw).err(),
            decode_query(Some(&q)).err(),
        ].into_iter().flatten() {
            prop_assert!((400..500).contains(&e.status()), "{e}");
        }
    }

    /// The borrowing decoder of `POST /v1/recommend` gives what the JSON-tree decoder gives, answer
    /// or error message, on bodies built from valid and invalid pieces: every field in any order,
    /// missing, repeated or unknown, ids as strings (escaped too), integers, negatives, floats,
    /// empty or over-long, histories empty or over the limit, and arrays instead of objects.
    #[test]
    fn borrowed_recommend_decoder_agrees_with_the_tree_decoder(
        fields in prop::collection::vec((0usize..5, 0usize..14), 0..6),
        as_array in prop::bool::weighted(0.05),
    ) {
        use seqrec_serve::api::*;
        let long_id = format!("\"{}\"", "x".repeat(300));
        let many: Vec<String> = (0..101).map(|i| i.to_string()).collect();
        let many = format!("[{}]", many.join(","));
        let histories = [
            r#"["1", "2", "3"]"#, "[4, 5]", r#"["a\u0031", 7, "b"]"#, "[]", r#"[""]"#, "[-1]",
            "[1.5]", "[null]", r#""x""#, "null", r#"[{"a": 1}]"#, &format!("[{long_id}]"), &many,
            "[18446744073709551615]",
        ];
        let ks = ["5", "null", "-3", "1.5", r#""7""#, "true", "99999999999999999999", "0", "10",
            "3", "1e2", "[]", "2", "7"];
        let flags = ["true", "false", "null", "1", r#""yes""#, "true", "false", "true", "false",
            "null", "0", "[]", "true", "false"];
        let mut parts = Vec::new();
        for &(key, value) in &fields {
            parts.push(match key {
                0 => format!(r#""history": {}"#, histories[value]),
                1 => format!(r#""k": {}"#, ks[value]),
                2 => format!(r#""exclude_seen": {}"#, flags[value]),
                3 => format!(r#""explain": {}"#, flags[value]),
                _ => format!(r#""other": {}"#, ks[value]),
            });
        }
        let body = if as_array {
            format!("[{}]", parts.iter().map(|p| p.split_once(": ").unwrap().1).collect::<Vec<_>>().join(", "))
        } else {
            format!(" {{{}}}", parts.join(", "))
        };
        let tree = decode_recommend(body.as_bytes(), 100);
        let borrowed = decode_recommend_borrowed(body.as_bytes(), 100);
        match (tree, borrowed) {
            (Ok(t), Ok(b)) => {
                let ids: Vec<&str> = b.history.iter().map(|c| c.as_ref()).collect();
                prop_assert_eq!(&t.history, &ids, "{}", body);
                prop_assert_eq!((t.k, t.exclude_seen, t.explain), (b.k, b.exclude_seen, b.explain), "{}", body);
            }
            (Err(t), Err(b)) => prop_assert_eq!(t.to_string(), b.to_string(), "{}", body),
            (t, b) => prop_assert!(false, "{body}: tree {t:?}, borrowed {b:?}"),
        }
    }
}
