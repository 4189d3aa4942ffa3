//! Dense GEMM vs the N:M SpMM kernel at U-ViT-S/2 and demo-model layer
//! shapes: prints one table row per (shape, pattern) with the medians of
//! interleaved runs (dense, sparse, dense, sparse, ...), so that load from
//! other processes hits both alike.
//!
//! `cargo run --release -p sparsedm-tensor --example nm_spmm_table [reps] [filter]`
//! (filter: a substring of the shape name, e.g. `uvit-b8`). Threads: rayon's
//! default (`RAYON_NUM_THREADS`). `SPARSEDM_NM_ISA=avx2|portable` measures a
//! slower path; `SPARSEDM_NM_KERNEL=rows|patterns` one kernel (default: the
//! instruction set's own, `NmKernel::for_weight`; on an AVX-512 CPU
//! `SPARSEDM_NM_ISA=avx2 SPARSEDM_NM_KERNEL=rows` times the row-wise kernel); `NM_TABLE_PATTERNS=2:4,4:8` other patterns,
//! `NM_TABLE_SHAPE=rows,in,out` one more shape. Columns: medians of wall
//! time, their ratio, useful GFLOP/s of the N:M kernel (2·rows·out·in·n/m),
//! the ratio of the fastest runs (robust when other jobs share the CPUs),
//! and the ratio of median CPU time of all threads from
//! `/proc/self/task/*/schedstat` (Linux; a running thread's count only
//! advances at scheduler ticks, so it means something only for runs of
//! tens of milliseconds; with several threads it includes rayon's spinning).
//! `NM_TABLE_CPU_MS=1` also prints those CPU times.

use sparsedm_tensor::nm_cpu::{Isa, NmKernel, NmLinear, NmPath, NmWeight, spmm_kernel_with};
use std::time::Instant;

#[path = "support/nm_data.rs"]
mod nm_data;
use nm_data::{lcg, masked};

/// CPU time of all threads of this process in seconds (Linux
/// `/proc/self/task/*/schedstat`, 0 elsewhere; tick-granular for a thread
/// that is running while it is read).
fn cpu_s() -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else { return 0.0 };
    dir.filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum::<u64>() as f64
        * 1e-9
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let reps: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(11);
    let filter = args.get(2).cloned().unwrap_or_default();
    let isa = match std::env::var("SPARSEDM_NM_ISA").as_deref() {
        Ok("avx2") => Isa::Avx2Fma,
        Ok("portable") => Isa::Portable,
        _ => Isa::best(),
    };
    let kernel = match std::env::var("SPARSEDM_NM_KERNEL").as_deref() {
        Ok("rows") => Some(NmKernel::Rows),
        Ok("patterns") => Some(NmKernel::Patterns),
        _ => None,
    };
    let spmm_with = |isa: Isa, x: &[f32], rows: usize, nm: &NmWeight, bias: Option<&[f32]>, y: &mut [f32]| {
        spmm_kernel_with(isa, kernel.unwrap_or_else(|| NmKernel::for_weight(isa, nm)), x, rows, nm, bias, y)
    };
    println!("kernel {:?}", kernel.map_or("the instruction set's own".to_string(), |k| format!("{k:?}")));
    let shapes: Vec<(String, usize, usize, usize)> = {
        let mut v = Vec::new();
        for (b, rows) in [(8, 8 * 257), (1, 257)] {
            for (name, inp, out) in [("qkv", 512, 1536), ("proj", 512, 512), ("fc1", 512, 2048), ("fc2", 2048, 512)] {
                v.push((format!("uvit-b{b}-{name}"), rows, inp, out));
            }
        }
        for (name, inp, out) in [("qkv", 128, 384), ("proj", 128, 128), ("fc1", 128, 512), ("fc2", 512, 128)] {
            v.push((format!("demo-b64-{name}"), 64 * 65, inp, out));
        }
        // NM_TABLE_SHAPE=rows,in,out: one extra shape.
        if let Ok(spec) = std::env::var("NM_TABLE_SHAPE") {
            let d: Vec<usize> = spec.split(',').filter_map(|x| x.parse().ok()).collect();
            if let [rows, inp, out] = d[..] {
                v.push((format!("custom-{rows}x{inp}x{out}"), rows, inp, out));
            }
        }
        v
    };
    println!("threads {}, isa {isa:?}, {reps} interleaved reps, medians", rayon::current_num_threads());
    println!(
        "{:<18} {:>5} {:>5} {:>5} {:>5} {:>10} {:>10} {:>7} {:>8} {:>8} {:>8}",
        "shape", "rows", "in", "out", "n:m", "dense ms", "n:m ms", "speedup", "GFLOP/s", "min", "cpu"
    );
    for (name, rows, inp, out) in shapes.iter().filter(|s| s.0.contains(&filter)) {
        let (rows, inp, out) = (*rows, *inp, *out);
        let mut s = 99;
        let x: Vec<f32> = (0..rows * inp).map(|_| lcg(&mut s)).collect();
        let bias: Vec<f32> = (0..out).map(|_| lcg(&mut s)).collect();
        let patterns: Vec<(usize, usize)> = std::env::var("NM_TABLE_PATTERNS")
            .ok()
            .map(|s| s.split(',').filter_map(|p| p.split_once(':')).filter_map(|(n, m)| Some((n.parse().ok()?, m.parse().ok()?))).collect())
            .unwrap_or_else(|| vec![(2, 4), (1, 4), (1, 8)]);
        for &(n, m) in &patterns {
            let w = masked(out, inp, n, m, 7);
            let layer = NmLinear::new(&w, out, inp, Some(&bias), n, m).expect("N:M weight");
            let nm: &NmWeight = layer.weight();
            let mut yd = vec![0f32; rows * out];
            let mut ys = vec![0f32; rows * out];
            // Warm up both (scratch buffers, caches, rayon).
            layer.forward_with(NmPath::Dense, &x, rows, &mut yd).unwrap();
            spmm_with(isa, &x, rows, nm, Some(&bias), &mut ys).unwrap();
            let (mut td, mut ts, mut cd, mut cs) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for _ in 0..reps {
                let (t, c) = (Instant::now(), cpu_s());
                layer.forward_with(NmPath::Dense, &x, rows, &mut yd).unwrap();
                cd.push(cpu_s() - c);
                td.push(t.elapsed().as_secs_f64());
                let (t, c) = (Instant::now(), cpu_s());
                spmm_with(isa, &x, rows, nm, Some(&bias), &mut ys).unwrap();
                cs.push(cpu_s() - c);
                ts.push(t.elapsed().as_secs_f64());
            }
            let cpu_ratio = median(&mut cd) / median(&mut cs);
            if std::env::var_os("NM_TABLE_CPU_MS").is_some() {
                println!("cpu ms: dense {:.3} n:m {:.3}", median(&mut cd) * 1e3, median(&mut cs) * 1e3);
            }
            let maxdiff = yd.iter().zip(&ys).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            let (md, ms) = (median(&mut td), median(&mut ts));
            let min_ratio = td[0] / ts[0];
            let useful = 2.0 * (rows * out * inp) as f64 * n as f64 / m as f64;
            println!(
                "{name:<18} {rows:>5} {inp:>5} {out:>5} {:>5} {:>10.3} {:>10.3} {:>6.2}x {:>8.1} {min_ratio:>7.2}x {cpu_ratio:>7.2}x   (max |dense-n:m| {maxdiff:.1e})",
                format!("{n}:{m}"),
                md * 1e3,
                ms * 1e3,
                md / ms,
                useful / ms / 1e9
            );
        }
    }
}
