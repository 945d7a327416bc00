//! safetensors checkpoints: round trips in f32 and f64, loading a file written by PyTorch's
//! `safetensors.torch.save_file` into `Linear`/`LayerNorm`/`Embedding` by PyTorch names, and a typed
//! error for every kind of mismatch.

#[path = "fixtures/core/fixture.rs"]
mod fixture;

use std::path::PathBuf;

use fixture::Fixture;
use seqrec_nn::checkpoint::{load, save};
use seqrec_nn::{Embedding, LayerNorm, Linear, Module, NnError, Padding, Param, init::Rng};
use seqrec_tensor::Float;

/// A small model shaped like the PyTorch fixture's state dict.
struct Model<T> {
    fc: Linear<T>,
    ln: LayerNorm<T>,
    emb: Embedding<T>,
}

impl<T: Float> Model<T> {
    fn new(seed: u64, emb_rows: usize) -> Self {
        let mut rng = Rng::new(seed);
        Self {
            fc: Linear::new("fc", 4, 3, true, &mut rng),
            ln: LayerNorm::new("ln", 3, 1e-5),
            emb: Embedding::new("item_emb", emb_rows, 4, 1.0, Padding::Skip(0), &mut rng).unwrap(),
        }
    }
}

impl<T: Float> Module<T> for Model<T> {
    fn visit_params(&self, f: &mut dyn FnMut(&Param<T>)) {
        self.fc.visit_params(f);
        self.ln.visit_params(f);
        self.emb.visit_params(f);
    }
    fn visit_params_mut(&mut self, f: &mut dyn FnMut(&mut Param<T>)) {
        self.fc.visit_params_mut(f);
        self.ln.visit_params_mut(f);
        self.emb.visit_params_mut(f);
    }
}

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "seqrec-nn-ckpt-{}-{name}.safetensors",
        std::process::id()
    ))
}

fn values<T: Float>(m: &dyn Module<T>) -> Vec<(String, Vec<T>)> {
    let mut v = Vec::new();
    m.visit_params(&mut |p| v.push((p.name.clone(), p.value.to_vec())));
    v
}

#[test]
fn round_trip_f32_and_f64_is_bit_exact() {
    let path = tmp("rt32");
    let mut a = Model::<f32>::new(1, 6);
    a.ln.weight.value.as_mut_slice()[1] = 1.2345678;
    save(&a, &path).unwrap();
    let mut b = Model::<f32>::new(2, 6);
    assert_ne!(values(&a), values(&b));
    load(&mut b, &path).unwrap();
    assert_eq!(values(&a), values(&b));
    // No temporary file is left behind.
    let leftovers = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains(&format!(
                    "seqrec-nn-ckpt-{}-rt32.safetensors.tmp",
                    std::process::id()
                ))
        })
        .count();
    assert_eq!(leftovers, 0);
    std::fs::remove_file(&path).unwrap();

    let path = tmp("rt64");
    let a = Model::<f64>::new(3, 6);
    save(&a, &path).unwrap();
    let mut b = Model::<f64>::new(4, 6);
    load(&mut b, &path).unwrap();
    assert_eq!(values(&a), values(&b));
    // f64 file into an f32 model: dtype error naming the first tensor.
    let mut c = Model::<f32>::new(4, 6);
    let err = load(&mut c, &path).unwrap_err();
    assert!(
        matches!(&err, NnError::DtypeMismatch { name, file_dtype, module_dtype: "f32", .. } if name == "fc.weight" && file_dtype == "F64"),
        "{err}"
    );
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn loads_a_pytorch_written_file_by_name() {
    let fx = Fixture::load("torch_modules");
    let mut m = Model::<f32>::new(5, 6);
    load(&mut m, fixture::dir().join("torch_modules.safetensors")).unwrap();
    // Bit-exact: the JSON holds the same f32 values as decimals.
    m.visit_params(&mut |p| assert_eq!(p.value, fx.tensor(&p.name), "{}", p.name));
    // PyTorch zeroes the padding row too.
    assert!(m.emb.weight.value.as_slice()[..4].iter().all(|&v| v == 0.0));
}

#[test]
fn mismatches_are_typed_errors_naming_the_tensor() {
    let torch_file = fixture::dir().join("torch_modules.safetensors");
    // Shape: the embedding has 7 rows here, 6 in the file.
    let mut m = Model::<f32>::new(6, 7);
    let before = values(&m);
    let err = load(&mut m, &torch_file).unwrap_err();
    assert!(
        matches!(&err, NnError::ShapeMismatch { name, file_shape, module_shape, .. }
            if name == "item_emb.weight" && file_shape == &[6, 4] && module_shape == &[7, 4]),
        "{err}"
    );
    assert!(
        err.to_string().contains("[6, 4]") && err.to_string().contains("[7, 4]"),
        "{err}"
    );
    assert_eq!(
        values(&m),
        before,
        "a failed load must not modify the module"
    );

    // Missing: a model with a parameter the file lacks.
    let path = tmp("partial");
    let mut rng = Rng::new(7);
    let fc = Linear::<f32>::new("fc", 4, 3, true, &mut rng);
    save(&fc, &path).unwrap();
    let mut m = Model::<f32>::new(8, 6);
    let err = load(&mut m, &path).unwrap_err();
    assert!(
        matches!(&err, NnError::MissingTensor { name, .. } if name == "ln.weight"),
        "{err}"
    );

    // Extra: the file has tensors the module lacks (all are listed).
    let mut fc2 = Linear::<f32>::new("fc", 4, 3, true, &mut rng);
    let err = load(&mut fc2, &torch_file).unwrap_err();
    match &err {
        NnError::UnexpectedTensors { names, .. } => {
            assert_eq!(names, &["item_emb.weight", "ln.bias", "ln.weight"]);
        }
        other => panic!("expected UnexpectedTensors, got {other}"),
    }

    // Not a safetensors file / no file.
    std::fs::write(&path, b"not a checkpoint").unwrap();
    assert!(matches!(
        load(&mut fc2, &path),
        Err(NnError::Safetensors { .. })
    ));
    std::fs::remove_file(&path).unwrap();
    assert!(matches!(load(&mut fc2, &path), Err(NnError::Io { .. })));
}
