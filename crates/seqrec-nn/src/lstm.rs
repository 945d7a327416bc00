//! [`Lstm`]: PyTorch's `nn.LSTM(batch_first=True)`, multi-layer, over padded batches, with full
//! backpropagation through time and a step-by-step inference API.
//!
//! Per layer and step (PyTorch's equations and gate order):
//! ```text
//! i = sigmoid(W_ii x + b_ii + W_hi h + b_hi)
//! f = sigmoid(W_if x + b_if + W_hf h + b_hf)
//! g = tanh(W_ig x + b_ig + W_hg h + b_hg)
//! o = sigmoid(W_io x + b_io + W_ho h + b_ho)
//! c' = f * c + i * g
//! h' = o * tanh(c')
//! ```

use seqrec_tensor::{Float, Tensor};

use crate::init::Rng;
use crate::param::{Module, Param};
use crate::rnn_common::{
    Cell, RnnCache, RnnConfig, RnnConfigError, RnnLayer, RnnState, build_layers, check_dropout,
    rnn_backward, rnn_forward, rnn_step, sigmoid_inplace, tanh_inplace,
};

/// The LSTM cell for one row of `h` units.
///
/// - `gx`: `x W_ih^T + b_ih` `[4h]`; `hh`: `h W_hh^T` `[4h]` (without bias); `bhh`: `b_hh` `[4h]`;
/// - `c_prev`: `[h]`; writes `h_new`, `c_new` `[h]` and `gates` `[5h]` = i, f, g, o, `tanh(c')`.
#[inline(always)]
pub(crate) fn cell_forward<T: Float>(
    gates: &mut [T],
    h_new: &mut [T],
    c_new: &mut [T],
    gx: &[T],
    hh: &[T],
    bhh: &[T],
    c_prev: &[T],
) {
    // Separate passes over contiguous slices so each loop vectorises (the activations for f32 too).
    let h = h_new.len();
    let (ifgo, gtc) = gates.split_at_mut(4 * h);
    // (a) pre-activations gx + hh + b_hh, then i, f = sigmoid, g = tanh, o = sigmoid
    for (((o, &a), &b), &c) in ifgo
        .iter_mut()
        .zip(&gx[..4 * h])
        .zip(&hh[..4 * h])
        .zip(&bhh[..4 * h])
    {
        *o = a + b + c;
    }
    sigmoid_inplace(&mut ifgo[..2 * h]);
    tanh_inplace(&mut ifgo[2 * h..3 * h]);
    sigmoid_inplace(&mut ifgo[3 * h..]);
    let (i, rest) = ifgo.split_at(h);
    let (f, rest) = rest.split_at(h);
    let (g, o) = rest.split_at(h);
    // (b) c' = f c + i g
    for ((((cn, &f), &cp), &i), &g) in c_new.iter_mut().zip(f).zip(c_prev).zip(i).zip(g) {
        *cn = f * cp + i * g;
    }
    // (c) h' = o tanh(c')
    gtc.copy_from_slice(c_new);
    tanh_inplace(gtc);
    for ((hn, &o), &tc) in h_new.iter_mut().zip(o).zip(&*gtc) {
        *hn = o * tc;
    }
}

/// Backward of [`cell_forward`] for one row.
///
/// - `dh`: in, `dL/dh'`; out, zero (`h` reaches the next step only through `W_hh`);
/// - `dc`: in, `dL/dc'` from the next step; out, `dL/dc` (`dc' * f`);
/// - writes `dgx` and `dgh` `[4h]` (both the pre-activation gradients: `x W_ih^T + b_ih` and
///   `h W_hh^T + b_hh` enter the gates identically).
#[inline(always)]
pub(crate) fn cell_backward<T: Float>(
    dgx: &mut [T],
    dgh: &mut [T],
    dh: &mut [T],
    dc: &mut [T],
    gates: &[T],
    c_prev: &[T],
) {
    let h = dh.len();
    // Every slice re-cut to exactly h elements, so the loop below has no bounds checks and vectorises.
    let (gi, gf, gg, go, gtc) = (
        &gates[..h],
        &gates[h..2 * h],
        &gates[2 * h..3 * h],
        &gates[3 * h..4 * h],
        &gates[4 * h..5 * h],
    );
    let (dc, c_prev) = (&mut dc[..h], &c_prev[..h]);
    let (dxi, rest) = dgx[..4 * h].split_at_mut(h);
    let (dxf, rest) = rest.split_at_mut(h);
    let (dxg, dxo) = rest.split_at_mut(h);
    let (dxi, dxf, dxg, dxo) = (&mut dxi[..h], &mut dxf[..h], &mut dxg[..h], &mut dxo[..h]);
    for j in 0..h {
        let (i, f, g, o, tc) = (gi[j], gf[j], gg[j], go[j], gtc[j]);
        let d = dh[j];
        // (c) h' = o tanh(c'): do = dh' tanh(c'), dc' += dh' o (1 - tanh(c')^2)
        let d_o = d * tc;
        let dcn = dc[j] + d * o * (T::ONE - tc * tc);
        // (b) c' = f c + i g: di = dc' g, dg = dc' i, df = dc' c, dc = dc' f
        let di = dcn * g;
        let dg = dcn * i;
        let df = dcn * c_prev[j];
        dc[j] = dcn * f;
        dh[j] = T::ZERO;
        // (a) through the sigmoids and the tanh
        dxi[j] = di * i * (T::ONE - i);
        dxf[j] = df * f * (T::ONE - f);
        dxg[j] = dg * (T::ONE - g * g);
        dxo[j] = d_o * o * (T::ONE - o);
    }
    let dgh = &mut dgh[..4 * h];
    // x W_ih^T + b_ih and h W_hh^T + b_hh enter the gates identically.
    dgh.copy_from_slice(&dgx[..4 * h]);
}

/// A multi-layer LSTM with PyTorch's parameter names (`{prefix}.weight_ih_l0`, ...), layouts and gate
/// order (i, f, g, o).
///
/// ```
/// use seqrec_nn::{init::Rng, Lstm, RnnConfig};
/// use seqrec_tensor::Tensor;
///
/// let cfg = RnnConfig { input_size: 3, hidden_size: 4, num_layers: 2 };
/// let lstm = Lstm::<f32>::new("lstm", cfg, &mut Rng::new(0)).unwrap();
/// let (batch, seq) = (2, 5);
/// let x = Tensor::full(&[batch, seq, 3], 0.1);
/// // Row 0 is left-padded by two steps; row 1 is full.
/// let mask: Vec<bool> = (0..batch * seq).map(|i| i >= 2).collect::<Vec<_>>();
/// let mut y = Tensor::zeros(&[batch, seq, 4]);
/// let mut last = lstm.zero_state(batch);
/// let mut cache = lstm.new_cache(batch, seq);
/// lstm.forward(&mut y, &mut last, &mut cache, &x, Some(&mask), None);
/// assert!(y.as_slice()[..8].iter().all(|&v| v == 0.0)); // padded steps output zero
///
/// // Serving: stepping one event at a time gives the same final state.
/// let mut state = lstm.zero_state(1);
/// let mut out = Tensor::zeros(&[1, 4]);
/// for _ in 0..3 {
///     lstm.step(&mut state, &Tensor::full(&[1, 3], 0.1), &mut out);
/// }
/// let top = &last.h.as_slice()[8..12]; // layer 1, batch row 0
/// for (a, b) in out.as_slice().iter().zip(top) {
///     assert!((a - b).abs() < 1e-6);
/// }
/// # assert!(RnnConfig { hidden_size: 0, ..cfg }.validate().is_err());
/// ```
#[derive(Clone, Debug)]
pub struct Lstm<T> {
    /// The layers, bottom first.
    pub layers: Vec<RnnLayer<T>>,
    config: RnnConfig,
    dropout: f64,
}

impl<T: Float> Lstm<T> {
    /// A LSTM named `prefix` with PyTorch's default initialisation (uniform `±1/sqrt(hidden_size)`).
    ///
    /// # Errors
    /// [`RnnConfigError`] if a size in `config` is zero.
    pub fn new(prefix: &str, config: RnnConfig, rng: &mut Rng) -> Result<Self, RnnConfigError> {
        Ok(Self {
            layers: build_layers(Cell::Lstm, prefix, &config, rng)?,
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

    /// A zero state `h`, `c` (each `[layers, batch, h]`): an initial state, a final-state output, or
    /// the carried state of [`Lstm::step`].
    pub fn zero_state(&self, batch: usize) -> RnnState<T> {
        RnnState::zeros(
            Cell::Lstm,
            self.config.num_layers,
            batch,
            self.config.hidden_size,
        )
    }

    /// A cache for inputs of up to `[batch, seq]` (smaller shapes reuse its storage).
    pub fn new_cache(&self, batch: usize, seq: usize) -> RnnCache<T> {
        RnnCache::new(Cell::Lstm, &self.config, batch, seq)
    }

    /// Forward over a padded batch.
    ///
    /// - `x`: `[batch, seq, input_size]`; `mask`: `[batch, seq]` row-major, true = real event, `None` =
    ///   all real (left or right padding, or any pattern: a padded step carries the state unchanged);
    /// - `h0_c0`: initial state (`h` and `c`, each `[layers, batch, h]`), `None` for zeros;
    /// - `out`: `[batch, seq, h]`, top-layer outputs, exactly zero at padded steps (overwritten);
    /// - `hc_n`: final state `h_n`, `c_n` (after each row's last real step);
    /// - `cache`: from [`Lstm::new_cache`], filled for [`Lstm::backward`].
    ///
    /// With [`Lstm::with_dropout`] and a training key in the cache ([`RnnCache::set_dropout_key`]), the
    /// outputs of every layer but the last are dropped before the layer above reads them.
    ///
    /// # Panics
    /// On shape mismatches (programming errors), with a message naming the tensor.
    pub fn forward(
        &self,
        out: &mut Tensor<T>,
        hc_n: &mut RnnState<T>,
        cache: &mut RnnCache<T>,
        x: &Tensor<T>,
        mask: Option<&[bool]>,
        h0_c0: Option<&RnnState<T>>,
    ) {
        rnn_forward(
            Cell::Lstm,
            &self.config,
            &self.layers,
            out,
            hc_n,
            cache,
            x,
            mask,
            h0_c0,
            self.dropout,
        );
    }

    /// Backward of [`Lstm::forward`] through time: parameter gradients `+=`, `dx` and `dhc0` `=`.
    ///
    /// - `dy`: `dL/d out` `[batch, seq, h]` (padded steps are ignored); `dhc_n`: `dL/d (h_n, c_n)` or `None`;
    /// - `dx`: `[batch, seq, input_size]` or `None`; `dhc0`: `dL/d (h0, c0)` or `None`;
    /// - `x`, `mask`: as given to the forward; `cache`: filled by that forward.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &mut self,
        dx: Option<&mut Tensor<T>>,
        dhc0: Option<&mut RnnState<T>>,
        dy: &Tensor<T>,
        dhc_n: Option<&RnnState<T>>,
        x: &Tensor<T>,
        mask: Option<&[bool]>,
        cache: &mut RnnCache<T>,
    ) {
        rnn_backward(
            Cell::Lstm,
            &self.config,
            &mut self.layers,
            dx,
            dhc0,
            dy,
            dhc_n,
            x,
            mask,
            cache,
            self.dropout,
        );
    }

    /// One step of every layer for one new event per row (serving): updates `state` in place and writes
    /// the top layer's new hidden state to `out`.
    ///
    /// - `state`: from [`Lstm::zero_state`] (or a forward's final state); `x_t`: `[batch, input_size]`;
    ///   `out`: `[batch, h]`.
    pub fn step(&self, state: &mut RnnState<T>, x_t: &Tensor<T>, out: &mut Tensor<T>) {
        rnn_step(Cell::Lstm, &self.config, &self.layers, state, x_t, out);
    }
}

impl<T: Float> Module<T> for Lstm<T> {
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
