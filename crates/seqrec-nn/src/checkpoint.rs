//! Save and load a [`Module`]'s parameters as safetensors, by PyTorch-style name.
//!
//! Files are exchangeable with PyTorch (`safetensors.torch.save_file(model.state_dict(), path)` and
//! `load_file`): tensors are little-endian `F32` or `F64` under the parameters' full names. Writes are
//! atomic: the file is written to `<path>.tmp-<pid>` then renamed over `path`, so a crash never
//! leaves a half-written checkpoint. Loading is strict: every parameter must be present with the same
//! shape and dtype, and the file must hold nothing else.
//!
//! ```
//! use seqrec_nn::checkpoint::{load, save};
//! use seqrec_nn::{init::Rng, Linear, Module};
//!
//! let path = std::env::temp_dir().join(format!("seqrec-doc-{}.safetensors", std::process::id()));
//! let a = Linear::<f32>::new("fc", 3, 2, true, &mut Rng::new(1));
//! save(&a, &path).unwrap();
//! let mut b = Linear::<f32>::new("fc", 3, 2, true, &mut Rng::new(2));
//! load(&mut b, &path).unwrap();
//! assert_eq!(a.weight.value, b.weight.value);
//! std::fs::remove_file(&path).unwrap();
//! ```

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors, View};
use seqrec_tensor::Float;

use crate::error::NnError;
use crate::param::Module;

/// The safetensors dtype of `T`.
fn dtype_of<T: Float>() -> Dtype {
    if T::NAME == "f32" {
        Dtype::F32
    } else {
        Dtype::F64
    }
}

/// One parameter serialised to little-endian bytes.
struct Bytes {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl View for &Bytes {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> NnError + '_ {
    move |source| NnError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes every parameter of `module` to `path` (safetensors, dtype of `T`), atomically.
///
/// # Errors
/// [`NnError::Io`] if the temporary file cannot be written or renamed; [`NnError::Safetensors`] if
/// serialisation fails (e.g. two parameters share a name).
pub fn save<T: Float>(module: &dyn Module<T>, path: impl AsRef<Path>) -> Result<(), NnError> {
    let path = path.as_ref();
    let mut tensors: Vec<(String, Bytes)> = Vec::new();
    module.visit_params(&mut |p| {
        let mut data = Vec::with_capacity(p.value.numel() * std::mem::size_of::<T>());
        for &v in p.value.as_slice() {
            if T::NAME == "f32" {
                data.extend_from_slice(&(v.to_f64() as f32).to_le_bytes());
            } else {
                data.extend_from_slice(&v.to_f64().to_le_bytes());
            }
        }
        tensors.push((
            p.name.clone(),
            Bytes {
                dtype: dtype_of::<T>(),
                shape: p.value.shape().to_vec(),
                data,
            },
        ));
    });
    let names: BTreeSet<&str> = tensors.iter().map(|t| t.0.as_str()).collect();
    if names.len() != tensors.len() {
        return Err(NnError::Safetensors {
            path: path.to_owned(),
            message: "two parameters share a name".into(),
        });
    }
    let bytes = safetensors::serialize(tensors.iter().map(|(n, b)| (n.as_str(), b)), None)
        .map_err(|e| NnError::Safetensors {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(path)(e)
    })
}

/// Loads every parameter of `module` from `path` by name. The module is only modified when the whole
/// file matches it (all checks run before any copy).
///
/// # Errors
/// [`NnError::Io`] (unreadable file), [`NnError::Safetensors`] (not safetensors),
/// [`NnError::MissingTensor`], [`NnError::UnexpectedTensors`], [`NnError::ShapeMismatch`] and
/// [`NnError::DtypeMismatch`], each naming the tensor.
pub fn load<T: Float>(module: &mut dyn Module<T>, path: impl AsRef<Path>) -> Result<(), NnError> {
    let path = path.as_ref();
    let buffer = std::fs::read(path).map_err(io(path))?;
    let st = SafeTensors::deserialize(&buffer).map_err(|e| NnError::Safetensors {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    // Check everything first.
    let mut err: Option<NnError> = None;
    let mut wanted = BTreeSet::new();
    module.visit_params(&mut |p| {
        wanted.insert(p.name.clone());
        if err.is_some() {
            return;
        }
        match st.tensor(&p.name) {
            Err(_) => {
                err = Some(NnError::MissingTensor {
                    path: path.to_owned(),
                    name: p.name.clone(),
                    shape: p.value.shape().to_vec(),
                })
            }
            Ok(view) if view.dtype() != dtype_of::<T>() => {
                err = Some(NnError::DtypeMismatch {
                    path: path.to_owned(),
                    name: p.name.clone(),
                    file_dtype: format!("{:?}", view.dtype()),
                    module_dtype: T::NAME,
                })
            }
            Ok(view) if view.shape() != p.value.shape() => {
                err = Some(NnError::ShapeMismatch {
                    path: path.to_owned(),
                    name: p.name.clone(),
                    file_shape: view.shape().to_vec(),
                    module_shape: p.value.shape().to_vec(),
                })
            }
            Ok(_) => {}
        }
    });
    if let Some(e) = err {
        return Err(e);
    }
    let extra: Vec<String> = st
        .names()
        .into_iter()
        .filter(|n| !wanted.contains(*n))
        .map(str::to_owned)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if !extra.is_empty() {
        return Err(NnError::UnexpectedTensors {
            path: path.to_owned(),
            names: extra,
        });
    }
    module.visit_params_mut(&mut |p| {
        let view = st.tensor(&p.name).expect("checked above");
        let data = view.data();
        let out = p.value.as_mut_slice();
        if T::NAME == "f32" {
            for (o, b) in out.iter_mut().zip(data.chunks_exact(4)) {
                *o = T::from_f64(f32::from_le_bytes(b.try_into().expect("4 bytes")) as f64);
            }
        } else {
            for (o, b) in out.iter_mut().zip(data.chunks_exact(8)) {
                *o = T::from_f64(f64::from_le_bytes(b.try_into().expect("8 bytes")));
            }
        }
    });
    Ok(())
}
