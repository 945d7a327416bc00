//! GRU and LSTM against PyTorch fixtures (`scripts/fixtures_rnn.py`): 2 layers, batch_first, with
//! h0/c0; a full batch, a right-padded batch run through `pack_padded_sequence`, and a left-padded batch
//! (each row's real suffix run on its own in PyTorch). Outputs, final states, the loss and the gradients
//! of `L = sum(y * ry) + sum(h_n * rh) [+ sum(c_n * rc)]` w.r.t. x, h0, c0 and every parameter must
//! match within 1e-5 (relative + absolute, per element) in f32.

use std::collections::HashMap;
use std::path::PathBuf;

use seqrec_nn::{Gru, Lstm, Module, RnnConfig, init::Rng};
use seqrec_tensor::{Tensor, Tolerance};

const TOL: Tolerance = Tolerance {
    relative: 1e-5,
    absolute: 1e-5,
};

fn load(name: &str) -> HashMap<String, Tensor<f32>> {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/rnn/{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json.as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            let shape: Vec<usize> = v["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            let data: Vec<f32> = v["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_f64().unwrap() as f32)
                .collect();
            (k.clone(), Tensor::from_vec(&shape, data).unwrap())
        })
        .collect()
}

#[track_caller]
fn close(what: &str, case: &str, actual: &Tensor<f32>, expected: &Tensor<f32>) {
    assert_eq!(actual.shape(), expected.shape(), "{case}: {what}: shape");
    if let Err(e) = TOL.check(actual.as_slice(), expected.as_slice()) {
        panic!("{case}: {what}: {e}");
    }
}

fn dot(a: &Tensor<f32>, b: &Tensor<f32>) -> f64 {
    a.as_slice()
        .iter()
        .zip(b.as_slice())
        .map(|(x, y)| *x as f64 * *y as f64)
        .sum()
}

/// Runs one fixture through a GRU (`lstm = false`) or an LSTM and compares everything.
fn check_case(name: &str, lstm: bool) {
    let f = load(name);
    let x = &f["x"];
    let h0 = &f["h0"];
    let (batch, seq, d_in) = (x.shape()[0], x.shape()[1], x.shape()[2]);
    let (layers, hidden) = (h0.shape()[0], h0.shape()[2]);
    let cfg = RnnConfig {
        input_size: d_in,
        hidden_size: hidden,
        num_layers: layers,
    };
    let mask: Vec<bool> = f["mask"].as_slice().iter().map(|&m| m != 0.0).collect();
    let mut rng = Rng::new(0);
    let (mut gru, mut lstm_net) = if lstm {
        (None, Some(Lstm::<f32>::new("", cfg, &mut rng).unwrap()))
    } else {
        (Some(Gru::<f32>::new("", cfg, &mut rng).unwrap()), None)
    };
    let module: &mut dyn Module<f32> = match (&mut gru, &mut lstm_net) {
        (Some(g), _) => g,
        (_, Some(l)) => l,
        _ => unreachable!(),
    };
    // Parameters by their PyTorch names.
    let mut copied = 0;
    module.visit_params_mut(&mut |p| {
        let v = f
            .get(&p.name)
            .unwrap_or_else(|| panic!("{name}: fixture lacks {}", p.name));
        assert_eq!(p.value.shape(), v.shape(), "{name}: {}", p.name);
        p.value.copy_from(v);
        copied += 1;
    });
    assert_eq!(copied, 4 * layers);
    module.zero_grad();

    let mut init = match (&gru, &lstm_net) {
        (Some(g), _) => g.zero_state(batch),
        (_, Some(l)) => l.zero_state(batch),
        _ => unreachable!(),
    };
    init.h.copy_from(h0);
    if let Some(c) = &mut init.c {
        c.copy_from(&f["c0"]);
    }
    let mut last = init.clone();
    let mut dinit = init.clone();
    let mut dlast = init.clone();
    dlast.h.copy_from(&f["rh"]);
    if let Some(c) = &mut dlast.c {
        c.copy_from(&f["rc"]);
    }
    let mut y = Tensor::zeros(&[batch, seq, hidden]);
    let mut dx = Tensor::zeros(&[batch, seq, d_in]);
    let ry = &f["ry"];
    match (&mut gru, &mut lstm_net) {
        (Some(g), _) => {
            let mut cache = g.new_cache(batch, seq);
            g.forward(&mut y, &mut last, &mut cache, x, Some(&mask), Some(&init));
            g.backward(
                Some(&mut dx),
                Some(&mut dinit),
                ry,
                Some(&dlast),
                x,
                Some(&mask),
                &mut cache,
            );
        }
        (_, Some(l)) => {
            let mut cache = l.new_cache(batch, seq);
            l.forward(&mut y, &mut last, &mut cache, x, Some(&mask), Some(&init));
            l.backward(
                Some(&mut dx),
                Some(&mut dinit),
                ry,
                Some(&dlast),
                x,
                Some(&mask),
                &mut cache,
            );
        }
        _ => unreachable!(),
    }
    close("y", name, &y, &f["y"]);
    close("h_n", name, &last.h, &f["h_n"]);
    let mut loss = dot(&y, ry) + dot(&last.h, &dlast.h);
    if let (Some(c), Some(rc)) = (&last.c, &dlast.c) {
        close("c_n", name, c, &f["c_n"]);
        loss += dot(c, rc);
    }
    let want = f["loss"].as_slice()[0] as f64;
    assert!(
        (loss - want).abs() <= 1e-4 * (1.0 + want.abs()),
        "{name}: loss {loss} vs torch {want}"
    );
    close("grad.x", name, &dx, &f["grad.x"]);
    close("grad.h0", name, &dinit.h, &f["grad.h0"]);
    if let Some(c) = &dinit.c {
        close("grad.c0", name, c, &f["grad.c0"]);
    }
    let module: &dyn Module<f32> = match (&gru, &lstm_net) {
        (Some(g), _) => g,
        (_, Some(l)) => l,
        _ => unreachable!(),
    };
    module.visit_params(&mut |p| {
        close(
            &format!("grad.{}", p.name),
            name,
            &p.grad,
            &f[&format!("grad.{}", p.name)],
        )
    });
}

#[test]
fn gru_matches_pytorch_full_batch_with_h0() {
    check_case("gru_full", false);
}

#[test]
fn gru_matches_pytorch_right_padded_packed_sequence() {
    check_case("gru_right", false);
}

#[test]
fn gru_matches_pytorch_left_padded_rows() {
    check_case("gru_left", false);
}

#[test]
fn lstm_matches_pytorch_full_batch_with_h0_c0() {
    check_case("lstm_full", true);
}

#[test]
fn lstm_matches_pytorch_right_padded_packed_sequence() {
    check_case("lstm_right", true);
}

#[test]
fn lstm_matches_pytorch_left_padded_rows() {
    check_case("lstm_left", true);
}
