//! The PTX of every kernel module, embedded at build time from the committed `kernels/ptx/`.
//!
//! `cargo xtask ptx` compiles `kernels/*.cu` with nvcc 13.0 and records each module's source and
//! PTX hashes in `kernels/ptx/MANIFEST`; building this crate needs no CUDA toolkit. The tests
//! below keep the three in step on any machine: a kernel source edited without regenerating its
//! PTX, a module missing from [`MODULES`], or a kernel of `kernels/ABI.md` absent from its
//! module's PTX fails `cargo test -p sparsedm-kernels`.

/// `(module name, PTX text)` for every `kernels/<name>.cu`, in the MANIFEST's order.
pub const MODULES: &[(&str, &str)] = &[
    ("conv", include_str!("../../../kernels/ptx/conv.ptx")),
    ("copy", include_str!("../../../kernels/ptx/copy.ptx")),
    ("elementwise", include_str!("../../../kernels/ptx/elementwise.ptx")),
    ("index", include_str!("../../../kernels/ptx/index.ptx")),
    ("norm", include_str!("../../../kernels/ptx/norm.ptx")),
    ("optim", include_str!("../../../kernels/ptx/optim.ptx")),
    ("pool", include_str!("../../../kernels/ptx/pool.ptx")),
    ("reduce", include_str!("../../../kernels/ptx/reduce.ptx")),
    ("rng", include_str!("../../../kernels/ptx/rng.ptx")),
    ("softmax", include_str!("../../../kernels/ptx/softmax.ptx")),
    ("sparse", include_str!("../../../kernels/ptx/sparse.ptx")),
];

#[cfg(test)]
mod tests {
    use super::MODULES;
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};

    const REGENERATE: &str = "run `cargo xtask ptx` (nvcc 13.0, see ../shared/GPU.md §2) and commit kernels/ptx/";

    fn kernels_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../kernels")
    }

    /// 64-bit FNV-1a over the concatenation of `parts` (as xtask/src/ptx.rs).
    fn fnv1a64<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> u64 {
        parts.into_iter().flatten().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3))
    }

    /// Sorted regular files of `dir` whose name ends with `suffix`.
    fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file() && p.to_string_lossy().ends_with(suffix))
            .collect();
        v.sort();
        v
    }

    /// Module names of `kernels/*.cu`.
    fn sources() -> Vec<String> {
        files(&kernels_dir(), ".cu").iter().map(|p| p.file_stem().unwrap().to_string_lossy().into_owned()).collect()
    }

    /// MANIFEST lines as name → (source hash, PTX hash).
    fn manifest() -> BTreeMap<String, (String, String)> {
        let path = kernels_dir().join("ptx/MANIFEST");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}; {REGENERATE}", path.display()));
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| match l.split_whitespace().collect::<Vec<_>>()[..] {
                [name, src, ptx] => (name.to_string(), (src.to_string(), ptx.to_string())),
                _ => panic!("malformed MANIFEST line {l:?}; {REGENERATE}"),
            })
            .collect()
    }

    #[test]
    fn sources_match_the_manifest() {
        let dir = kernels_dir();
        let includes: Vec<Vec<u8>> = files(&dir.join("include"), "").iter().map(|p| std::fs::read(p).unwrap()).collect();
        let manifest = manifest();
        let mut stale = Vec::new();
        for name in sources() {
            let cu = std::fs::read(dir.join(format!("{name}.cu"))).unwrap();
            let hash = format!("{:016x}", fnv1a64(std::iter::once(cu.as_slice()).chain(includes.iter().map(Vec::as_slice))));
            if manifest.get(&name).map(|(src, _)| src) != Some(&hash) {
                stale.push(name);
            }
        }
        assert!(stale.is_empty(), "PTX out of date for {stale:?} (kernels/*.cu or kernels/include changed): {REGENERATE}");
    }

    #[test]
    fn every_source_has_a_manifest_line_and_an_embedded_module() {
        let (sources, manifest) = (sources(), manifest());
        for name in &sources {
            assert!(manifest.contains_key(name), "kernels/{name}.cu has no MANIFEST line: {REGENERATE}");
            assert!(MODULES.iter().any(|(m, _)| m == name), "kernels/{name}.cu is missing from ptx::MODULES (src/ptx.rs)");
        }
        for name in manifest.keys() {
            assert!(sources.contains(name), "MANIFEST lists {name} but kernels/{name}.cu does not exist: {REGENERATE}");
        }
        for (name, _) in MODULES {
            assert!(sources.iter().any(|s| s == name), "ptx::MODULES embeds {name} but kernels/{name}.cu does not exist");
        }
    }

    #[test]
    fn embedded_ptx_matches_the_manifest() {
        let manifest = manifest();
        for (name, ptx) in MODULES {
            let want = manifest.get(*name).map(|(_, p)| p.as_str());
            let got = format!("{:016x}", fnv1a64([ptx.as_bytes()]));
            assert_eq!(want, Some(got.as_str()), "kernels/ptx/{name}.ptx does not match its MANIFEST hash: {REGENERATE}");
        }
    }

    /// The kernels `kernels/ABI.md` promises, as (module, kernel name): the rows
    /// "| `name(…` " of each "## Module `m`" section, `_T` expanded to f32/f16/bf16 and
    /// `cast_S_D` to the "S→D" pairs its row lists.
    fn abi_kernels() -> Vec<(String, String)> {
        let text = std::fs::read_to_string(kernels_dir().join("ABI.md")).unwrap();
        let mut module = String::new();
        let mut out = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("## Module `") {
                module = rest.split('`').next().unwrap().to_string();
                continue;
            }
            let Some(rest) = line.strip_prefix("| `") else { continue };
            let Some((name, _)) = rest.split_once('(') else { continue };
            assert!(!module.is_empty(), "ABI.md: kernel row {name} before any module heading");
            if let Some(stem) = name.strip_suffix("_S_D") {
                let pairs: Vec<(&str, &str)> =
                    line.split(|c: char| !(c.is_ascii_alphanumeric() || c == '→')).filter_map(|w| w.split_once('→')).collect();
                assert!(!pairs.is_empty(), "ABI.md: {name} lists no S→D pairs");
                out.extend(pairs.iter().map(|(s, d)| (module.clone(), format!("{stem}_{s}_{d}"))));
            } else if let Some(stem) = name.strip_suffix("_T") {
                out.extend(["f32", "f16", "bf16"].iter().map(|t| (module.clone(), format!("{stem}_{t}"))));
            } else {
                out.push((module.clone(), name.to_string()));
            }
        }
        out
    }

    #[test]
    fn every_abi_kernel_is_in_its_module_ptx() {
        let kernels = abi_kernels();
        assert!(kernels.len() > 50, "ABI.md parsing found only {} kernels", kernels.len());
        let mut missing = Vec::new();
        for (module, name) in &kernels {
            let Some((_, ptx)) = MODULES.iter().find(|(m, _)| m == module) else {
                missing.push(format!("{module}::{name} (module not embedded)"));
                continue;
            };
            if !ptx.contains(&format!(".entry {name}(")) {
                missing.push(format!("{module}::{name}"));
            }
        }
        assert!(missing.is_empty(), "kernels of kernels/ABI.md missing from the PTX: {missing:?}");
    }
}
