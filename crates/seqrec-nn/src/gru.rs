//! [`Gru`]: PyTorch's `nn.GRU(batch_first=True)`, multi-layer, over padded batches, with full
//! backpropagation through time and a step-by-step inference API.
//!
//! Per layer and step (PyTorch's equations, reset gate applied after the recurrent product):
//! ```text
//! r  = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
//! z  = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
//! n  = tanh(W_in x + b_in + r * (W_hn h + b_hn))
//! h' = (1 - z) * n + z * h
//! ```

use seqrec_tensor::{Float, Tensor};

use crate::init::Rng;
use crate::param::{Module, Param};
use crate::rnn_common::{
    Cell, RnnCache, RnnConfig, RnnConfigError, RnnLayer, RnnState, build_layers, check_dropout,
    rnn_backward, rnn_forward, rnn_step, sigmoid_inplace, tanh_inplace,
};

/// The GRU cell for one row of `h` units.
///
/// - `gx`: `x W_ih^T + b_ih` `[3h]`; `hh`: `h W_hh^T` `[3h]` (without bias); `bhh`: `b_hh` `[3h]`;
/// - `h_prev`: `[h]`; writes `h_new` `[h]` and `gates` `[4h]` = r, z, n, `W_hn h + b_hn`.
#[inline(always)]
pub(crate) fn cell_forward<T: Float>(
    gates: &mut [T],
    h_new: &mut [T],
    gx: &[T],
    hh: &[T],
    bhh: &[T],
    h_prev: &[T],
) {
    // Separate passes over contiguous slices so each loop vectorises (the activations for f32 too).
    let h = h_new.len();
    let (rz, rest) = gates.split_at_mut(2 * h);
    let (gn, ghn) = rest.split_at_mut(h);
    // (a, b) [r, z] = sigmoid(gx_rz + hh_rz + b_hrz)
    for (((o, &a), &b), &c) in rz
        .iter_mut()
        .zip(&gx[..2 * h])
        .zip(&hh[..2 * h])
        .zip(&bhh[..2 * h])
    {
        *o = a + b + c;
    }
    sigmoid_inplace(rz);
    let (r, z) = rz.split_at(h);
    // (c) hn = W_hn h + b_hn
    for ((o, &a), &b) in ghn
        .iter_mut()
        .zip(&hh[2 * h..3 * h])
        .zip(&bhh[2 * h..3 * h])
    {
        *o = a + b;
    }
    // (d) n = tanh(gx_n + r * hn)
    for (((o, &a), &r), &hn) in gn.iter_mut().zip(&gx[2 * h..3 * h]).zip(r).zip(&*ghn) {
        *o = a + r * hn;
    }
    tanh_inplace(gn);
    // (e) h' = n + z * (h - n)   (= (1 - z) n + z h, in PyTorch's order of operations)
    for (((o, &n), &z), &hp) in h_new.iter_mut().zip(&*gn).zip(z).zip(h_prev) {
        *o = n + z * (hp - n);
    }
}

/// Backward of [`cell_forward`] for one row.
///
/// - `dh`: in, `dL/dh'`; out, the part of `dL/dh` that does not pass through `W_hh` (`dh' * z`);
/// - writes `dgx` `[3h]` (gradient of `x W_ih^T + b_ih`) and `dgh` `[3h]` (of `h W_hh^T + b_hh`).
#[inline(always)]
pub(crate) fn cell_backward<T: Float>(
    dgx: &mut [T],
    dgh: &mut [T],
    dh: &mut [T],
    gates: &[T],
    h_prev: &[T],
) {
    let h = dh.len();
    let (gr, gz, gn, ghn) = (
        &gates[..h],
        &gates[h..2 * h],
        &gates[2 * h..3 * h],
        &gates[3 * h..4 * h],
    );
    // Every slice re-cut to exactly h elements, so the loop below has no bounds checks and vectorises.
    let (gr, gz, gn, ghn, h_prev) = (&gr[..h], &gz[..h], &gn[..h], &ghn[..h], &h_prev[..h]);
    let (dxr, dxz, dxn) = split3(&mut dgx[..3 * h], h);
    let (dhr, dhz, dhn) = split3(&mut dgh[..3 * h], h);
    let (dxr, dxz, dxn) = (&mut dxr[..h], &mut dxz[..h], &mut dxn[..h]);
    let (dhr, dhz, dhn) = (&mut dhr[..h], &mut dhz[..h], &mut dhn[..h]);
    for j in 0..h {
        let (r, z, n, hn) = (gr[j], gz[j], gn[j], ghn[j]);
        let d = dh[j];
        // (e) h' = n + z (h - n): dn = dh' (1 - z), dz = dh' (h - n), dh = dh' z
        let dn = d * (T::ONE - z);
        let dz = d * (h_prev[j] - n);
        dh[j] = d * z;
        // (d) n = tanh(a_n), a_n = gx_n + r hn: da_n = dn (1 - n^2); dr = da_n hn; dhn = da_n r
        let dan = dn * (T::ONE - n * n);
        let dr = dan * hn;
        // (b) z = sigmoid(a_z): da_z = dz z (1 - z)
        let daz = dz * z * (T::ONE - z);
        // (a) r = sigmoid(a_r): da_r = dr r (1 - r)
        let dar = dr * r * (T::ONE - r);
        dxr[j] = dar;
        dxz[j] = daz;
        dxn[j] = dan;
        // (c) hn = (h W_hh^T + b_hh)_n enters through r * hn
        dhr[j] = dar;
        dhz[j] = daz;
        dhn[j] = dan * r;
    }
}

/// Splits `v` (`3h` long) into its three gate blocks.
fn split3<T>(v: &mut [T], h: usize) -> (&mut [T], &mut [T], &mut [T]) {
    let (a, rest) = v.split_at_mut(h);
    let (b, c) = rest.split_at_mut(h);
    (a, b, c)
}

/// A multi-layer GRU with PyTorch's parameter names (`{prefix}.weight_ih_l0`, ...), layouts and gate
/// order (r, z, n).
///
/// ```
/// use seqrec_nn::{init::Rng, Gru, RnnConfig};
/// use seqrec_tensor::Tensor;
///
/// let cfg = RnnConfig { input_size: 3, hidden_size: 4, num_layers: 2 };
/// let gru = Gru::<f32>::new("gru", cfg, &mut Rng::new(0)).unwrap();
/// let (batch, seq) = (2, 5);
/// let x = Tensor::full(&[batch, seq, 3], 0.1);
/// // Row 0 is left-padded by two steps; row 1 is full.
/// let mask: Vec<bool> = (0..batch * seq).map(|i| i >= 2).collect::<Vec<_>>();
/// let mut y = Tensor::zeros(&[batch, seq, 4]);
/// let mut last = gru.zero_state(batch);
/// let mut cache = gru.new_cache(batch, seq);
/// gru.forward(&mut y, &mut last, &mut cache, &x, Some(&mask), None);
/// assert!(y.as_slice()[..8].iter().all(|&v| v == 0.0)); // padded steps output zero
///
/// // Serving: stepping one event at a time gives the same final state.
/// let mut state = gru.zero_state(1);
/// let mut out = Tensor::zeros(&[1, 4]);
/// for _ in 0..3 {
///     gru.step(&mut state, &Tensor::full(&[1, 3], 0.1), &mut out);
/// }
/// let top = &last.h.as_slice()[8..12]; // layer 1, batch row 0
/// for (a, b) in out.as_slice().iter().zip(top) {
///     assert!((a - b).abs() < 1e-6);
/// }
/// # assert!(RnnConfig { hidden_size: 0, ..cfg }.validate().is_err());
/// ```
#[derive(Clone, Debug)]
pub struct Gru<T> {
    /// The layers, bottom first.
    pub layers: Vec<RnnLayer<T>>,
    config: RnnConfig,
    dropout: f64,
}

impl<T: Float> Gru<T> {
    /// A GRU named `prefix` with PyTorch's default initialisation (uniform `±1/sqrt(hidden_size)`).
    ///
    /// # Errors
    /// [`RnnConfigError`] if a size in `config` is zero.
    pub fn new(prefix: &str, config: RnnConfig, rng: &mut Rng) -> Result<Self, RnnConfigError> {
        Ok(Self {
            layers: build_layers(Cell::Gru, prefix, &config, rng)?,
            config,
            dropout: 0.0,
        })
    }

    /// Adds dropout with probability `p` on the outputs of every layer but the last (PyTorch's `dropout`
    /// argument), applied only when the cache holds a training key ([`RnnCache::set_dropout_key`]).
    ///
    /// # Errors
    /// [`RnnConfigError::Dropout`] unless `p` is in `[0, 1)`.
    pub fn with_dropout(mut self, p: f64) -> Result<Self, RnnConfigError> {
        self.dropout = check_dropout(p)?;
        Ok(self)
    }

    /// The dropout probability between layers (0 without dropout).
    pub fn dropout(&self) -> f64 {
        self.dropout
    }

    /// The (validated) sizes.
    pub fn config(&self) -> &RnnConfig {
        &self.config
    }

    /// A zero state `h` `[layers, batch, h]` (`c` is `None`): an initial state, a final-state output, or
    /// the carried state of [`Gru::step`].
    pub fn zero_state(&self, batch: usize) -> RnnState<T> {
        RnnState::zeros(
            Cell::Gru,
            self.config.num_layers,
            batch,
            self.config.hidden_size,
        )
    }

    /// A cache for inputs of up to `[batch, seq]` (smaller shapes reuse its storage).
    pub fn new_cache(&self, batch: usize, seq: usize) -> RnnCache<T> {
        RnnCache::new(Cell::Gru, &self.config, batch, seq)
    }

    /// Forward over a padded batch.
    ///
    /// - `x`: `[batch, seq, input_size]`; `mask`: `[batch, seq]` row-major, true = real event, `None` =
    ///   all real (left or right padding, or any pattern: a padded step carries the state unchanged);
    /// - `h0`: initial state `[layers, batch, h]`, `None` for zeros;
    /// - `out`: `[batch, seq, h]`, top-layer outputs, exactly zero at padded steps (overwritten);
    /// - `h_n`: final state `[layers, batch, h]` (after each row's last real step);
    /// - `cache`: from [`Gru::new_cache`], filled for [`Gru::backward`].
    ///
    /// With [`Gru::with_dropout`] and a training key in the cache ([`RnnCache::set_dropout_key`]), the
    /// outputs of every layer but the last are dropped before the layer above reads them.
    ///
    /// # Panics
    /// On shape mismatches (programming errors), with a message naming the tensor.
    pub fn forward(
        &self,
        out: &mut Tensor<T>,
        h_n: &mut RnnState<T>,
        cache: &mut RnnCache<T>,
        x: &Tensor<T>,
        mask: Option<&[bool]>,
        h0: Option<&RnnState<T>>,
    ) {
        rnn_forward(
            Cell::Gru,
            &self.config,
            &self.layers,
            out,
            h_n,
            cache,
            x,
            mask,
            h0,
            self.dropout,
        );
    }

    /// Backward of [`Gru::forward`] through time: parameter gradients `+=`, `dx` and `dh0` `=`.
    ///
    /// - `dy`: `dL/d out` `[batch, seq, h]` (padded steps are ignored); `dh_n`: `dL/d h_n` or `None`;
    /// - `dx`: `[batch, seq, input_size]` or `None`; `dh0`: `[layers, batch, h]` or `None`;
    /// - `x`, `mask`: as given to the forward; `cache`: filled by that forward.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &mut self,
        dx: Option<&mut Tensor<T>>,
        dh0: Option<&mut RnnState<T>>,
        dy: &Tensor<T>,
        dh_n: Option<&RnnState<T>>,
        x: &Tensor<T>,
        mask: Option<&[bool]>,
        cache: &mut RnnCache<T>,
    ) {
        rnn_backward(
            Cell::Gru,
            &self.config,
            &mut self.layers,
            dx,
            dh0,
            dy,
            dh_n,
            x,
            mask,
            cache,
            self.dropout,
        );
    }

    /// One step of every layer for one new event per row (serving): updates `state` in place and writes
    /// the top layer's new hidden state to `out`.
    ///
    /// - `state`: from [`Gru::zero_state`] (or a forward's final state); `x_t`: `[batch, input_size]`;
    ///   `out`: `[batch, h]`.
    pub fn step(&self, state: &mut RnnState<T>, x_t: &Tensor<T>, out: &mut Tensor<T>) {
        rnn_step(Cell::Gru, &self.config, &self.layers, state, x_t, out);
    }
}

impl<T: Float> Module<T> for Gru<T> {
    fn visit_params(&self, f: &mut dyn FnMut(&Param<T>)) {
        for l in &self.layers {
            l.visit(f);
        }
    }

    fn visit_params_mut(&mut self, f: &mut dyn FnMut(&mut Param<T>)) {
        for l in &mut self.layers {
            l.visit_mut(f);
        }
    }
}
