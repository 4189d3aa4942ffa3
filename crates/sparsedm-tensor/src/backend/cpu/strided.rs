//! Walking strided operands in row-major output order. Adjacent dimensions
//! that are contiguous for every operand are merged first, so the common
//! cases (contiguous, broadcast of a bias, transposed last two dims) become
//! one or two long inner runs; the inner loops then see a plain stride and
//! vectorise. Work is split into chunks of output rows for rayon.

use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Output elements per parallel task; below this everything runs inline.
pub(crate) const PAR_CHUNK: usize = 1 << 14;

/// Dimensions and per-operand strides after merging mergeable dimensions.
#[derive(Debug, Clone)]
pub(crate) struct Walk<const K: usize> {
    pub dims: Vec<usize>,
    pub strides: Vec<[usize; K]>,
}

impl<const K: usize> Walk<K> {
    /// Merges the dims of `shape` walked with `strides[k]` for operand `k`.
    pub fn new(shape: &[usize], strides: [&[usize]; K]) -> Self {
        let mut dims: Vec<usize> = Vec::with_capacity(shape.len());
        let mut out: Vec<[usize; K]> = Vec::with_capacity(shape.len());
        for (i, &d) in shape.iter().enumerate() {
            if d == 1 {
                continue;
            }
            let s: [usize; K] = std::array::from_fn(|k| strides[k][i]);
            if let (Some(pd), Some(ps)) = (dims.last_mut(), out.last_mut())
                && (0..K).all(|k| ps[k] == s[k] * d)
            {
                *pd *= d;
                *ps = s;
                continue;
            }
            dims.push(d);
            out.push(s);
        }
        if dims.is_empty() {
            dims.push(1);
            out.push([0; K]);
        }
        Walk { dims, strides: out }
    }

    /// Length of the innermost run.
    pub fn inner(&self) -> usize {
        *self.dims.last().unwrap_or(&1)
    }

    /// Strides of the innermost run.
    pub fn inner_strides(&self) -> [usize; K] {
        *self.strides.last().unwrap_or(&[0; K])
    }

    /// Start offsets (relative) of output row `row` (a row is one inner run).
    #[inline]
    pub fn row_offsets(&self, mut row: usize) -> [usize; K] {
        let mut offs = [0; K];
        for i in (0..self.dims.len() - 1).rev() {
            let d = self.dims[i];
            let idx = row % d;
            row /= d;
            for k in 0..K {
                offs[k] += idx * self.strides[i][k];
            }
        }
        offs
    }

    /// Calls `f(out_run, start_offsets, inner_strides)` for every inner run,
    /// in parallel over chunks of rows. `out` is the contiguous output.
    pub fn for_each_run<T: Send>(&self, base: [usize; K], out: &mut [T], f: impl Fn(&mut [T], [usize; K], [usize; K]) + Sync) {
        let inner = self.inner();
        if inner == 0 || out.is_empty() {
            // An empty view (some dimension is 0) has no runs; `chunks_mut(0)` would panic.
            return;
        }
        let istr = self.inner_strides();
        if inner > PAR_CHUNK {
            // Long runs (a contiguous tensor is a single run): split each
            // run into pieces of PAR_CHUNK so that the threads share it;
            // grouping whole rows would leave it all to one thread.
            out.par_chunks_mut(inner).enumerate().for_each(|(row, run)| {
                let offs = self.row_offsets(row);
                run.par_chunks_mut(PAR_CHUNK).enumerate().for_each(|(p, piece)| {
                    let start: [usize; K] = std::array::from_fn(|k| base[k] + offs[k] + p * PAR_CHUNK * istr[k]);
                    f(piece, start, istr);
                });
            });
            return;
        }
        let rows_per_chunk = (PAR_CHUNK / inner.max(1)).max(1);
        let body = |(chunk_idx, chunk): (usize, &mut [T])| {
            let row0 = chunk_idx * rows_per_chunk;
            for (r, run) in chunk.chunks_mut(inner).enumerate() {
                let mut offs = self.row_offsets(row0 + r);
                for k in 0..K {
                    offs[k] += base[k];
                }
                f(run, offs, istr);
            }
        };
        if out.len() <= PAR_CHUNK {
            out.chunks_mut(rows_per_chunk * inner).enumerate().for_each(body);
        } else {
            out.par_chunks_mut(rows_per_chunk * inner).enumerate().for_each(body);
        }
    }
}

/// A new vector of `n` elements written by a walk over every element: the
/// output buffer is not zeroed first (zeroing it was a memset per op, as
/// large as the op's own pass). `fill` gets the uninitialised elements.
///
/// # Safety
/// `fill` must write every element of the slice it is given.
pub(crate) unsafe fn written_vec<T: Copy>(n: usize, fill: impl FnOnce(&mut [MaybeUninit<T>])) -> Vec<T> {
    let mut v: Vec<MaybeUninit<T>> = Vec::with_capacity(n);
    // SAFETY: MaybeUninit needs no initialisation; the capacity is n.
    unsafe { v.set_len(n) };
    fill(&mut v);
    let mut v = std::mem::ManuallyDrop::new(v);
    // SAFETY: the caller guarantees that `fill` initialised all n elements;
    // MaybeUninit<T> has T's layout, so the allocation is a valid Vec<T>.
    unsafe { Vec::from_raw_parts(v.as_mut_ptr().cast::<T>(), n, v.capacity()) }
}

/// A raw output pointer shared by parallel tasks that each write their
/// own, disjoint elements of one buffer (N:M work items, `cat` boxes).
#[derive(Debug, Clone, Copy)]
pub(crate) struct SendPtr(pub(crate) *mut f32);
impl SendPtr {
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}
// SAFETY: the tasks sharing the pointer write disjoint elements of a
// buffer that outlives their parallel loop (each user's contract).
unsafe impl Send for SendPtr {}
// SAFETY: as above.
unsafe impl Sync for SendPtr {}

/// Copies a strided view into a new contiguous vector.
pub(crate) fn gather<T: Copy + Send + Sync + Default>(src: &[T], shape: &[usize], strides: &[usize], offset: usize) -> Vec<T> {
    let n: usize = shape.iter().product();
    let walk = Walk::new(shape, [strides]);
    // SAFETY: the walk's runs cover the whole output and each run is
    // written element by element below.
    unsafe {
        written_vec(n, |out| {
            walk.for_each_run([offset], out, |run, [o], [s]| {
                for (i, v) in run.iter_mut().enumerate() {
                    v.write(src[o + i * s]);
                }
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_and_gathers() {
        let w = Walk::new(&[2, 3, 4], [&[12, 4, 1], &[0, 0, 1]]);
        assert_eq!(w.dims, vec![6, 4]);
        let src: Vec<i32> = (0..24).collect();
        // transpose of a [4, 6] matrix viewed as [6, 4]
        let t = gather(&src, &[6, 4], &[1, 6], 0);
        assert_eq!(&t[..5], &[0, 6, 12, 18, 1]);
        let big: Vec<i32> = (0..100_000).collect();
        let g = gather(&big, &[50_000], &[2], 1);
        assert_eq!(g[49_999], 99_999);
    }

    /// Runs longer than PAR_CHUNK are split into pieces shared by the
    /// threads; every element is still visited once at the right offsets,
    /// for a contiguous run, strided runs with an offset, and several rows.
    #[test]
    fn long_runs_are_split_at_the_right_offsets() {
        let n = 3 * PAR_CHUNK + 17;
        let src: Vec<i64> = (0..(4 * n + 8) as i64).collect();
        for (shape, strides, offset) in
            [(vec![n], vec![1], 0), (vec![n], vec![2], 5), (vec![3, n], vec![n, 1], 3), (vec![2, n], vec![1, 2], 1)]
        {
            let g = gather(&src, &shape, &strides, offset);
            let want: Vec<i64> = (0..g.len())
                .map(|i| {
                    let (r, c) = if shape.len() == 2 { (i / n, i % n) } else { (0, i) };
                    let o = if shape.len() == 2 { offset + r * strides[0] + c * strides[1] } else { offset + c * strides[0] };
                    src[o]
                })
                .collect();
            assert_eq!(g, want, "shape {shape:?} strides {strides:?} offset {offset}");
        }
    }
}
