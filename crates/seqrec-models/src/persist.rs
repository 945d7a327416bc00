//! Checkpoint files shared by the neural models: parameters and Adam moments as safetensors, plus a
//! JSON state (item count, Adam step count, config, ...), each written atomically (temporary file,
//! fsync, rename), so a run killed mid-save keeps its previous checkpoint file by file.
//!
//! Each model names its three files ([`CheckpointFiles`]) and its own state type; loading reads into
//! copies and commits only when every file matched (see the models' `load`).

use std::path::{Path, PathBuf};

use seqrec_nn::{Module, checkpoint};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::ModelError;
use crate::adam::AdamState;

/// A [`ModelError::Checkpoint`] naming `path`.
pub(crate) fn ckpt_err(path: &Path, message: impl std::fmt::Display) -> ModelError {
    ModelError::Checkpoint {
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

/// A checkpoint error at `path` unless it was saved for the `have` items the model is built for.
pub(crate) fn check_n_items(path: &Path, saved: usize, have: usize) -> Result<(), ModelError> {
    if saved == have {
        return Ok(());
    }
    Err(ckpt_err(
        path,
        format!("saved for {saved} items, but the model has {have}"),
    ))
}

/// Writes `bytes` to `path` through a temporary file (fsynced) and a rename.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ModelError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        ckpt_err(path, e)
    })
}

/// The file names of one model's checkpoint directory.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CheckpointFiles {
    /// Model parameters (safetensors, PyTorch names).
    pub params: &'static str,
    /// Adam's moments (safetensors, `exp_avg.<param>` / `exp_avg_sq.<param>`).
    pub optim: &'static str,
    /// The JSON state.
    pub state: &'static str,
}

impl CheckpointFiles {
    /// Writes `net`'s parameters, `adam`'s moments and `state` (pretty JSON) into `dir`, creating it.
    pub fn save<S: Serialize>(
        &self,
        dir: &Path,
        net: &dyn Module<f32>,
        adam: &AdamState<f32>,
        state: &S,
    ) -> Result<(), ModelError> {
        std::fs::create_dir_all(dir).map_err(|e| ckpt_err(dir, e))?;
        let params = dir.join(self.params);
        checkpoint::save(net, &params).map_err(|e| ckpt_err(&params, e))?;
        let optim = dir.join(self.optim);
        checkpoint::save(adam, &optim).map_err(|e| ckpt_err(&optim, e))?;
        let path = dir.join(self.state);
        let json = serde_json::to_vec_pretty(state).map_err(|e| ckpt_err(&path, e))?;
        write_atomic(&path, &json)
    }

    /// Reads the JSON state of `dir`; also returns its path, for errors about its content.
    pub fn read_state<S: DeserializeOwned>(&self, dir: &Path) -> Result<(S, PathBuf), ModelError> {
        let path = dir.join(self.state);
        let bytes = std::fs::read(&path).map_err(|e| ckpt_err(&path, e))?;
        let state = serde_json::from_slice(&bytes).map_err(|e| ckpt_err(&path, e))?;
        Ok((state, path))
    }

    /// Loads the parameters of `dir` into `net`, which is left unchanged unless the whole file
    /// matches it (names, shapes, dtypes).
    pub fn load_params(&self, dir: &Path, net: &mut dyn Module<f32>) -> Result<(), ModelError> {
        let path = dir.join(self.params);
        checkpoint::load(net, &path).map_err(|e| ckpt_err(&path, e))
    }

    /// Loads the parameters and Adam moments of `dir` into copies of `net` and `adam`, and commits
    /// both only when both files match (a failed load leaves the model untouched).
    pub fn load_net_and_adam<N: Module<f32> + Clone>(
        &self,
        dir: &Path,
        net: &mut N,
        adam: &mut AdamState<f32>,
        steps: u64,
    ) -> Result<(), ModelError> {
        let mut loaded = net.clone();
        self.load_params(dir, &mut loaded)?;
        *adam = self.load_adam(dir, adam, steps)?;
        *net = loaded;
        Ok(())
    }

    /// A copy of `adam` with the moments of `dir` and `steps` steps taken.
    pub fn load_adam(
        &self,
        dir: &Path,
        adam: &AdamState<f32>,
        steps: u64,
    ) -> Result<AdamState<f32>, ModelError> {
        let path = dir.join(self.optim);
        let mut loaded = adam.clone();
        checkpoint::load(&mut loaded, &path).map_err(|e| ckpt_err(&path, e))?;
        loaded.steps = steps;
        Ok(loaded)
    }
}
