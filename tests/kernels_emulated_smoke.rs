//! Smoke tests of the CUDA emulation layer (`kernels/emu/cuda_emu.h`, `tests/emu/mod.rs`): a block
//! reduction through `__shared__`, `__syncthreads` and warp shuffles, early-exiting threads, and
//! the f16/bf16 conversions, each checked against Rust. If these fail, every emulated kernel test
//! is meaningless.

mod emu;

/// A one-block-per-row sum using every synchronisation primitive a reduction kernel needs. Lives
/// in the test's own translation unit, so the smoke test depends on no kernel module.
const SOURCE: &str = r#"
#include "sdm_common.cuh"

// Sum of each row of x [rows, cols] into y[row]: each block owns rows (block-stride), threads
// stride over the columns, warps reduce with __shfl_xor_sync, warp partials go through shared
// memory, and warp 0 reduces them with __shfl_down_sync.
__global__ void smoke_row_sum(long long rows, long long cols, const float* x, float* y) {
    __shared__ float warp_sums[32];
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        float s = 0.0f;
        for (long long c = threadIdx.x; c < cols; c += blockDim.x) s += x[r * cols + c];
        for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
        if ((threadIdx.x & 31) == 0) warp_sums[threadIdx.x / 32] = s;
        __syncthreads();
        if (threadIdx.x < 32) {
            float v = threadIdx.x < blockDim.x / 32 ? warp_sums[threadIdx.x] : 0.0f;
            for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
            if (threadIdx.x == 0) y[r] = v;
        }
        __syncthreads();  // warp_sums is reused by the next row
    }
}

// Threads past n return at once; the others still meet at __syncthreads and vote.
__global__ void smoke_early_exit(long long n, float* y) {
    __shared__ float s[256];
    long long i = threadIdx.x;
    if (i >= n) return;
    s[i] = (float)i;
    __syncthreads();
    y[blockIdx.x * n + i] = s[n - 1 - i] + 1000.0f * (float)__popc(__ballot_sync(0xffffffffu, 1));
}

// Every warp intrinsic once per thread, for `width`-lane segments; results per thread in out[6·t..].
__global__ void smoke_shuffles(int width, int* out) {
    const int lane = threadIdx.x & 31;
    const int v = (int)threadIdx.x * 10;
    int* o = out + threadIdx.x * 6;
    o[0] = __shfl_sync(0xffffffffu, v, (lane * 7 + 3) & 31, width);
    o[1] = __shfl_up_sync(0xffffffffu, v, 3, width);
    o[2] = __shfl_down_sync(0xffffffffu, v, 5, width);
    o[3] = __shfl_xor_sync(0xffffffffu, v, 9, width);
    __syncwarp();
    o[4] = __any_sync(0xffffffffu, lane == 5) + 2 * __all_sync(0xffffffffu, lane < 31) + 4 * __all_sync(0xffffffffu, lane < 32);
    o[5] = (int)__ballot_sync(0xffffffffu, (lane & 3) == 1);
    atomicAdd(out + blockDim.x * 6, 1);
}

extern "C" void run_shuffles(unsigned g, unsigned b, int width, int* out) { sdm_emu_launch(smoke_shuffles, g, b, width, out); }
extern "C" void run_row_sum(unsigned g, unsigned b, long long rows, long long cols, const float* x, float* y) {
    sdm_emu_launch(smoke_row_sum, g, b, rows, cols, x, y);
}
extern "C" void run_early_exit(unsigned g, unsigned b, long long n, float* y) {
    sdm_emu_launch(smoke_early_exit, g, b, n, y);
}
extern "C" unsigned short run_f2h(float f) { return __half_as_ushort(__float2half_rn(f)); }
extern "C" float run_h2f(unsigned short h) { return __half2float(__ushort_as_half(h)); }
extern "C" unsigned short run_f2bf(float f) { return __bfloat16_as_ushort(__float2bfloat16_rn(f)); }
extern "C" float run_bf2f(unsigned short h) { return __bfloat162float(__ushort_as_bfloat16(h)); }
"#;

type RowSum = unsafe extern "C" fn(u32, u32, i64, i64, *const f32, *mut f32);

#[test]
fn block_reduction_matches_rust_sum() {
    let Some(lib) = emu::compile_source("smoke", SOURCE) else { return };
    // SAFETY: `run_row_sum` is declared with exactly this signature in SOURCE.
    let run: RowSum = unsafe { lib.get("run_row_sum") };
    for &(rows, cols, block, grid) in &[(5usize, 1000usize, 128u32, 2u32), (3, 7, 64, 3), (4, 4097, 256, 4), (1, 33, 32, 1)] {
        // Small integers: every partial sum is exact in f32, so the comparison is exact.
        let x: Vec<f32> = (0..rows * cols).map(|i| ((i * 7919) % 13) as f32 - 6.0).collect();
        let mut y = vec![f32::NAN; rows];
        // SAFETY: x holds rows·cols floats and y holds rows, as the kernel reads and writes.
        unsafe { run(grid, block, rows as i64, cols as i64, x.as_ptr(), y.as_mut_ptr()) };
        for r in 0..rows {
            let want: f32 = x[r * cols..(r + 1) * cols].iter().sum();
            assert_eq!(y[r], want, "row {r} of {rows}x{cols}, block {block}, grid {grid}");
        }
    }
}

#[test]
fn warp_intrinsics_follow_ptx_shfl_semantics() {
    let Some(lib) = emu::compile_source("smoke", SOURCE) else { return };
    // SAFETY: `run_shuffles` is declared with exactly this signature in SOURCE.
    let run: unsafe extern "C" fn(u32, u32, i32, *mut i32) = unsafe { lib.get("run_shuffles") };
    let (block, grid) = (64usize, 3u32);
    for width in [32usize, 16, 8] {
        let mut out = vec![0i32; block * 6 + 1];
        // SAFETY: out holds 6 ints per thread plus the atomic counter.
        unsafe { run(grid, block as u32, width as i32, out.as_mut_ptr()) };
        for t in 0..block {
            let (warp, lane) = (t / 32 * 32, t % 32);
            let (seg, seg_end) = (lane & !(width - 1), (lane & !(width - 1)) + width - 1);
            let val = |j: usize| ((warp + j) * 10) as i32;
            let idx = seg | ((lane * 7 + 3) & 31 & (width - 1));
            let up = if lane >= seg + 3 { lane - 3 } else { lane };
            let down = if lane + 5 <= seg_end { lane + 5 } else { lane };
            let xor = if lane ^ 9 <= seg_end { lane ^ 9 } else { lane };
            let o = &out[t * 6..t * 6 + 6];
            assert_eq!(o[..4], [val(idx), val(up), val(down), val(xor)], "width {width}, thread {t}");
            assert_eq!(o[4], 1 + 4, "any/all, thread {t}");
            assert_eq!(o[5] as u32, 0x2222_2222, "ballot, thread {t}");
        }
        assert_eq!(out[block * 6], grid as i32 * block as i32, "atomicAdd over all blocks");
    }
}

#[test]
fn exited_threads_do_not_block_barriers() {
    let Some(lib) = emu::compile_source("smoke", SOURCE) else { return };
    // SAFETY: `run_early_exit` is declared with exactly this signature in SOURCE.
    let run: unsafe extern "C" fn(u32, u32, i64, *mut f32) = unsafe { lib.get("run_early_exit") };
    let n = 70usize;
    let mut y = vec![f32::NAN; 2 * n];
    // SAFETY: y holds grid·n floats.
    unsafe { run(2, 256, n as i64, y.as_mut_ptr()) };
    for b in 0..2 {
        for i in 0..n {
            // Lanes of i's warp that did not exit: 32 for the full warps, 6 for lanes 64..69.
            let live = if i < 64 { 32.0 } else { 6.0 };
            assert_eq!(y[b * n + i], (n - 1 - i) as f32 + 1000.0 * live, "block {b}, thread {i}");
        }
    }
}

#[test]
fn half_conversions_match_the_half_crate() {
    let Some(lib) = emu::compile_source("smoke", SOURCE) else { return };
    // SAFETY: the four functions are declared with these signatures in SOURCE.
    let (f2h, h2f, f2bf, bf2f) = unsafe {
        (
            lib.get::<unsafe extern "C" fn(f32) -> u16>("run_f2h"),
            lib.get::<unsafe extern "C" fn(u16) -> f32>("run_h2f"),
            lib.get::<unsafe extern "C" fn(f32) -> u16>("run_f2bf"),
            lib.get::<unsafe extern "C" fn(u16) -> f32>("run_bf2f"),
        )
    };
    // Every 16-bit pattern decodes as the half crate decodes it.
    for bits in 0..=u16::MAX {
        // SAFETY: plain scalar functions.
        let (h, b) = unsafe { (h2f(bits), bf2f(bits)) };
        let (hw, bw) = (half::f16::from_bits(bits).to_f32(), half::bf16::from_bits(bits).to_f32());
        assert!(h.to_bits() == hw.to_bits() || (h.is_nan() && hw.is_nan()), "f16 {bits:#06x}: {h} vs {hw}");
        assert!(b.to_bits() == bw.to_bits() || (b.is_nan() && bw.is_nan()), "bf16 {bits:#06x}: {b} vs {bw}");
    }
    // Encoding rounds to nearest even exactly as the half crate: a stride through all f32 bit
    // patterns plus the boundary cases (halfway points, overflow, subnormals, signed zeros).
    let mut inputs: Vec<f32> = (0..=u32::MAX).step_by(4093).map(f32::from_bits).collect();
    inputs.extend([
        0.0,
        -0.0,
        65504.0,
        65519.99,
        65520.0,
        -65520.0,
        1e-8,
        2.9802322e-8,
        2.9802326e-8,
        6e-8,
        1e-5,
        0.1,
        1.0 + 1.0 / 2048.0,
        1.0 + 3.0 / 2048.0,
    ]);
    inputs.extend([f32::INFINITY, f32::NEG_INFINITY, f32::MIN_POSITIVE, f32::MAX, 3.3895314e38, 3.3961776e38]);
    for &f in &inputs {
        // SAFETY: plain scalar functions.
        let (h, b) = unsafe { (f2h(f), f2bf(f)) };
        if f.is_nan() {
            assert_eq!((h, b), (0x7fff, 0x7fff), "NaN {:#010x} must become the canonical NaN", f.to_bits());
            continue;
        }
        assert_eq!(h, half::f16::from_f32(f).to_bits(), "f16 of {f:e} ({:#010x})", f.to_bits());
        assert_eq!(b, half::bf16::from_f32(f).to_bits(), "bf16 of {f:e} ({:#010x})", f.to_bits());
    }
}

/// Kernels run through the simulator's entry points (`SDM_SIM_ENTRY`, what `SPARSEDM_CUDA_SIM=1`
/// launches): a barrier that can never open, and a barrier in a kernel run as a plain loop.
const SIM_SOURCE: &str = r#"
#include <cstdio>

// Lanes 0..15 of warp 0 wait at __syncthreads, lanes 16..31 at __syncwarp: neither can open (a
// hang, or undefined behaviour, on a GPU).
__global__ void smoke_divergent_barriers(int* out) {
    if (threadIdx.x < 16) __syncthreads(); else __syncwarp();
    out[threadIdx.x] = 1;
}

// Every thread writes, meets the others, and reads its neighbour's value.
__global__ void smoke_neighbour(int* out) {
    __shared__ int s[1024];
    s[threadIdx.x] = (int)(blockIdx.x * 1000 + threadIdx.x);
    __syncthreads();
    out[blockIdx.x * blockDim.x + threadIdx.x] = s[(threadIdx.x + 1) % blockDim.x];
}

SDM_SIM_ENTRY(smoke_divergent_barriers)
SDM_SIM_ENTRY(smoke_neighbour)

// Runs `which` (0: divergent, 1: neighbour) over `grid` blocks of `block` threads, as fibers or
// as a plain loop; returns the entry's status and copies its error message into msg.
extern "C" int run_sim(int which, unsigned grid, unsigned block, int fibers, int* out, char* msg, unsigned cap) {
    void* args[] = {&out};
    SdmSimLaunch l{grid, block, 0, grid, fibers};
    int rc = which == 0 ? sdm_sim_run_smoke_divergent_barriers(&l, args) : sdm_sim_run_smoke_neighbour(&l, args);
    std::snprintf(msg, cap, "%s", sdm_sim_error());
    return rc;
}
"#;

type RunSim = unsafe extern "C" fn(i32, u32, u32, i32, *mut i32, *mut std::ffi::c_char, u32) -> i32;

fn run_sim(lib: &emu::Lib, which: i32, grid: u32, block: u32, fibers: bool, out: &mut [i32]) -> (i32, String) {
    // SAFETY: `run_sim` is declared with exactly this signature in SIM_SOURCE.
    let run: RunSim = unsafe { lib.get("run_sim") };
    let mut msg = vec![0 as std::ffi::c_char; 512];
    assert!(out.len() >= (grid * block) as usize);
    // SAFETY: out holds grid·block ints (checked), msg 512 bytes, the capacity passed.
    let rc = unsafe { run(which, grid, block, i32::from(fibers), out.as_mut_ptr(), msg.as_mut_ptr(), 512) };
    // SAFETY: snprintf NUL-terminated msg within its capacity.
    (rc, unsafe { std::ffi::CStr::from_ptr(msg.as_ptr()) }.to_string_lossy().into_owned())
}

#[test]
fn simulator_entries_run_blocks_and_report_deadlocks() {
    let Some(lib) = emu::compile_source("smoke_sim", SIM_SOURCE) else { return };
    let (grid, block) = (3u32, 96u32);
    let mut out = vec![-1i32; (grid * block) as usize];
    let (rc, msg) = run_sim(&lib, 1, grid, block, true, &mut out);
    assert_eq!(rc, 0, "{msg}");
    for b in 0..grid {
        for t in 0..block {
            assert_eq!(out[(b * block + t) as usize], (b * 1000 + (t + 1) % block) as i32, "block {b} thread {t}");
        }
    }
    let (rc, msg) = run_sim(&lib, 0, 1, 64, true, &mut out);
    assert_eq!(rc, -1);
    assert!(msg.contains("deadlocked") && msg.contains("16 thread(s) wait at __syncthreads"), "{msg}");
    // A barrier reached by a kernel run as a plain loop is an error, not a silent wrong result.
    let (rc, msg) = run_sim(&lib, 1, 1, 64, false, &mut out);
    assert_eq!(rc, -1);
    assert!(msg.contains("without fibers"), "{msg}");
}
