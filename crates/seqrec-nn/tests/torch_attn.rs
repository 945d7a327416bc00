//! Golden tests against PyTorch 2.15 (fixtures from `scripts/fixtures_attn.py`): forward outputs,
//! attention weights, the loss `sum(out * r)` and every gradient of `nn.MultiheadAttention`,
//! `nn.TransformerEncoderLayer` (post-LN and `norm_first=True`, ReLU and GELU), SASRec.pytorch's
//! two-block `log2feats` stack and an additive attention pooling, all in f32 within 1e-5
//! (relative + absolute, per element).

use std::collections::HashMap;
use std::path::PathBuf;

use seqrec_nn::init::Rng;
use seqrec_nn::{
    Activation, AttentionMask, AttentionPooling, AttentionPoolingCache, AttentionPoolingConfig,
    MhaCache, MhaConfig, Module, MultiheadAttention, NormPlacement, Phase, TransformerBlock,
    TransformerBlockCache, TransformerBlockConfig, TransformerEncoder, TransformerEncoderCache,
};
use seqrec_tensor::{Gelu, Tensor, Tolerance};

const TOL: Tolerance = Tolerance {
    relative: 1e-5,
    absolute: 1e-5,
};

struct Fixture {
    name: String,
    tensors: HashMap<String, Tensor<f32>>,
}

impl Fixture {
    fn load(name: &str) -> Self {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/attn")
            .join(format!("{name}.json"));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run scripts/fixtures_attn.py)", path.display()));
        let json: serde_json::Value = serde_json::from_str(&text).expect("fixture is JSON");
        let mut tensors = HashMap::new();
        for (k, v) in json.as_object().expect("fixture is an object") {
            let shape: Vec<usize> = v["shape"]
                .as_array()
                .expect("shape")
                .iter()
                .map(|s| s.as_u64().expect("shape entry") as usize)
                .collect();
            let data: Vec<f32> = v["data"]
                .as_array()
                .expect("data")
                .iter()
                .map(|x| x.as_f64().expect("number") as f32)
                .collect();
            tensors.insert(
                k.clone(),
                Tensor::from_vec(&shape, data).expect("shape matches data"),
            );
        }
        Self {
            name: name.to_owned(),
            tensors,
        }
    }

    fn get(&self, key: &str) -> &Tensor<f32> {
        self.tensors
            .get(key)
            .unwrap_or_else(|| panic!("{}: fixture has no tensor {key:?}", self.name))
    }

    fn cfg(&self, key: &str) -> f64 {
        self.get(&format!("cfg.{key}")).as_slice()[0] as f64
    }

    fn keep(&self) -> Vec<bool> {
        self.get("keep")
            .as_slice()
            .iter()
            .map(|&v| v != 0.0)
            .collect()
    }

    /// Copies every parameter of `m` from `param.<name>`, checking that the fixture has exactly the
    /// module's parameters.
    fn load_params<M: Module<f32>>(&self, m: &mut M) {
        let mut n = 0;
        m.visit_params_mut(&mut |p| {
            let v = self.get(&format!("param.{}", p.name));
            assert_eq!(
                v.shape(),
                p.value.shape(),
                "{}: shape of {}",
                self.name,
                p.name
            );
            p.value.copy_from(v);
            n += 1;
        });
        let in_fixture = self
            .tensors
            .keys()
            .filter(|k| k.starts_with("param."))
            .count();
        assert_eq!(
            n, in_fixture,
            "{}: module and fixture parameter counts differ",
            self.name
        );
    }

    fn close(&self, what: &str, actual: &Tensor<f32>, key: &str) {
        let expected = self.get(key);
        assert_eq!(
            actual.shape(),
            expected.shape(),
            "{}: {what} shape",
            self.name
        );
        if let Err(e) = TOL.check(actual.as_slice(), expected.as_slice()) {
            panic!("{}: {what} differs from PyTorch: {e}", self.name);
        }
    }

    fn check_grads<M: Module<f32>>(&self, m: &M) {
        let mut checked = 0;
        m.visit_params(&mut |p| {
            self.close(
                &format!("gradient of {}", p.name),
                &p.grad,
                &format!("grad.{}", p.name),
            );
            checked += 1;
        });
        assert!(checked > 0);
    }

    fn loss(&self, y: &Tensor<f32>) {
        let r = self.get("r");
        let loss: f64 = (y.as_slice().iter().zip(r.as_slice()))
            .map(|(&a, &b)| a as f64 * b as f64)
            .sum();
        let want = self.get("loss").as_slice()[0] as f64;
        assert!(
            (loss - want).abs() <= 1e-5 * (1.0 + want.abs()),
            "{}: loss {loss} vs PyTorch {want}",
            self.name
        );
    }
}

fn check_mha(name: &str) {
    let fx = Fixture::load(name);
    let xq = fx.get("x_q");
    let (b, t, d) = (xq.shape()[0], xq.shape()[1], xq.shape()[2]);
    let config = MhaConfig {
        d_model: d,
        num_heads: fx.cfg("heads") as usize,
        mask: if fx.cfg("causal") != 0.0 {
            AttentionMask::Causal
        } else {
            AttentionMask::Bidirectional
        },
        dropout: 0.0,
        seed: 0,
    };
    let mut m = MultiheadAttention::<f32>::new("attn", config.clone(), &mut Rng::new(0)).unwrap();
    fx.load_params(&mut m);
    let keep = fx.keep();
    let mut cache = MhaCache::new(&config, b, t);
    let mut out = Tensor::zeros(&[b, t, d]);
    m.forward(
        &mut out,
        &mut cache,
        xq,
        fx.get("x_kv"),
        Some(&keep),
        Phase::Train { step: 0 },
    );
    fx.close("output", &out, "out");
    fx.loss(&out);
    let mut w = Tensor::zeros(&[b, t, t]);
    m.mean_weights(&mut w, &cache);
    fx.close("head-averaged attention weights", &w, "weights");
    m.zero_grad();
    let (mut dq, mut dkv) = (Tensor::zeros(&[b, t, d]), Tensor::zeros(&[b, t, d]));
    m.backward(
        &mut dq,
        &mut dkv,
        fx.get("r"),
        xq,
        fx.get("x_kv"),
        &mut cache,
    );
    fx.close("query input gradient", &dq, "grad.x_q");
    fx.close("key/value input gradient", &dkv, "grad.x_kv");
    fx.check_grads(&m);
}

#[test]
fn mha_causal_two_heads_matches_pytorch() {
    check_mha("mha_causal");
}

#[test]
fn mha_bidirectional_cross_four_heads_matches_pytorch() {
    check_mha("mha_cross_bidir");
}

#[test]
fn mha_causal_one_head_matches_pytorch() {
    check_mha("mha_causal_1head");
}

fn check_encoder_layer(name: &str, norm: NormPlacement) {
    let fx = Fixture::load(name);
    let x = fx.get("x");
    let (b, t, d) = (x.shape()[0], x.shape()[1], x.shape()[2]);
    assert_eq!(fx.cfg("norm_first") != 0.0, norm == NormPlacement::Pre);
    let config = TransformerBlockConfig {
        d_model: d,
        num_heads: fx.cfg("heads") as usize,
        d_ff: fx.cfg("d_ff") as usize,
        activation: if fx.cfg("gelu") != 0.0 {
            Activation::Gelu(Gelu::Erf)
        } else {
            Activation::Relu
        },
        dropout: 0.0,
        mask: if fx.cfg("causal") != 0.0 {
            AttentionMask::Causal
        } else {
            AttentionMask::Bidirectional
        },
        norm,
        eps: fx.cfg("eps"),
        zero_padded_outputs: false,
        output_projection: true,
        mask_padded_keys: true,
        seed: 0,
    };
    let mut m = TransformerBlock::<f32>::new("layer", config.clone(), &mut Rng::new(0)).unwrap();
    fx.load_params(&mut m);
    let keep = fx.keep();
    let mut cache = TransformerBlockCache::new(&config, b, t);
    let mut y = Tensor::zeros(&[b, t, d]);
    m.forward(&mut y, &mut cache, x, Some(&keep), Phase::Train { step: 0 });
    fx.close("output", &y, "y");
    fx.loss(&y);
    m.zero_grad();
    let mut dx = Tensor::zeros(&[b, t, d]);
    m.backward(&mut dx, fx.get("r"), x, Some(&keep), &mut cache);
    fx.close("input gradient", &dx, "grad.x");
    fx.check_grads(&m);
}

#[test]
fn transformer_encoder_layer_post_ln_relu_matches_pytorch() {
    check_encoder_layer("encoder_post_relu", NormPlacement::Post);
}

#[test]
fn transformer_encoder_layer_norm_first_relu_matches_pytorch() {
    check_encoder_layer("encoder_pre_relu", NormPlacement::Pre);
}

#[test]
fn transformer_encoder_layer_post_ln_gelu_causal_matches_pytorch() {
    check_encoder_layer("encoder_post_gelu", NormPlacement::Post);
}

/// SASRec.pytorch's `log2feats` (after the embeddings): two blocks of its exact layer-norm placement,
/// `Conv1d(k=1)` feed-forwards, the causal mask without key padding, `seqs *= ~timeline_mask` after each
/// block and `last_layernorm`, eps 1e-8.
#[test]
fn sasrec_two_block_stack_matches_sasrec_pytorch() {
    let fx = Fixture::load("sasrec_stack");
    let x = fx.get("x");
    let (b, t, d) = (x.shape()[0], x.shape()[1], x.shape()[2]);
    let mut config = TransformerBlockConfig::sasrec(d, fx.cfg("heads") as usize, 0.0, 0);
    config.mask_padded_keys = false;
    let mut m = TransformerEncoder::<f32>::new("enc", &config, 2, true, &mut Rng::new(0)).unwrap();
    fx.load_params(&mut m);
    let keep = fx.keep();
    let mut cache = TransformerEncoderCache::new(&m, b, t);
    let mut y = Tensor::zeros(&[b, t, d]);
    m.forward(&mut y, &mut cache, x, Some(&keep), Phase::Train { step: 0 });
    fx.close("output", &y, "y");
    fx.loss(&y);
    m.zero_grad();
    let mut dx = Tensor::zeros(&[b, t, d]);
    m.backward(&mut dx, fx.get("r"), x, Some(&keep), &mut cache);
    fx.close("input gradient", &dx, "grad.x");
    fx.check_grads(&m);
}

#[test]
fn attention_pooling_matches_pytorch() {
    let fx = Fixture::load("attention_pooling");
    let h = fx.get("h");
    let (b, t, d) = (h.shape()[0], h.shape()[1], h.shape()[2]);
    let cfg = AttentionPoolingConfig {
        d_model: d,
        d_att: fx.cfg("d_att") as usize,
    };
    let mut m = AttentionPooling::<f32>::new("pool", &cfg, &mut Rng::new(0)).unwrap();
    fx.load_params(&mut m);
    let keep = fx.keep();
    let mut cache = AttentionPoolingCache::new(&cfg, b, t);
    let (mut pooled, mut w) = (Tensor::zeros(&[b, d]), Tensor::zeros(&[b, t]));
    m.forward(&mut pooled, &mut w, &mut cache, h, Some(&keep));
    fx.close("pooled", &pooled, "pooled");
    fx.close("weights", &w, "weights");
    fx.loss(&pooled);
    m.zero_grad();
    let mut dh = Tensor::zeros(&[b, t, d]);
    m.backward(&mut dh, fx.get("r"), h, &mut cache);
    fx.close("input gradient", &dh, "grad.h");
    fx.check_grads(&m);
}
