//! Golden tests against PyTorch fixtures (`scripts/fixtures_core.py`): `nn.Linear`, `nn.LayerNorm`,
//! `nn.Embedding(padding_idx=0)`, `F.cross_entropy(ignore_index=0)`, SASRec's masked
//! `F.binary_cross_entropy_with_logits`, and the sampled losses (log-Q softmax, BPR, BPR-max, gBCE)
//! written in PyTorch. Forward outputs, losses and every gradient match within 1e-5 (f32).

#[path = "fixtures/core/fixture.rs"]
mod fixture;

use fixture::{Fixture, assert_close};
use seqrec_nn::loss::{
    bce_with_logits, bpr, bpr_max, gbce, gbce_beta, sampled_softmax, softmax_cross_entropy,
};
use seqrec_nn::{Embedding, LayerNorm, LayerNormCache, Linear, Module, Padding, init::Rng};
use seqrec_tensor::Tensor;

const TOL: f64 = 1e-5;

/// Copies fixture tensors into the module's parameters by their PyTorch names.
fn load_params(m: &mut dyn Module<f32>, fx: &Fixture) {
    m.visit_params_mut(&mut |p| {
        assert_eq!(p.value.shape(), fx.shape(&p.name).as_slice(), "{}", p.name);
        p.value = fx.tensor(&p.name);
    });
}

fn check_grads(m: &dyn Module<f32>, fx: &Fixture) {
    m.visit_params(&mut |p| {
        assert_close(
            &format!("{}.grad", p.name),
            p.grad.as_slice(),
            fx.data(&format!("{}.grad", p.name)),
            TOL,
        )
    });
}

#[test]
fn linear_matches_torch() {
    let fx = Fixture::load("linear");
    let mut fc = Linear::<f32>::new("fc", 5, 3, true, &mut Rng::new(0));
    load_params(&mut fc, &fx);
    let x = fx.tensor("x");
    let mut y = Tensor::zeros(&[2, 4, 3]);
    fc.forward(&mut y, &x);
    assert_close("y", y.as_slice(), fx.data("y"), TOL);
    let mut dx = Tensor::zeros(x.shape());
    fc.zero_grad();
    fc.backward(Some(&mut dx), &fx.tensor("dy"), &x);
    assert_close("dx", dx.as_slice(), fx.data("dx"), TOL);
    check_grads(&fc, &fx);
}

#[test]
fn layernorm_matches_torch() {
    let fx = Fixture::load("layernorm");
    let mut ln = LayerNorm::<f32>::new("ln", 6, 1e-5);
    load_params(&mut ln, &fx);
    let x = fx.tensor("x");
    let mut y = Tensor::zeros(x.shape());
    let mut cache = LayerNormCache::new(x.rows());
    ln.forward(&mut y, &mut cache, &x);
    assert_close("y", y.as_slice(), fx.data("y"), TOL);
    let mut dx = Tensor::zeros(x.shape());
    ln.zero_grad();
    ln.backward(&mut dx, &fx.tensor("dy"), &x, &cache);
    assert_close("dx", dx.as_slice(), fx.data("dx"), TOL);
    check_grads(&ln, &fx);
}

#[test]
fn embedding_with_padding_and_repeated_ids_matches_torch() {
    let fx = Fixture::load("embedding");
    let mut emb =
        Embedding::<f32>::new("emb", 9, 4, 1.0, Padding::Skip(0), &mut Rng::new(0)).unwrap();
    // Our own init zeroes the padding row, as PyTorch's.
    assert!(emb.weight.value.as_slice()[..4].iter().all(|&v| v == 0.0));
    load_params(&mut emb, &fx);
    let ids = fx.ids("ids");
    let mut y = Tensor::zeros(&[2, 5, 4]);
    emb.forward(&mut y, &ids);
    assert_close("y", y.as_slice(), fx.data("y"), TOL);
    emb.zero_grad();
    emb.backward(&fx.tensor("dy"), &ids);
    check_grads(&emb, &fx);
}

#[test]
fn cross_entropy_with_ignore_index_matches_torch() {
    let fx = Fixture::load("cross_entropy");
    let logits = fx.tensor("logits");
    let targets = fx.ids("targets");
    let mut d = Tensor::zeros(logits.shape());
    let loss = softmax_cross_entropy(Some(&mut d), &logits, &targets, 0);
    assert_close("loss", &[loss], fx.data("loss"), TOL);
    assert_close("dlogits", d.as_slice(), fx.data("dlogits"), TOL);
    // The same in f64 arithmetic (the generic path).
    let mut d64 = Tensor::zeros(logits.shape());
    let loss64 = softmax_cross_entropy(Some(&mut d64), &logits.cast::<f64>(), &targets, 0);
    assert_close("loss (f64 path)", &[loss64 as f32], fx.data("loss"), TOL);
    assert_close(
        "dlogits (f64 path)",
        &d64.cast::<f32>().to_vec(),
        fx.data("dlogits"),
        TOL,
    );
}

#[test]
fn masked_bce_matches_sasrec_pytorch() {
    let fx = Fixture::load("bce");
    let (pos, neg) = (fx.data("pos"), fx.data("neg"));
    let n = pos.len();
    let logits = Tensor::from_fn(
        &[n, 2],
        |i| if i % 2 == 0 { pos[i / 2] } else { neg[i / 2] } as f32,
    );
    let valid: Vec<bool> = fx.ids("mask").iter().map(|&m| m == 1).collect();
    let mut d = Tensor::zeros(&[n, 2]);
    let loss = bce_with_logits(Some(&mut d), &logits, &valid);
    assert_close("loss", &[loss], fx.data("loss"), TOL);
    let dpos: Vec<f32> = d.as_slice().iter().step_by(2).copied().collect();
    let dneg: Vec<f32> = d.as_slice().iter().skip(1).step_by(2).copied().collect();
    assert_close("dpos", &dpos, fx.data("dpos"), TOL);
    assert_close("dneg", &dneg, fx.data("dneg"), TOL);
}

#[test]
fn sampled_losses_match_torch_formulas() {
    let fx = Fixture::load("sampled_losses");
    let logits = fx.tensor("logits");
    let valid: Vec<bool> = fx.ids("mask").iter().map(|&m| m == 1).collect();
    let log_q = fx.tensor("log_q");
    let k = logits.cols() - 1;
    let beta = gbce_beta(k, fx.scalar("gbce.num_items") as usize, fx.scalar("gbce.t")).unwrap();
    assert!((beta - fx.scalar("gbce.beta")).abs() < 1e-12, "beta {beta}");
    type LossFn<'a> = Box<dyn Fn(&mut Tensor<f32>) -> f32 + 'a>;
    let cases: Vec<(&str, LossFn)> = vec![
        (
            "sampled_softmax",
            Box::new(|d| sampled_softmax(Some(d), &logits, Some(&log_q), &valid)),
        ),
        ("bpr", Box::new(|d| bpr(Some(d), &logits, &valid))),
        (
            "bpr_max",
            Box::new(|d| bpr_max(Some(d), &logits, &valid, fx.scalar("bpr_max.reg"))),
        ),
        ("gbce", Box::new(|d| gbce(Some(d), &logits, &valid, beta))),
    ];
    for (name, f) in cases {
        let mut d = Tensor::zeros(logits.shape());
        let loss = f(&mut d);
        assert_close(
            &format!("{name}.loss"),
            &[loss],
            fx.data(&format!("{name}.loss")),
            TOL,
        );
        assert_close(
            &format!("{name}.dlogits"),
            d.as_slice(),
            fx.data(&format!("{name}.dlogits")),
            TOL,
        );
    }
}
