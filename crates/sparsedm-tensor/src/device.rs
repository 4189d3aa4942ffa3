//! Where a tensor lives. The CPU backend is always present; `Cuda(ordinal)`
//! is the slot of the GPU backend, which reports itself unavailable when it is
//! not compiled in (see [`crate::cuda`]). What a device can do is asked of
//! [`crate::storage`], the one place that dispatches on it.

/// A compute device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Device {
    /// The host CPU (rayon thread pool).
    #[default]
    Cpu,
    /// An NVIDIA GPU by ordinal.
    Cuda(usize),
}

impl Device {
    /// Checks that the device can be used, returning a clear error otherwise.
    pub fn ensure_available(&self) -> crate::Result<()> {
        crate::storage::ensure_available(*self)
    }

    /// Waits until every operation queued on the device has finished (a
    /// no-op on the CPU, whose ops are synchronous). GPU kernels run
    /// asynchronously, so timings must synchronize before reading a clock;
    /// a kernel's own failure also surfaces here.
    pub fn synchronize(&self) -> crate::Result<()> {
        crate::storage::synchronize(*self)
    }

    /// The most device memory the process has held on this GPU since it was
    /// first used: the caching allocator's peak of bytes in live buffers plus
    /// cached free blocks (PyTorch's `max_memory_reserved`). `None` on the
    /// CPU, which has no device allocator.
    pub fn peak_memory_bytes(&self) -> crate::Result<Option<usize>> {
        crate::storage::peak_memory_bytes(*self)
    }

    /// Parses `cpu`, `cuda` or `cuda:N`.
    pub fn parse(s: &str) -> crate::Result<Device> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            _ => match s.strip_prefix("cuda:").and_then(|n| n.parse().ok()) {
                Some(n) => Ok(Device::Cuda(n)),
                None => Err(crate::Error::invalid("device", format!("unknown device {s:?}; expected cpu, cuda or cuda:N"))),
            },
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}
