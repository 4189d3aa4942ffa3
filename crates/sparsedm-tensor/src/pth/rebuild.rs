//! Materialises a [`TensorRef`] (a strided view of a storage) as a
//! contiguous [`Tensor`]: gathers the elements the view covers, in
//! row-major order, after checking that every one of them lies inside the
//! storage. Element types follow the safetensors loader: f32, f16 and bf16
//! stay as they are, f64 becomes f32, integer and bool storages become i64.

use super::archive::{RawStorage, storage_elements};
use super::pickle::{StorageDType, TensorRef};
use crate::Tensor;
use crate::storage::CpuStorage;
use half::{bf16, f16};
use std::collections::HashMap;

/// The storage element indices of a view, in row-major order.
fn element_indices(t: &TensorRef, available: usize) -> Result<Vec<usize>, String> {
    let numel = t.size.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or_else(|| format!("tensor size {:?} overflows", t.size))?;
    if numel == 0 {
        return Ok(Vec::new());
    }
    let last = t
        .size
        .iter()
        .zip(&t.stride)
        .try_fold(t.offset, |a, (&d, &s)| (d - 1).checked_mul(s).and_then(|x| a.checked_add(x)))
        .filter(|&l| l < available)
        .ok_or_else(|| {
            format!(
                "tensor of size {:?}, stride {:?} and offset {} reaches outside its storage of {available} elements",
                t.size, t.stride, t.offset
            )
        })?;
    debug_assert!(last < available);
    let mut out = Vec::with_capacity(numel);
    let mut idx = vec![0usize; t.size.len()];
    let mut at = t.offset;
    for _ in 0..numel {
        out.push(at);
        // Odometer increment of the multi-index, last dimension fastest.
        for d in (0..idx.len()).rev() {
            idx[d] += 1;
            at += t.stride[d];
            if idx[d] < t.size[d] {
                break;
            }
            at -= t.stride[d] * t.size[d];
            idx[d] = 0;
        }
    }
    Ok(out)
}

/// The storage elements a view covers, in row-major order: a contiguous
/// range (the common case: no index list, 8 bytes an element, is built) or
/// their indices.
enum Elements {
    Range(usize, usize),
    List(Vec<usize>),
}

/// The elements of view `t` in a storage of `available` elements starting
/// at element `base`, checked to lie inside it.
fn elements(t: &TensorRef, base: usize, available: usize) -> Result<Elements, String> {
    let numel = t.size.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    // Row-major contiguous: each stride the product of the sizes after it
    // (dimensions of size 1 may have any stride).
    let mut inner = 1usize;
    let contiguous = t.size.iter().zip(&t.stride).rev().all(|(&d, &s)| {
        let ok = d == 1 || s == inner;
        inner = inner.saturating_mul(d);
        ok
    });
    match numel {
        Some(n) if n > 0 && contiguous && t.offset.checked_add(n).is_some_and(|end| end <= available) => {
            Ok(Elements::Range(base + t.offset, n))
        }
        _ => Ok(Elements::List(element_indices(t, available)?.into_iter().map(|i| i + base).collect())),
    }
}

/// Decodes the elements `el` of `raw` (each `N` bytes) with `f` on their
/// little-endian bytes.
fn gather<T, const N: usize>(raw: &RawStorage<'_>, el: &Elements, f: impl Fn([u8; N]) -> T) -> Vec<T> {
    let one = |c: &[u8]| {
        let mut b: [u8; N] = c.try_into().expect("N bytes");
        if raw.big_endian {
            b.reverse();
        }
        f(b)
    };
    match el {
        Elements::Range(start, n) => raw.bytes[start * N..(start + n) * N].chunks_exact(N).map(one).collect(),
        Elements::List(idx) => idx.iter().map(|&i| one(&raw.bytes[i * N..(i + 1) * N])).collect(),
    }
}

/// Builds the tensor `t` describes from the storages.
pub(crate) fn materialize(t: &TensorRef, storages: &HashMap<String, RawStorage<'_>>) -> Result<Tensor, String> {
    let (raw, base, len) = storage_elements(storages, &t.storage)?;
    let el = elements(t, base, len)?;
    let data = match raw.dtype {
        StorageDType::F32 => CpuStorage::F32(gather(raw, &el, f32::from_le_bytes)),
        StorageDType::F64 => CpuStorage::F32(gather(raw, &el, |b| f64::from_le_bytes(b) as f32)),
        StorageDType::F16 => CpuStorage::F16(gather(raw, &el, f16::from_le_bytes)),
        StorageDType::BF16 => CpuStorage::BF16(gather(raw, &el, bf16::from_le_bytes)),
        StorageDType::I64 => CpuStorage::I64(gather(raw, &el, i64::from_le_bytes)),
        StorageDType::I32 => CpuStorage::I64(gather(raw, &el, |b| i32::from_le_bytes(b).into())),
        StorageDType::I16 => CpuStorage::I64(gather(raw, &el, |b| i16::from_le_bytes(b).into())),
        StorageDType::I8 => CpuStorage::I64(gather(raw, &el, |b| i8::from_le_bytes(b).into())),
        StorageDType::U8 | StorageDType::Bool => CpuStorage::I64(gather(raw, &el, |b: [u8; 1]| b[0].into())),
    };
    Tensor::from_cpu_storage(data, &t.size).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pth::pickle::StorageRef;

    fn view(offset: usize, size: &[usize], stride: &[usize]) -> TensorRef {
        TensorRef {
            storage: StorageRef { key: "0".into(), dtype: StorageDType::F32, view: None },
            offset,
            size: size.to_vec(),
            stride: stride.to_vec(),
        }
    }

    #[test]
    fn transposed_and_offset_views_gather_row_major() {
        // A 2x3 row-major matrix viewed transposed (3x2, strides 1,3).
        assert_eq!(element_indices(&view(0, &[3, 2], &[1, 3]), 6).unwrap(), vec![0, 3, 1, 4, 2, 5]);
        // Rows 1.. of a 3x4 matrix, columns 1..3.
        assert_eq!(element_indices(&view(5, &[2, 2], &[4, 1]), 12).unwrap(), vec![5, 6, 9, 10]);
        // A scalar and an empty tensor.
        assert_eq!(element_indices(&view(7, &[], &[]), 8).unwrap(), vec![7]);
        assert!(element_indices(&view(99, &[0, 3], &[3, 1]), 8).unwrap().is_empty());
    }

    #[test]
    fn views_outside_the_storage_are_refused() {
        let e = element_indices(&view(1, &[2, 3], &[3, 1]), 6).unwrap_err();
        assert!(e.contains("reaches outside its storage of 6 elements"), "{e}");
        assert!(element_indices(&view(usize::MAX, &[2], &[1]), 6).is_err());
        assert!(element_indices(&view(0, &[usize::MAX, 2], &[1, 1]), 6).is_err());
    }

    /// Contiguous views (size-1 dimensions may have any stride, a scalar
    /// is one element) are read as a range; other views through their
    /// indices; both checked against the storage.
    #[test]
    fn contiguous_views_are_ranges() {
        let range = |t: &TensorRef, base, avail| match elements(t, base, avail).unwrap() {
            Elements::Range(s, n) => Some((s, n)),
            Elements::List(_) => None,
        };
        assert_eq!(range(&view(2, &[2, 3], &[3, 1]), 10, 8), Some((12, 6)));
        assert_eq!(range(&view(0, &[1, 4, 1], &[99, 1, 7]), 0, 4), Some((0, 4)));
        assert_eq!(range(&view(5, &[], &[]), 0, 6), Some((5, 1)));
        assert_eq!(range(&view(0, &[3, 2], &[1, 3]), 0, 6), None);
        assert_eq!(range(&view(0, &[2, 2], &[4, 1]), 0, 8), None);
        assert!(matches!(elements(&view(0, &[0, 3], &[3, 1]), 0, 0), Ok(Elements::List(v)) if v.is_empty()));
        assert!(elements(&view(3, &[2, 3], &[3, 1]), 0, 8).is_err());
    }
}
