//! [`Tensor`]: a shape plus contiguous row-major storage on a [`Device`].

use crate::Float;

/// Where a tensor's elements live.
///
/// Today only [`Device::Cpu`]; a CUDA variant will be added behind the `cuda` feature, which is why the
/// enum is `#[non_exhaustive]`. Layers are written once against the ops; the ops dispatch on the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Device {
    /// Host memory, a `Vec<T>`.
    Cpu,
}

/// The storage behind a tensor: one variant per device (enum dispatch, no backend trait tower).
#[derive(Clone, Debug, PartialEq)]
enum Storage<T> {
    Cpu(Vec<T>),
}

/// Errors from building or reshaping a tensor out of user-supplied data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TensorError {
    /// Occurs when the data length given to [`Tensor::from_vec`] is not the product of the shape.
    #[error("shape {shape:?} holds {expected} elements but {got} were given")]
    DataLength {
        /// Requested shape.
        shape: Vec<usize>,
        /// Product of `shape`.
        expected: usize,
        /// Length of the data.
        got: usize,
    },
    /// Occurs when [`Tensor::try_reshape`] is asked for a shape with a different number of elements.
    #[error("cannot reshape {from:?} ({from_numel} elements) to {to:?} ({to_numel} elements)")]
    Reshape {
        /// Current shape.
        from: Vec<usize>,
        /// Its element count.
        from_numel: usize,
        /// Requested shape.
        to: Vec<usize>,
        /// Its element count.
        to_numel: usize,
    },
}

/// A dense tensor: a shape and contiguous row-major elements.
///
/// Ops view a tensor of shape `[d0, .., dn]` as a matrix of [`rows`](Tensor::rows) `= d0 * .. * d(n-1)`
/// by [`cols`](Tensor::cols) `= dn`, so a linear layer works on `[batch, seq, d]` directly.
/// Ops write into caller-owned outputs (`out: &mut Tensor<T>`), so layers allocate their buffers once and
/// reuse them; [`Tensor::resize`] adapts a buffer to a smaller last batch without reallocating.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor<T> {
    shape: Vec<usize>,
    storage: Storage<T>,
}

fn numel_of(shape: &[usize]) -> usize {
    shape.iter().product()
}

impl<T: Float> Tensor<T> {
    /// A tensor of zeros on the CPU.
    pub fn zeros(shape: &[usize]) -> Self {
        Self::full(shape, T::ZERO)
    }

    /// A tensor of zeros with `other`'s shape.
    pub fn zeros_like(other: &Tensor<T>) -> Self {
        Self::zeros(other.shape())
    }

    /// A tensor filled with `value`.
    pub fn full(shape: &[usize], value: T) -> Self {
        Self {
            shape: shape.to_vec(),
            storage: Storage::Cpu(vec![value; numel_of(shape)]),
        }
    }

    /// Wraps row-major `data` of the given shape.
    ///
    /// # Errors
    /// [`TensorError::DataLength`] if `data.len()` is not the product of `shape`.
    pub fn from_vec(shape: &[usize], data: Vec<T>) -> Result<Self, TensorError> {
        let expected = numel_of(shape);
        if data.len() != expected {
            return Err(TensorError::DataLength {
                shape: shape.to_vec(),
                expected,
                got: data.len(),
            });
        }
        Ok(Self {
            shape: shape.to_vec(),
            storage: Storage::Cpu(data),
        })
    }

    /// A tensor whose element at flat (row-major) index `i` is `f(i)`.
    pub fn from_fn(shape: &[usize], f: impl FnMut(usize) -> T) -> Self {
        Self {
            shape: shape.to_vec(),
            storage: Storage::Cpu((0..numel_of(shape)).map(f).collect()),
        }
    }

    /// The shape, outermost axis first.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of axes.
    pub fn ndim(&self) -> usize {
        self.shape.len()
    }

    /// Number of elements (1 for a rank-0 tensor).
    pub fn numel(&self) -> usize {
        match &self.storage {
            Storage::Cpu(v) => v.len(),
        }
    }

    /// Size of the last axis (1 for a rank-0 tensor): the column count of the matrix view.
    pub fn cols(&self) -> usize {
        self.shape.last().copied().unwrap_or(1)
    }

    /// Product of all axes but the last (1 for rank 0 and 1): the row count of the matrix view.
    pub fn rows(&self) -> usize {
        match self.shape.split_last() {
            Some((_, lead)) => lead.iter().product(),
            None => 1,
        }
    }

    /// The device holding the elements.
    pub fn device(&self) -> Device {
        match &self.storage {
            Storage::Cpu(_) => Device::Cpu,
        }
    }

    /// The elements, row-major.
    pub fn as_slice(&self) -> &[T] {
        match &self.storage {
            Storage::Cpu(v) => v,
        }
    }

    /// The elements, row-major, mutable.
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        match &mut self.storage {
            Storage::Cpu(v) => v,
        }
    }

    /// Copies the elements out.
    pub fn to_vec(&self) -> Vec<T> {
        self.as_slice().to_vec()
    }

    /// Consumes the tensor, returning its elements.
    pub fn into_vec(self) -> Vec<T> {
        match self.storage {
            Storage::Cpu(v) => v,
        }
    }

    /// Element at a multi-index.
    ///
    /// # Panics
    /// If `index` has the wrong rank or is out of bounds (a programming error).
    pub fn get(&self, index: &[usize]) -> T {
        self.as_slice()[self.flat_index(index)]
    }

    /// Sets the element at a multi-index.
    ///
    /// # Panics
    /// If `index` has the wrong rank or is out of bounds.
    pub fn set(&mut self, index: &[usize], value: T) {
        let i = self.flat_index(index);
        self.as_mut_slice()[i] = value;
    }

    fn flat_index(&self, index: &[usize]) -> usize {
        assert!(
            index.len() == self.shape.len() && index.iter().zip(&self.shape).all(|(i, d)| i < d),
            "index {index:?} out of bounds for shape {:?}",
            self.shape
        );
        index
            .iter()
            .zip(&self.shape)
            .fold(0, |acc, (&i, &d)| acc * d + i)
    }

    /// Changes the shape in place keeping the elements.
    ///
    /// # Errors
    /// [`TensorError::Reshape`] if the element counts differ.
    pub fn try_reshape(&mut self, shape: &[usize]) -> Result<(), TensorError> {
        let to_numel = numel_of(shape);
        if to_numel != self.numel() {
            return Err(TensorError::Reshape {
                from: self.shape.clone(),
                from_numel: self.numel(),
                to: shape.to_vec(),
                to_numel,
            });
        }
        self.shape.clear();
        self.shape.extend_from_slice(shape);
        Ok(())
    }

    /// Changes the shape in place keeping the elements (no copy).
    ///
    /// # Panics
    /// If the element counts differ (a programming error; see [`Tensor::try_reshape`]).
    pub fn reshape(&mut self, shape: &[usize]) {
        if let Err(e) = self.try_reshape(shape) {
            panic!("{e}");
        }
    }

    /// Builder form of [`Tensor::reshape`].
    ///
    /// # Panics
    /// If the element counts differ.
    pub fn reshaped(mut self, shape: &[usize]) -> Self {
        self.reshape(shape);
        self
    }

    /// Gives the buffer a new shape, growing its storage only when the new shape needs more elements than
    /// it has ever held (so a reused buffer never reallocates for a smaller last batch). Element values
    /// are unspecified afterwards (old values or zeros): treat the tensor as an output to be written.
    pub fn resize(&mut self, shape: &[usize]) {
        let n = numel_of(shape);
        match &mut self.storage {
            Storage::Cpu(v) => v.resize(n, T::ZERO),
        }
        self.shape.clear();
        self.shape.extend_from_slice(shape);
    }

    /// Sets every element to `value`.
    pub fn fill(&mut self, value: T) {
        self.as_mut_slice().fill(value);
    }

    /// Copies `src` into `self`.
    ///
    /// # Panics
    /// If the shapes differ.
    pub fn copy_from(&mut self, src: &Tensor<T>) {
        assert_same_shape("copy_from", "self", self.shape(), "src", src.shape());
        self.as_mut_slice().copy_from_slice(src.as_slice());
    }

    /// Converts every element to another float type (`f32` <-> `f64` for gradient checks).
    pub fn cast<U: Float>(&self) -> Tensor<U> {
        Tensor {
            shape: self.shape.clone(),
            storage: Storage::Cpu(
                self.as_slice()
                    .iter()
                    .map(|&x| U::from_f64(x.to_f64()))
                    .collect(),
            ),
        }
    }
}

/// Panics with a message naming the op and both shapes unless `a == b`.
#[track_caller]
pub(crate) fn assert_same_shape(op: &str, a_name: &str, a: &[usize], b_name: &str, b: &[usize]) {
    assert!(
        a == b,
        "{op}: shape mismatch: {a_name} has shape {a:?} but {b_name} has shape {b:?}"
    );
}
