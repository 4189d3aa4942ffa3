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

/// One element's bytes in little-endian order.
fn element<const N: usize>(raw: &RawStorage, i: usize) -> [u8; N] {
    let mut b = [0u8; N];
    b.copy_from_slice(&raw.bytes[i * N..(i + 1) * N]);
    if raw.big_endian {
        b.reverse();
    }
    b
}

/// Builds the tensor `t` describes from the storages.
pub(crate) fn materialize(t: &TensorRef, storages: &HashMap<String, RawStorage>) -> Result<Tensor, String> {
    let (raw, base, len) = storage_elements(storages, &t.storage)?;
    let idx: Vec<usize> = element_indices(t, len)?.into_iter().map(|i| i + base).collect();
    let data = match raw.dtype {
        StorageDType::F32 => CpuStorage::F32(idx.iter().map(|&i| f32::from_le_bytes(element(raw, i))).collect()),
        StorageDType::F64 => CpuStorage::F32(idx.iter().map(|&i| f64::from_le_bytes(element(raw, i)) as f32).collect()),
        StorageDType::F16 => CpuStorage::F16(idx.iter().map(|&i| f16::from_le_bytes(element(raw, i))).collect()),
        StorageDType::BF16 => CpuStorage::BF16(idx.iter().map(|&i| bf16::from_le_bytes(element(raw, i))).collect()),
        StorageDType::I64 => CpuStorage::I64(idx.iter().map(|&i| i64::from_le_bytes(element(raw, i))).collect()),
        StorageDType::I32 => CpuStorage::I64(idx.iter().map(|&i| i32::from_le_bytes(element(raw, i)).into()).collect()),
        StorageDType::I16 => CpuStorage::I64(idx.iter().map(|&i| i16::from_le_bytes(element(raw, i)).into()).collect()),
        StorageDType::I8 => CpuStorage::I64(idx.iter().map(|&i| i8::from_le_bytes(element(raw, i)).into()).collect()),
        StorageDType::U8 | StorageDType::Bool => CpuStorage::I64(idx.iter().map(|&i| raw.bytes[i].into()).collect()),
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
}
