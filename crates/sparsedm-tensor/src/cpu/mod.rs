//! CPU-specific machinery shared by the ops (strided iteration).

pub(crate) mod strided;
