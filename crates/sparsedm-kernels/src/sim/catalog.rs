//! Which kernels a module has and how the simulator must run each, read from the module's PTX
//! (`crate::ptx::MODULES`, built by nvcc from the same sources the simulator compiles, and kept in
//! step by the PTX freshness tests).
//!
//! A kernel whose PTX contains no barrier (`bar.*`, `barrier.*`), no warp operation (`shfl.*`,
//! `vote.*`, `match.*`, `redux.*`) and no call (a non-inlined function could hold one) cannot make
//! one of its threads wait for another, so its threads can run one after another as a plain loop;
//! every other kernel runs its threads as fibers. `membar` (a fence) is not a barrier.

/// One kernel of a module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KernelInfo {
    pub(crate) name: String,
    /// Whether its threads may wait for each other (run as fibers).
    pub(crate) needs_fibers: bool,
}

/// The `.entry` kernels of a PTX text, in order.
pub(crate) fn kernels_of(ptx: &str) -> Vec<KernelInfo> {
    let mut out: Vec<KernelInfo> = Vec::new();
    for line in ptx.lines() {
        let t = line.trim();
        if let Some(pos) = t.find(".entry ") {
            let rest = &t[pos + ".entry ".len()..];
            let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if !name.is_empty() {
                out.push(KernelInfo { name, needs_fibers: false });
            }
            continue;
        }
        if let Some(k) = out.last_mut()
            && !k.needs_fibers
            && synchronizes(t)
        {
            k.needs_fibers = true;
        }
    }
    out
}

/// Whether one PTX instruction line makes threads wait for each other (or may: a call).
fn synchronizes(line: &str) -> bool {
    // Strip a guard predicate ("@%p1 bar.sync 0;") and take the opcode.
    let line = line.trim_start();
    let line = if line.starts_with('@') { line.split_once(char::is_whitespace).map_or("", |(_, r)| r.trim_start()) } else { line };
    let op = line.split(|c: char| c.is_whitespace() || c == ';').next().unwrap_or("");
    ["bar.", "barrier.", "shfl.", "vote.", "match.", "redux.", "call"].iter().any(|p| op.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn barriers_and_shuffles_need_fibers_and_fences_do_not() {
        let ptx = ".visible .entry a(\n\tld.param.u64 %rd1;\n\tmembar.gl;\n\tret;\n}\n\
                   .visible .entry b(\n\t@%p1 bar.sync 0;\n}\n\
                   .visible .entry c(\n\tshfl.sync.bfly.b32 %r1|%p1, %r2, 1, 31, -1;\n}\n\
                   .visible .entry d(\n\tcall.uni (retval0), f, (param0);\n}\n";
        let k = kernels_of(ptx);
        let got: Vec<(&str, bool)> = k.iter().map(|k| (k.name.as_str(), k.needs_fibers)).collect();
        assert_eq!(got, [("a", false), ("b", true), ("c", true), ("d", true)]);
    }

    #[test]
    fn every_embedded_module_lists_its_kernels_and_reductions_need_fibers() {
        for (module, ptx) in crate::ptx::MODULES {
            assert!(!kernels_of(ptx).is_empty(), "module {module}: no .entry found");
        }
        let reduce = crate::ptx::MODULES.iter().find(|(m, _)| *m == "reduce").unwrap().1;
        assert!(kernels_of(reduce).iter().all(|k| k.needs_fibers), "block reductions use bar.sync and shuffles");
        let ew = crate::ptx::MODULES.iter().find(|(m, _)| *m == "elementwise").unwrap().1;
        assert!(kernels_of(ew).iter().all(|k| !k.needs_fibers), "elementwise maps have no barrier");
    }
}
