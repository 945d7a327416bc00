//! Shared machinery of [`crate::Gru`] and [`crate::Lstm`]: the config, the per-layer parameters, the
//! state and cache types, and the layer / time loops (all GEMMs) around the cell-specific pointwise
//! kernels in `gru.rs` and `lstm.rs`.
//!
//! Layouts. The user-facing tensors are batch-first (`x: [batch, seq, d_in]`, `y: [batch, seq, h]`);
//! the recurrent state history is time-major (`hs: [seq + 1, batch, h]`) so that the state of every step
//! is one contiguous `[batch, h]` matrix for the per-step GEMM `h W_hh^T`, and all step gradients of
//! `W_hh` are one GEMM over `[seq * batch]` rows at the end of the backward pass.
//!
//! Padding. At a step whose mask flag is false the state is carried through unchanged
//! (`h_t = h_{t-1}`, `c_t = c_{t-1}`) and the output is exactly zero, so a padded step contributes
//! nothing to outputs, final states or gradients; this serves left padding (SASRec) and right padding
//! (`pack_padded_sequence`) alike.
//!
//! Dropout between layers (PyTorch's `dropout` argument) is off unless the network was built with
//! `with_dropout(p)` and the cache holds a training key: the mask is regenerated from the key in the
//! backward pass (`seqrec_tensor::dropout_forward` / `dropout_backward`), so nothing extra is stored.

use std::marker::PhantomData;

use rayon::prelude::*;

use seqrec_tensor::simd::as_f32_mut;
use seqrec_tensor::{
    DropoutKey, Float, Tensor, Transpose, add_bias, dropout_backward, dropout_forward, gemm,
    gemm_slice, sigmoid_scalar, splitmix64, transpose,
};

use crate::init::{Rng, torch_default_bound};
use crate::param::{Param, join};
use crate::{gru, lstm};

/// Sizes of a multi-layer recurrent network ([`crate::Gru`] or [`crate::Lstm`]), validated once when the
/// network is built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RnnConfig {
    /// Width of the input features `d_in` of layer 0.
    pub input_size: usize,
    /// Width of the hidden state `h` (also the input width of layers 1..).
    pub hidden_size: usize,
    /// Number of stacked layers.
    pub num_layers: usize,
}

/// An inconsistent [`RnnConfig`].
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum RnnConfigError {
    /// Occurs when `input_size`, `hidden_size` or `num_layers` is zero.
    #[error("RnnConfig.{field} must be at least 1, got {value}")]
    Zero {
        /// The offending field.
        field: &'static str,
        /// Its value (0).
        value: usize,
    },
    /// Occurs when the dropout probability between layers is not in `[0, 1)` (or is NaN).
    #[error("RNN dropout between layers must be in [0, 1), got {value}")]
    Dropout {
        /// The rejected probability.
        value: f64,
    },
}

impl RnnConfig {
    /// Checks that every size is positive.
    ///
    /// # Errors
    /// [`RnnConfigError::Zero`] naming the first zero field.
    pub fn validate(&self) -> Result<(), RnnConfigError> {
        for (field, value) in [
            ("input_size", self.input_size),
            ("hidden_size", self.hidden_size),
            ("num_layers", self.num_layers),
        ] {
            if value == 0 {
                return Err(RnnConfigError::Zero { field, value });
            }
        }
        Ok(())
    }

    /// Input width of layer `l`.
    pub(crate) fn layer_input(&self, l: usize) -> usize {
        if l == 0 {
            self.input_size
        } else {
            self.hidden_size
        }
    }
}

/// Which recurrent cell a network runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cell {
    /// PyTorch's `nn.GRU`: gates r, z, n.
    Gru,
    /// PyTorch's `nn.LSTM`: gates i, f, g, o and a cell state.
    Lstm,
}

impl Cell {
    /// Number of gates `G`: parameter matrices are `[G * h, ..]`.
    pub(crate) fn gates(self) -> usize {
        match self {
            Cell::Gru => 3,
            Cell::Lstm => 4,
        }
    }

    /// Values cached per step and hidden unit for the backward pass (`K`: gates are `[seq, batch, K * h]`).
    /// GRU: r, z, n, `W_hn h + b_hn`; LSTM: i, f, g, o, `tanh(c)`.
    pub(crate) fn cached(self) -> usize {
        match self {
            Cell::Gru => 4,
            Cell::Lstm => 5,
        }
    }

    fn has_c(self) -> bool {
        self == Cell::Lstm
    }
}

/// The parameters of one layer `k`, with PyTorch's names and layouts (gate blocks stacked along rows in
/// PyTorch's order: r, z, n for GRU; i, f, g, o for LSTM).
#[derive(Clone, Debug)]
pub struct RnnLayer<T> {
    /// `weight_ih_l{k}`: `[G * h, d_in]` (`d_in = input_size` for layer 0, `hidden_size` above).
    pub weight_ih: Param<T>,
    /// `weight_hh_l{k}`: `[G * h, h]`.
    pub weight_hh: Param<T>,
    /// `bias_ih_l{k}`: `[G * h]`.
    pub bias_ih: Param<T>,
    /// `bias_hh_l{k}`: `[G * h]`.
    pub bias_hh: Param<T>,
}

impl<T: Float> RnnLayer<T> {
    /// PyTorch's default initialisation: every tensor uniform in `±1/sqrt(h)`.
    fn new(prefix: &str, k: usize, gates: usize, d_in: usize, h: usize, rng: &mut Rng) -> Self {
        let bound = torch_default_bound(h);
        let mut p = |name: &str, shape: &[usize]| {
            Param::new(
                join(prefix, &format!("{name}_l{k}")),
                rng.uniform_tensor(shape, bound),
            )
        };
        Self {
            weight_ih: p("weight_ih", &[gates * h, d_in]),
            weight_hh: p("weight_hh", &[gates * h, h]),
            bias_ih: p("bias_ih", &[gates * h]),
            bias_hh: p("bias_hh", &[gates * h]),
        }
    }

    /// The four parameters in PyTorch's `named_parameters()` order.
    pub(crate) fn visit(&self, f: &mut dyn FnMut(&Param<T>)) {
        f(&self.weight_ih);
        f(&self.weight_hh);
        f(&self.bias_ih);
        f(&self.bias_hh);
    }

    /// Mutable form of [`RnnLayer::visit`], same order.
    pub(crate) fn visit_mut(&mut self, f: &mut dyn FnMut(&mut Param<T>)) {
        f(&mut self.weight_ih);
        f(&mut self.weight_hh);
        f(&mut self.bias_ih);
        f(&mut self.bias_hh);
    }
}

/// Builds the layers of a validated config.
pub(crate) fn build_layers<T: Float>(
    cell: Cell,
    prefix: &str,
    config: &RnnConfig,
    rng: &mut Rng,
) -> Result<Vec<RnnLayer<T>>, RnnConfigError> {
    config.validate()?;
    Ok((0..config.num_layers)
        .map(|k| {
            RnnLayer::new(
                prefix,
                k,
                cell.gates(),
                config.layer_input(k),
                config.hidden_size,
                rng,
            )
        })
        .collect())
}

/// The recurrent state of every layer: `h` (and `c` for an LSTM), each `[layers, batch, h]`.
///
/// Used as the initial state (`h0`, `c0`), the final state (`h_n`, `c_n`), their gradients, and the
/// carried state of the step-by-step API (which keeps its scratch buffers here, so stepping allocates
/// nothing after the first call).
#[derive(Clone, Debug)]
pub struct RnnState<T> {
    /// Hidden state, `[layers, batch, h]`.
    pub h: Tensor<T>,
    /// Cell state, `[layers, batch, h]`; `Some` exactly for an LSTM.
    pub c: Option<Tensor<T>>,
    /// Step scratch: `[gx | hh | gates | y | c_new]` rows, grown on demand.
    scratch: Vec<T>,
}

impl<T: Float> RnnState<T> {
    pub(crate) fn zeros(cell: Cell, layers: usize, batch: usize, h: usize) -> Self {
        Self {
            h: Tensor::zeros(&[layers, batch, h]),
            c: cell.has_c().then(|| Tensor::zeros(&[layers, batch, h])),
            scratch: Vec::new(),
        }
    }

    /// Batch size (axis 1 of `h`; 0 if `h` was replaced by a tensor of lower rank, which the layers
    /// then reject with a message naming the expected shape).
    pub fn batch(&self) -> usize {
        self.h.shape().get(1).copied().unwrap_or(0)
    }

    /// Sets every element (of `h` and `c`) to zero, e.g. to start a new session.
    pub fn reset(&mut self) {
        self.h.fill(T::ZERO);
        if let Some(c) = &mut self.c {
            c.fill(T::ZERO);
        }
    }
}

/// Everything the forward pass saves for the backward pass, plus the scratch both use. Allocate once
/// per (maximal) batch shape with `Gru::new_cache` / `Lstm::new_cache` and reuse every step; a smaller
/// batch reuses the same storage.
#[derive(Clone, Debug)]
pub struct RnnCache<T> {
    /// Per layer: the state history `[seq + 1, batch, h]`; `hs[l][0]` is the initial state.
    hs: Vec<Tensor<T>>,
    /// Per layer (LSTM only): the cell state history `[seq + 1, batch, h]`.
    cs: Vec<Tensor<T>>,
    /// Per layer: gate activations `[seq, batch, K * h]` (see [`Cell::cached`]).
    gates: Vec<Tensor<T>>,
    /// Outputs of layers `0..L-1`, the inputs of the layers above: `[batch, seq, h]`.
    ys: Vec<Tensor<T>>,
    /// With dropout between layers: `ys` after dropout, what layers `1..L` actually read.
    ys_dropped: Vec<Tensor<T>>,
    /// Training dropout key between layers for the next forward (and its backward); `None` = no dropout.
    dropout_key: Option<DropoutKey>,
    /// Forward: input projections `x W_ih^T + b_ih`, `[batch, seq, G * h]`. Backward: their gradients.
    gx: Tensor<T>,
    /// Per-step `h W_hh^T`, `[batch, G * h]`.
    hh: Tensor<T>,
    /// `W_hh^T` of the layer being run forward, `[h, G * h]`.
    whh_t: Tensor<T>,
    /// Backward: gradients of `h W_hh^T + b_hh` for every step, time-major `[seq, batch, G * h]`.
    dgh: Tensor<T>,
    /// Backward: gradient of the layer output fed to the layer below, `[batch, seq, h]`.
    dy_inner: Tensor<T>,
    /// Backward with dropout: the gradient before the dropout mask, `[batch, seq, h]`.
    dy_tmp: Tensor<T>,
    /// Backward: carried `dL/dh_t`, `[batch, h]`.
    dh: Tensor<T>,
    /// Backward: carried `dL/dc_t` (LSTM), `[batch, h]`.
    dc: Tensor<T>,
}

impl<T: Float> RnnCache<T> {
    pub(crate) fn new(cell: Cell, config: &RnnConfig, batch: usize, seq: usize) -> Self {
        let mut cache = Self {
            hs: (0..config.num_layers)
                .map(|_| Tensor::zeros(&[0]))
                .collect(),
            cs: (0..if cell.has_c() { config.num_layers } else { 0 })
                .map(|_| Tensor::zeros(&[0]))
                .collect(),
            gates: (0..config.num_layers)
                .map(|_| Tensor::zeros(&[0]))
                .collect(),
            ys: (1..config.num_layers)
                .map(|_| Tensor::zeros(&[0]))
                .collect(),
            ys_dropped: (1..config.num_layers)
                .map(|_| Tensor::zeros(&[0]))
                .collect(),
            dropout_key: None,
            gx: Tensor::zeros(&[0]),
            hh: Tensor::zeros(&[0]),
            whh_t: Tensor::zeros(&[0]),
            dgh: Tensor::zeros(&[0]),
            dy_inner: Tensor::zeros(&[0]),
            dy_tmp: Tensor::zeros(&[0]),
            dh: Tensor::zeros(&[0]),
            dc: Tensor::zeros(&[0]),
        };
        cache.resize(cell, config.hidden_size, batch, seq);
        cache
    }

    /// Sets the dropout key between layers for the next forward and its backward: `Some(key)` in training
    /// (a new `key.step` every training step), `None` for evaluation. Has no effect on a network built
    /// without dropout (or with one layer).
    pub fn set_dropout_key(&mut self, key: Option<DropoutKey>) {
        self.dropout_key = key;
    }

    /// Shapes every buffer for `[batch, seq]` (no reallocation when it has held as many elements before).
    fn resize(&mut self, cell: Cell, h: usize, batch: usize, seq: usize) {
        let (g, k) = (cell.gates() * h, cell.cached() * h);
        for t in self.hs.iter_mut().chain(self.cs.iter_mut()) {
            t.resize(&[seq + 1, batch, h]);
        }
        for t in &mut self.gates {
            t.resize(&[seq, batch, k]);
        }
        let dropout = self.dropout_key.is_some();
        for t in self.ys.iter_mut().chain([&mut self.dy_inner]) {
            t.resize(&[batch, seq, h]);
        }
        // Only sized when used: a network without dropout keeps them empty.
        for t in self.ys_dropped.iter_mut().chain([&mut self.dy_tmp]) {
            t.resize(&[if dropout { batch } else { 0 }, seq, h]);
        }
        self.gx.resize(&[batch, seq, g]);
        self.hh.resize(&[batch, g]);
        self.whh_t.resize(&[h, g]);
        self.dgh.resize(&[seq, batch, g]);
        self.dh.resize(&[batch, h]);
        self.dc.resize(&[batch, h]);
    }
}

/// Product on raw strided slices (one thread): `C [m, n] = A [m, k] B [k, n] + beta * C`, each operand
/// given by its (row, column) strides.
///
/// matrixmultiply packs `A` fast when its rows are contiguous (`rsa = 1`) and `B` when its columns are
/// (`csb = 1`), element by element otherwise; the per-step products are arranged to hit the fast cases.
#[allow(clippy::too_many_arguments)]
fn gemm_strided<T: Float>(
    m: usize,
    k: usize,
    n: usize,
    a: &[T],
    (rsa, csa): (usize, usize),
    b: &[T],
    (rsb, csb): (usize, usize),
    beta: T,
    c: &mut [T],
    (rsc, csc): (usize, usize),
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        k == 0
            || ((m - 1) * rsa + (k - 1) * csa < a.len() && (k - 1) * rsb + (n - 1) * csb < b.len()),
        "gemm_strided: operands too short"
    );
    assert!(
        (m - 1) * rsc + (n - 1) * csc < c.len(),
        "gemm_strided: output too short"
    );
    // SAFETY: matrixmultiply reads A [m, k] at (rsa, csa) and B [k, n] at (rsb, csb), whose last elements
    // were checked above to lie inside `a` and `b`; it writes C [m, n] at (rsc, csc) inside `c` (checked;
    // every caller passes strides of a one-to-one layout). `c` is a `&mut` slice, so it aliases neither
    // input.
    unsafe {
        T::gemm_raw(
            m,
            k,
            n,
            T::ONE,
            a.as_ptr(),
            rsa as isize,
            csa as isize,
            b.as_ptr(),
            rsb as isize,
            csb as isize,
            beta,
            c.as_mut_ptr(),
            rsc as isize,
            csc as isize,
        );
    }
}

/// A mutable buffer that the row blocks of [`for_row_blocks`] share: each block takes `&mut` slices of
/// the rows it owns, which no other block touches.
struct Rows<'a, T> {
    ptr: *mut T,
    len: usize,
    _buf: PhantomData<&'a mut [T]>,
}

impl<T> Clone for Rows<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Rows<'_, T> {}

// SAFETY: `Rows` hands out only the disjoint ranges its users promise (see `get`), so sharing it between
// threads is sharing `&mut` access to distinct elements of a `Send` type.
unsafe impl<T: Send> Send for Rows<'_, T> {}
// SAFETY: as for `Send`.
unsafe impl<T: Send> Sync for Rows<'_, T> {}

impl<'a, T> Rows<'a, T> {
    fn new(buf: &'a mut [T]) -> Self {
        Self {
            ptr: buf.as_mut_ptr(),
            len: buf.len(),
            _buf: PhantomData,
        }
    }

    /// Elements `start..start + len`.
    ///
    /// # Safety
    /// While the returned slice lives, no other slice obtained from this buffer may overlap it.
    #[allow(clippy::mut_from_ref)]
    unsafe fn get(&self, start: usize, len: usize) -> &'a mut [T] {
        assert!(start + len <= self.len, "Rows::get out of bounds");
        // SAFETY: in bounds (checked above) of a buffer borrowed mutably for 'a; exclusivity is the
        // caller's promise.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), len) }
    }
}

/// Runs `f(b0, b1)` over blocks of batch rows, one block per rayon thread (at least 16 rows each, a
/// multiple of 8: the f32 kernel's row tile), the first on the calling thread.
///
/// Each row's arithmetic does not depend on the blocking (a GEMM row is the same sum in the same order
/// whichever rows share its call), so results are bit-identical on any number of threads.
fn for_row_blocks(batch: usize, f: impl Fn(usize, usize) + Sync) {
    let blocks = rayon::current_num_threads().min(batch / 16).max(1);
    if blocks == 1 {
        f(0, batch);
        return;
    }
    let per = batch.div_ceil(blocks).next_multiple_of(8);
    (0..batch.div_ceil(per))
        .into_par_iter()
        .for_each(|i| f(i * per, ((i + 1) * per).min(batch)));
}

/// Checks the shapes of a forward / backward call and returns `(batch, seq)`.
fn check_input<T: Float>(
    op: &str,
    config: &RnnConfig,
    x: &Tensor<T>,
    mask: Option<&[bool]>,
) -> (usize, usize) {
    let s = x.shape();
    assert!(
        s.len() == 3 && s[2] == config.input_size,
        "{op}: x must be [batch, seq, {}], got {s:?}",
        config.input_size
    );
    let (batch, seq) = (s[0], s[1]);
    if let Some(m) = mask {
        assert_eq!(
            m.len(),
            batch * seq,
            "{op}: mask must hold batch * seq = {batch} * {seq} flags"
        );
    }
    (batch, seq)
}

fn check_state<T: Float>(
    op: &str,
    what: &str,
    cell: Cell,
    config: &RnnConfig,
    batch: usize,
    s: &RnnState<T>,
) {
    let want = [config.num_layers, batch, config.hidden_size];
    assert_eq!(s.h.shape(), want, "{op}: {what}.h must be {want:?}");
    match (&s.c, cell.has_c()) {
        (Some(c), true) => assert_eq!(c.shape(), want, "{op}: {what}.c must be {want:?}"),
        (None, false) => {}
        (_, has) => panic!(
            "{op}: {what}.c must be {} for this cell",
            if has { "Some" } else { "None" }
        ),
    }
}

/// Forward of a multi-layer network over a padded batch.
///
/// - `x`: `[batch, seq, d_in]`; `mask`: `[batch, seq]` flags, true = real step (`None`: all real);
/// - `init`: `h0` (`c0`) `[layers, batch, h]` or `None` for zeros;
/// - `out`: `[batch, seq, h]`, the top layer's outputs (zero at padded steps), overwritten;
/// - `last`: receives `h_n` (`c_n`), the state after the last real step of each row.
#[allow(clippy::too_many_arguments)]
pub(crate) fn rnn_forward<T: Float>(
    cell: Cell,
    config: &RnnConfig,
    layers: &[RnnLayer<T>],
    out: &mut Tensor<T>,
    last: &mut RnnState<T>,
    cache: &mut RnnCache<T>,
    x: &Tensor<T>,
    mask: Option<&[bool]>,
    init: Option<&RnnState<T>>,
    dropout: f64,
) {
    let op = "rnn forward";
    let (batch, seq) = check_input(op, config, x, mask);
    let h = config.hidden_size;
    assert_eq!(
        out.shape(),
        [batch, seq, h],
        "{op}: out must be [batch, seq, h]"
    );
    check_state(op, "final state", cell, config, batch, last);
    if let Some(s) = init {
        check_state(op, "initial state", cell, config, batch, s);
    }
    cache.resize(cell, h, batch, seq);
    let nl = layers.len();
    for (l, layer) in layers.iter().enumerate() {
        let RnnCache {
            hs,
            cs,
            gates,
            ys,
            ys_dropped,
            dropout_key,
            gx,
            hh,
            whh_t,
            ..
        } = &mut *cache;
        transpose(whh_t, &layer.weight_hh.value, 0, 1);
        let whh_t = whh_t.as_slice();
        let (ys_below, ys_here) = ys.split_at_mut(l);
        // (0) layers above the first read the output below, after dropout in training
        let xin = match (l, *dropout_key) {
            (0, _) => x,
            (_, Some(key)) if dropout > 0.0 => {
                dropout_forward(
                    &mut ys_dropped[l - 1],
                    &ys_below[l - 1],
                    dropout,
                    layer_key(key, l),
                );
                &ys_dropped[l - 1]
            }
            _ => &ys_below[l - 1],
        };
        let y: &mut Tensor<T> = if l + 1 == nl {
            &mut *out
        } else {
            &mut ys_here[0]
        };
        // (1) gx = x W_ih^T + b_ih for all steps at once: [batch * seq, G h]
        gemm(
            gx,
            T::ONE,
            xin,
            Transpose::No,
            &layer.weight_ih.value,
            Transpose::Yes,
            T::ZERO,
        );
        add_bias(gx, &layer.bias_ih.value);
        // (2) hs[0] = h0, cs[0] = c0
        let hs = hs[l].as_mut_slice();
        let mut cs = cs.get_mut(l).map(|c| c.as_mut_slice());
        let bh = batch * h;
        match init {
            Some(s) => {
                hs[..bh].copy_from_slice(&s.h.as_slice()[l * bh..(l + 1) * bh]);
                if let (Some(cs), Some(c0)) = (cs.as_deref_mut(), &s.c) {
                    cs[..bh].copy_from_slice(&c0.as_slice()[l * bh..(l + 1) * bh]);
                }
            }
            None => {
                hs[..bh].fill(T::ZERO);
                if let Some(cs) = cs.as_deref_mut() {
                    cs[..bh].fill(T::ZERO);
                }
            }
        }
        let gx = gx.as_slice();
        let bhh = layer.bias_hh.value.as_slice();
        // Rows of the batch never interact, so the whole time loop runs per block of rows, one block per
        // thread, without synchronisation between steps (see `row_blocks`). Each block writes only its
        // own rows of hs, cs, hh, gates and y.
        let block = FwdBlock {
            cell,
            mask,
            seq,
            batch,
            h,
            gx,
            bhh,
            whh_t,
            hs: Rows::new(hs),
            cs: cs.as_deref_mut().map(Rows::new),
            hh: Rows::new(hh.as_mut_slice()),
            gates: Rows::new(gates[l].as_mut_slice()),
            y: Rows::new(y.as_mut_slice()),
        };
        for_row_blocks(batch, |b0, b1| forward_block(&block, b0, b1));
        // (6) h_n = hs[seq], c_n = cs[seq]
        last.h.as_mut_slice()[l * bh..(l + 1) * bh].copy_from_slice(&hs[seq * bh..]);
        if let (Some(cl), Some(cs)) = (&mut last.c, cs) {
            cl.as_mut_slice()[l * bh..(l + 1) * bh].copy_from_slice(&cs[seq * bh..]);
        }
    }
}

/// What [`forward_block`] reads and writes: one layer's inputs and, behind [`Rows`], the buffers whose
/// rows the blocks share.
#[derive(Clone, Copy)]
struct FwdBlock<'a, T> {
    cell: Cell,
    mask: Option<&'a [bool]>,
    seq: usize,
    batch: usize,
    h: usize,
    /// `x W_ih^T + b_ih`, `[batch, seq, G h]`.
    gx: &'a [T],
    bhh: &'a [T],
    /// `W_hh^T`, `[h, G h]`.
    whh_t: &'a [T],
    /// `[seq + 1, batch, h]`.
    hs: Rows<'a, T>,
    cs: Option<Rows<'a, T>>,
    /// `[batch, G h]`.
    hh: Rows<'a, T>,
    /// `[seq, batch, K h]`.
    gates: Rows<'a, T>,
    /// `[batch, seq, h]`.
    y: Rows<'a, T>,
}

/// The forward time loop (steps (3)-(5) of [`rnn_forward`]) for batch rows `b0..b1`, compiled with
/// AVX-512F enabled when the CPU has it (the cells' element-wise loops, inlined here, then use 16-lane
/// vectors; the arithmetic is the same IEEE operations either way, so results do not change).
fn forward_block<T: Float>(blk: &FwdBlock<'_, T>, b0: usize, b1: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        fn avx512<T: Float>(blk: &FwdBlock<'_, T>, b0: usize, b1: usize) {
            forward_block_body(blk, b0, b1)
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F (checked on the line above).
            return unsafe { avx512(blk, b0, b1) };
        }
    }
    forward_block_body(blk, b0, b1)
}

#[inline(always)]
fn forward_block_body<T: Float>(blk: &FwdBlock<'_, T>, b0: usize, b1: usize) {
    let FwdBlock {
        cell,
        mask,
        seq,
        batch,
        h,
        gx,
        bhh,
        whh_t,
        hs: hs_p,
        cs: cs_p,
        hh: hh_p,
        gates: gates_p,
        y: y_p,
    } = *blk;
    let (g, k, bh) = (cell.gates() * h, cell.cached() * h, batch * h);
    let has_c = cell.has_c();
    let nb = b1 - b0;
    // SAFETY (every `Rows::get` below): the ranges are rows b0..b1 of one step (of hs, cs, gates,
    // hh) or rows b0..b1 of y, which only this block touches; within the block, the slices of
    // steps t and t + 1 are disjoint and each is dropped before the next step.
    let hh = unsafe { hh_p.get(b0 * g, nb * g) };
    for t in 0..seq {
        let h_prev = unsafe { hs_p.get(t * bh + b0 * h, nb * h) };
        let h_next = unsafe { hs_p.get((t + 1) * bh + b0 * h, nb * h) };
        // (3) hh = h_{t-1} W_hh^T: [nb, h] x [h, G h], W_hh^T read from its transposed copy (the
        // AVX-512 kernel packs its rows with contiguous copies and writes hh row by row)
        gemm_strided(nb, h, g, h_prev, (h, 1), whh_t, (g, 1), T::ZERO, hh, (g, 1));
        let (c_prev, c_next): (&[T], &mut [T]) = match cs_p {
            Some(cs_p) if has_c => unsafe {
                (
                    cs_p.get(t * bh + b0 * h, nb * h),
                    cs_p.get((t + 1) * bh + b0 * h, nb * h),
                )
            },
            _ => (&[], &mut []),
        };
        let gates_t = unsafe { gates_p.get((t * batch + b0) * k, nb * k) };
        for bi in 0..nb {
            let b = b0 + bi;
            let row = bi * h..(bi + 1) * h;
            let yrow = unsafe { y_p.get((b * seq + t) * h, h) };
            if mask.is_some_and(|m| !m[b * seq + t]) {
                // (4) padded step: carry the state, output zero.
                h_next[row.clone()].copy_from_slice(&h_prev[row.clone()]);
                if has_c {
                    c_next[row.clone()].copy_from_slice(&c_prev[row]);
                }
                yrow.fill(T::ZERO);
                continue;
            }
            // (5) the cell: gates and the new state, y_t = h_t
            let gxr = &gx[(b * seq + t) * g..(b * seq + t + 1) * g];
            let hhr = &hh[bi * g..(bi + 1) * g];
            let gr = &mut gates_t[bi * k..(bi + 1) * k];
            match cell {
                Cell::Gru => gru::cell_forward(
                    gr,
                    &mut h_next[row.clone()],
                    gxr,
                    hhr,
                    bhh,
                    &h_prev[row.clone()],
                ),
                Cell::Lstm => lstm::cell_forward(
                    gr,
                    &mut h_next[row.clone()],
                    &mut c_next[row.clone()],
                    gxr,
                    hhr,
                    bhh,
                    &c_prev[row.clone()],
                ),
            }
            yrow.copy_from_slice(&h_next[row]);
        }
    }
}

/// Backward of [`rnn_forward`] (full backpropagation through time).
///
/// - `dy`: `dL/d out` `[batch, seq, h]` (ignored at padded steps, where the output is a constant zero);
/// - `dlast`: `dL/d h_n` (`c_n`) or `None` when the loss does not read the final state;
/// - `dx`: `dL/dx` `[batch, seq, d_in]` (assigned; zero at padded steps), or `None`;
/// - `dinit`: `dL/d h0` (`c0`) (assigned), or `None`;
/// - parameter gradients accumulate.
#[allow(clippy::too_many_arguments)]
pub(crate) fn rnn_backward<T: Float>(
    cell: Cell,
    config: &RnnConfig,
    layers: &mut [RnnLayer<T>],
    mut dx: Option<&mut Tensor<T>>,
    mut dinit: Option<&mut RnnState<T>>,
    dy: &Tensor<T>,
    dlast: Option<&RnnState<T>>,
    x: &Tensor<T>,
    mask: Option<&[bool]>,
    cache: &mut RnnCache<T>,
    dropout: f64,
) {
    let op = "rnn backward";
    let (batch, seq) = check_input(op, config, x, mask);
    let h = config.hidden_size;
    let g = cell.gates() * h;
    assert_eq!(
        dy.shape(),
        [batch, seq, h],
        "{op}: dy must be [batch, seq, h]"
    );
    assert_eq!(
        cache.hs[0].shape(),
        [seq + 1, batch, h],
        "{op}: the cache does not hold a forward pass of this shape"
    );
    if let Some(s) = dlast {
        check_state(op, "dlast", cell, config, batch, s);
    }
    if let Some(s) = dinit.as_deref() {
        check_state(op, "dinit", cell, config, batch, s);
    }
    if let Some(dx) = dx.as_deref() {
        assert_eq!(dx.shape(), x.shape(), "{op}: dx must have x's shape");
    }
    let bh = batch * h;
    let nl = layers.len();
    for l in (0..nl).rev() {
        let layer = &mut layers[l];
        let RnnCache {
            hs,
            cs,
            gates,
            ys,
            ys_dropped,
            dropout_key,
            gx: dgx,
            dgh,
            dy_inner,
            dy_tmp,
            dh,
            dc,
            ..
        } = &mut *cache;
        let drop_key = dropout_key.filter(|_| dropout > 0.0 && l > 0);
        // Reverse of (6): start from dL/dh_n, dL/dc_n.
        let (dh, dc) = (dh.as_mut_slice(), dc.as_mut_slice());
        match dlast {
            Some(s) => {
                dh.copy_from_slice(&s.h.as_slice()[l * bh..(l + 1) * bh]);
                if let Some(c) = &s.c {
                    dc.copy_from_slice(&c.as_slice()[l * bh..(l + 1) * bh]);
                }
            }
            None => {
                dh.fill(T::ZERO);
                dc.fill(T::ZERO);
            }
        }
        let dy_l = if l + 1 == nl {
            dy.as_slice()
        } else {
            dy_inner.as_slice()
        };
        let hs = hs[l].as_slice();
        let cs = cs.get(l).map(|c| c.as_slice());
        let gates = gates[l].as_slice();
        let whh = layer.weight_hh.value.as_slice();
        // As in the forward, each block of batch rows runs the whole reversed time loop on its own
        // rows of dgx, dgh, dh and dc.
        let block = BwdBlock {
            cell,
            mask,
            seq,
            batch,
            h,
            hs,
            cs,
            gates,
            whh,
            dy: dy_l,
            dgx: Rows::new(dgx.as_mut_slice()),
            dgh: Rows::new(dgh.as_mut_slice()),
            dh: Rows::new(&mut *dh),
            dc: Rows::new(&mut *dc),
        };
        for_row_blocks(batch, |b0, b1| backward_block(&block, b0, b1));
        // Reverse of (2): dh0 = dh, dc0 = dc.
        if let Some(s) = dinit.as_deref_mut() {
            s.h.as_mut_slice()[l * bh..(l + 1) * bh].copy_from_slice(dh);
            if let Some(c) = &mut s.c {
                c.as_mut_slice()[l * bh..(l + 1) * bh].copy_from_slice(dc);
            }
        }
        // Reverse of (3), all steps at once: dW_hh += dgh^T hs[0..seq]: [G h, seq batch] x [seq batch, h]
        gemm_slice(
            (g, seq * batch, h),
            T::ONE,
            dgh.as_slice(),
            Transpose::Yes,
            &hs[..seq * bh],
            Transpose::No,
            T::ONE,
            layer.weight_hh.grad.as_mut_slice(),
        );
        // db_hh += column sums of dgh. For an LSTM dgx holds the same values (in another row order),
        // so db_ih receives the same sums in the same pass over [seq batch, G h] (one pass instead of
        // two: LSTM forward + backward 2% faster, paired).
        let (db_hh, db_ih) = (
            layer.bias_hh.grad.as_mut_slice(),
            layer.bias_ih.grad.as_mut_slice(),
        );
        match cell {
            Cell::Gru => add_col_sums(db_hh, None, dgh.as_slice()),
            Cell::Lstm => add_col_sums(db_hh, Some(db_ih), dgh.as_slice()),
        }
        // Reverse of (1): dW_ih += dgx^T x, db_ih += sum dgx, dx = dgx W_ih.
        let xin = match (l, drop_key) {
            (0, _) => x,
            (_, Some(_)) => &ys_dropped[l - 1],
            _ => &ys[l - 1],
        };
        gemm(
            &mut layer.weight_ih.grad,
            T::ONE,
            dgx,
            Transpose::Yes,
            xin,
            Transpose::No,
            T::ONE,
        );
        if cell == Cell::Gru {
            add_col_sums(layer.bias_ih.grad.as_mut_slice(), None, dgx.as_slice());
        }
        let dxin = if l == 0 {
            dx.as_deref_mut()
        } else {
            Some(&mut *dy_inner)
        };
        if let Some(dxin) = dxin {
            gemm(
                dxin,
                T::ONE,
                dgx,
                Transpose::No,
                &layer.weight_ih.value,
                Transpose::No,
                T::ZERO,
            );
        }
        // Reverse of (0): through the dropout mask of this layer's input.
        if let Some(key) = drop_key {
            dropout_backward(dy_tmp, dy_inner, dropout, layer_key(key, l));
            std::mem::swap(dy_inner, dy_tmp);
        }
    }
}

/// What [`backward_block`] reads and writes (see [`FwdBlock`]).
#[derive(Clone, Copy)]
struct BwdBlock<'a, T> {
    cell: Cell,
    mask: Option<&'a [bool]>,
    seq: usize,
    batch: usize,
    h: usize,
    /// `[seq + 1, batch, h]`.
    hs: &'a [T],
    cs: Option<&'a [T]>,
    /// `[seq, batch, K h]`.
    gates: &'a [T],
    /// `W_hh`, `[G h, h]`.
    whh: &'a [T],
    /// `dL/dy` of this layer, `[batch, seq, h]`.
    dy: &'a [T],
    /// `[batch, seq, G h]`.
    dgx: Rows<'a, T>,
    /// `[seq, batch, G h]`.
    dgh: Rows<'a, T>,
    /// `[batch, h]` each.
    dh: Rows<'a, T>,
    dc: Rows<'a, T>,
}

/// The reversed time loop of [`rnn_backward`] for batch rows `b0..b1`, compiled with AVX-512F enabled
/// when the CPU has it (as [`forward_block`]).
fn backward_block<T: Float>(blk: &BwdBlock<'_, T>, b0: usize, b1: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        fn avx512<T: Float>(blk: &BwdBlock<'_, T>, b0: usize, b1: usize) {
            backward_block_body(blk, b0, b1)
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F (checked on the line above).
            return unsafe { avx512(blk, b0, b1) };
        }
    }
    backward_block_body(blk, b0, b1)
}

#[inline(always)]
fn backward_block_body<T: Float>(blk: &BwdBlock<'_, T>, b0: usize, b1: usize) {
    let BwdBlock {
        cell,
        mask,
        seq,
        batch,
        h,
        hs,
        cs,
        gates,
        whh,
        dy: dy_l,
        dgx: dgx_p,
        dgh: dgh_p,
        dh: dh_p,
        dc: dc_p,
    } = *blk;
    let (g, k, bh) = (cell.gates() * h, cell.cached() * h, batch * h);
    let nb = b1 - b0;
    // SAFETY (every `Rows::get` below): rows b0..b1 of dh, dc and of one step of dgh, and rows
    // b0..b1 of dgx, which only this block touches; each step's slices are dropped before the
    // next step takes its own.
    let dh = unsafe { dh_p.get(b0 * h, nb * h) };
    let dc = unsafe { dc_p.get(b0 * h, nb * h) };
    for t in (0..seq).rev() {
        let h_prev = &hs[t * bh + b0 * h..t * bh + b1 * h];
        let c_prev = cs.map_or(&[][..], |c| &c[t * bh + b0 * h..t * bh + b1 * h]);
        let gates_t = &gates[(t * batch + b0) * k..(t * batch + b1) * k];
        let dgh_t = unsafe { dgh_p.get((t * batch + b0) * g, nb * g) };
        for bi in 0..nb {
            let b = b0 + bi;
            let row = bi * h..(bi + 1) * h;
            let dgx_r = unsafe { dgx_p.get((b * seq + t) * g, g) };
            let dgh_r = &mut dgh_t[bi * g..(bi + 1) * g];
            if mask.is_some_and(|m| !m[b * seq + t]) {
                // Reverse of (4): the carried state passes dh, dc through; the step's gate
                // gradients are zero.
                dgx_r.fill(T::ZERO);
                dgh_r.fill(T::ZERO);
                continue;
            }
            // Reverse of (5), y_t = h_t: dh_t += dy_t
            let dhr = &mut dh[row.clone()];
            for (d, &v) in dhr
                .iter_mut()
                .zip(&dy_l[(b * seq + t) * h..(b * seq + t + 1) * h])
            {
                *d += v;
            }
            // Reverse of (5), the cell: gate pre-activation gradients, and the part of dh_{t-1}
            // (dc_{t-1}) that does not go through W_hh.
            let gr = &gates_t[bi * k..(bi + 1) * k];
            match cell {
                Cell::Gru => gru::cell_backward(dgx_r, dgh_r, dhr, gr, &h_prev[row]),
                Cell::Lstm => {
                    lstm::cell_backward(dgx_r, dgh_r, dhr, &mut dc[row.clone()], gr, &c_prev[row])
                }
            }
        }
        // Reverse of (3): dh_{t-1} += dgh_t W_hh: [nb, G h] x [G h, h]
        gemm_strided(nb, g, h, dgh_t, (g, 1), whh, (h, 1), T::ONE, dh, (h, 1));
    }
}

/// One step of every layer for a batch of single events, carrying `state` (inference; no cache).
///
/// - `x_t`: `[batch, d_in]`; `out`: `[batch, h]`, the top layer's new hidden state.
pub(crate) fn rnn_step<T: Float>(
    cell: Cell,
    config: &RnnConfig,
    layers: &[RnnLayer<T>],
    state: &mut RnnState<T>,
    x_t: &Tensor<T>,
    out: &mut Tensor<T>,
) {
    let op = "rnn step";
    let batch = state.batch();
    check_state(op, "state", cell, config, batch, state);
    assert_eq!(
        x_t.shape(),
        [batch, config.input_size],
        "{op}: x_t must be [batch, d_in]"
    );
    assert_eq!(
        out.shape(),
        [batch, config.hidden_size],
        "{op}: out must be [batch, h]"
    );
    let h = config.hidden_size;
    let (g, k) = (cell.gates() * h, cell.cached() * h);
    let bh = batch * h;
    let need = batch * (2 * g + k + 2 * h);
    if state.scratch.len() < need {
        state.scratch.resize(need, T::ZERO);
    }
    let RnnState {
        h: hstate,
        c: cstate,
        scratch,
    } = state;
    let (gx, rest) = scratch.split_at_mut(batch * g);
    let (hh, rest) = rest.split_at_mut(batch * g);
    let (gates, rest) = rest.split_at_mut(batch * k);
    let (ynew, rest) = rest.split_at_mut(bh);
    let cnew = &mut rest[..bh];
    for (l, layer) in layers.iter().enumerate() {
        let d_in = config.layer_input(l);
        let xin: &[T] = if l == 0 { x_t.as_slice() } else { &*ynew };
        // gx = x W_ih^T + b_ih
        gemm_strided(
            batch,
            d_in,
            g,
            xin,
            (d_in, 1),
            layer.weight_ih.value.as_slice(),
            (1, d_in),
            T::ZERO,
            gx,
            (g, 1),
        );
        for row in gx.chunks_exact_mut(g) {
            for (v, &bias) in row.iter_mut().zip(layer.bias_ih.value.as_slice()) {
                *v += bias;
            }
        }
        let h_l = &mut hstate.as_mut_slice()[l * bh..(l + 1) * bh];
        // hh = h W_hh^T
        gemm_strided(
            batch,
            h,
            g,
            h_l,
            (h, 1),
            layer.weight_hh.value.as_slice(),
            (1, h),
            T::ZERO,
            hh,
            (g, 1),
        );
        let bhh = layer.bias_hh.value.as_slice();
        for b in 0..batch {
            let row = b * h..(b + 1) * h;
            let (gxr, hhr, gr) = (
                &gx[b * g..(b + 1) * g],
                &hh[b * g..(b + 1) * g],
                &mut gates[b * k..(b + 1) * k],
            );
            match (cell, cstate.as_mut()) {
                (Cell::Gru, _) => {
                    gru::cell_forward(gr, &mut ynew[row.clone()], gxr, hhr, bhh, &h_l[row])
                }
                (Cell::Lstm, Some(c)) => {
                    let c_l = &c.as_slice()[l * bh..(l + 1) * bh];
                    lstm::cell_forward(
                        gr,
                        &mut ynew[row.clone()],
                        &mut cnew[row.clone()],
                        gxr,
                        hhr,
                        bhh,
                        &c_l[row],
                    );
                }
                (Cell::Lstm, None) => unreachable!("checked by check_state"),
            }
        }
        h_l.copy_from_slice(ynew);
        if let Some(c) = cstate.as_mut() {
            c.as_mut_slice()[l * bh..(l + 1) * bh].copy_from_slice(cnew);
        }
    }
    out.as_mut_slice().copy_from_slice(ynew);
}

/// `db += ` the column sums of `m` (`[rows, db.len()]` row-major), and the same into `db2` when given
/// (an LSTM's two bias gradients), adding rows in order: one pass over `m`, no allocation, the same
/// sums on any thread count; compiled with AVX-512F enabled when the CPU has it.
fn add_col_sums<T: Float>(db: &mut [T], db2: Option<&mut [T]>, m: &[T]) {
    #[inline(always)]
    fn body<T: Float>(db: &mut [T], db2: Option<&mut [T]>, m: &[T]) {
        let rows = m.chunks_exact(db.len());
        match db2 {
            None => {
                for row in rows {
                    for (a, &v) in db.iter_mut().zip(row) {
                        *a += v;
                    }
                }
            }
            Some(db2) => {
                assert_eq!(db2.len(), db.len(), "add_col_sums: bias lengths differ");
                for row in rows {
                    for ((a, b), &v) in db.iter_mut().zip(db2.iter_mut()).zip(row) {
                        *a += v;
                        *b += v;
                    }
                }
            }
        }
    }
    if db.is_empty() {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        fn avx512<T: Float>(db: &mut [T], db2: Option<&mut [T]>, m: &[T]) {
            body(db, db2, m)
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F (checked on the line above).
            return unsafe { avx512(db, db2, m) };
        }
    }
    body(db, db2, m)
}

/// `e^x` for `f32` in plain arithmetic, so loops over it vectorise (std's `expf` is a libm call):
/// Cephes' `expf` (range reduction by `ln 2` in two parts, degree-6 polynomial), relative error ~2e-7
/// for `x` in `[-87, 88]`; inputs are clamped to that range.
#[inline(always)]
fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 * 2^23: adding and subtracting it rounds to the nearest integer (round-to-nearest mode).
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    // t = 1.5 * 2^23 + n holds the integer n in its low mantissa bits (t's exponent is fixed for
    // |n| < 2^22), which gives 2^n below without a float-to-int conversion: Rust's saturating `as i32`
    // does not vectorise (LLVM emits 16 scalar conversions per zmm), which made this function 5x slower.
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5; // Cephes: 5.0000001201e-1, which rounds to 0.5 in f32
    let y = p * r * r + r + 1.0;
    // 2^n by building the exponent bits (n is in [-126, 127] after the clamp): the low bits of t are
    // 0x4B40_0000 + n in two's complement.
    y * f32::from_bits(t.to_bits().wrapping_sub(0x4B40_0000 - 127) << 23)
}

/// `tanh(x)` for `f32` in plain arithmetic: `(1 - e^{-2|x|}) / (1 + e^{-2|x|})` with the sign restored,
/// and the odd Taylor polynomial below `|x| = 1/16` where the quotient would lose relative accuracy.
#[inline(always)]
fn tanh_f32(x: f32) -> f32 {
    let a = x.abs();
    let e = exp_f32(-2.0 * a);
    let big = (1.0 - e) / (1.0 + e);
    let x2 = x * x;
    // tanh x = x - x^3/3 + 2x^5/15 - 17x^7/315 + ...; the first omitted term is < 2e-10 here.
    let small = a * (1.0 + x2 * (-1.0 / 3.0 + x2 * (2.0 / 15.0 - x2 * (17.0 / 315.0))));
    let t = if a < 0.0625 { small } else { big };
    t.copysign(x)
}

/// `v = sigmoid(v)` in place (vectorised polynomial for `f32`, exact `std` maths for `f64`, which the
/// gradient checks need).
pub(crate) fn sigmoid_inplace<T: Float>(v: &mut [T]) {
    match as_f32_mut(v) {
        Some(v) => sigmoid_f32_dispatch(v),
        None => v.iter_mut().for_each(|x| *x = sigmoid_scalar(*x)),
    }
}

/// `v = tanh(v)` in place (vectorised polynomial for `f32`, `std` for `f64`).
pub(crate) fn tanh_inplace<T: Float>(v: &mut [T]) {
    match as_f32_mut(v) {
        Some(v) => tanh_f32_dispatch(v),
        None => v.iter_mut().for_each(|x| *x = x.tanh()),
    }
}

/// Defines `$name(v: &mut [f32])` applying `$f` to every element, compiled three times (baseline SSE2,
/// AVX2, AVX-512F) and dispatched on the running CPU. The arithmetic is the same IEEE operations in
/// every version (no FMA contraction), so results are bit-identical whichever version runs.
macro_rules! multiversion_map {
    ($name:ident, $f:expr) => {
        fn $name(v: &mut [f32]) {
            #[inline(always)]
            fn body(v: &mut [f32]) {
                v.iter_mut().for_each(|x| *x = $f(*x));
            }
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                fn avx512(v: &mut [f32]) {
                    body(v)
                }
                #[target_feature(enable = "avx2")]
                fn avx2(v: &mut [f32]) {
                    body(v)
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU supports AVX-512F (checked on the line above).
                    return unsafe { avx512(v) };
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU supports AVX2 (checked on the line above).
                    return unsafe { avx2(v) };
                }
            }
            body(v)
        }
    };
}

multiversion_map!(sigmoid_f32_dispatch, |x: f32| 1.0 / (1.0 + exp_f32(-x)));
multiversion_map!(tanh_f32_dispatch, tanh_f32);

/// Checks a dropout probability between layers.
pub(crate) fn check_dropout(p: f64) -> Result<f64, RnnConfigError> {
    if (0.0..1.0).contains(&p) {
        Ok(p)
    } else {
        Err(RnnConfigError::Dropout { value: p })
    }
}

/// The dropout key of the input of layer `l` (>= 1): the caller's key with the layer mixed into the seed.
fn layer_key(key: DropoutKey, l: usize) -> DropoutKey {
    DropoutKey {
        seed: key.seed ^ splitmix64(0x524e_4e00 + l as u64),
        step: key.step,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The f32 polynomial activations against f64 `std` on a dense grid over [-30, 30] and near 0.
    #[test]
    fn fast_f32_activations_are_accurate() {
        let mut worst = (0.0f64, 0.0f64, 0.0f64);
        let grid = (-300_000..=300_000)
            .map(|i| i as f32 * 1e-4)
            .chain((-2000..=2000).map(|i| i as f32 * 1e-7))
            .chain([-100.0, -88.5, 88.5, 100.0, f32::MIN_POSITIVE, -0.0]);
        for x in grid {
            let (mut s, mut t) = ([x], [x]);
            sigmoid_inplace(&mut s);
            tanh_inplace(&mut t);
            let xs = x as f64;
            let se = 1.0 / (1.0 + (-xs).exp());
            let te = xs.tanh();
            let ds = (s[0] as f64 - se).abs();
            let dt = (t[0] as f64 - te).abs() / te.abs().max(1e-30);
            worst.0 = worst.0.max(ds);
            // tanh: relative error where |tanh| > 1e-3, absolute below.
            if te.abs() > 1e-3 {
                worst.1 = worst.1.max(dt);
            } else {
                worst.2 = worst.2.max((t[0] as f64 - te).abs());
            }
            assert!(s[0].is_finite() && t[0].is_finite(), "x = {x}");
        }
        assert!(worst.0 < 3e-7, "sigmoid max abs err {}", worst.0);
        assert!(worst.1 < 1e-6, "tanh max rel err {}", worst.1);
        assert!(worst.2 < 1e-9, "tanh max abs err near 0 {}", worst.2);
    }
}
