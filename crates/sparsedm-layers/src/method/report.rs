//! [`SparsityReport`]: what is sparse in a model, layer by layer, and what
//! it saves.
//!
//! One line per Linear/Conv2d weight (every sparse slot of a
//! [`ParamStore`]): kind, shape, mode, pattern, how the mask is built
//! (grouped along the input dimension, transposable 2:4, SparseDM's
//! flat-index groups, or left dense), the *achieved* sparsity of the
//! deployed weight (the fraction of exact zeros, so a pruned checkpoint can
//! be checked against what was asked for), and, when the caller supplies
//! per-layer dense MACs (the models crate counts them), the dense and the
//! sparse MACs. Then totals. [`std::fmt::Display`] prints an aligned table;
//! the type serialises to JSON with serde for scripts.
//!
//! Sparse MACs are what an N:M kernel executes: `dense · N/M` for a layer
//! whose weight really carries an N:M mask, `dense` for a dense layer or one
//! left dense because its input dimension does not split into groups of M.
//! Zeros that happen to sit in a dense weight save nothing and are not
//! counted as savings (they do show in the achieved sparsity).

use crate::nn::sparse::SparseMode;
use crate::{LayersError, ParamStore, WeightLayout};
use serde::Serialize;
use std::collections::HashMap;
use std::fmt;

/// The layer type of a weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum LayerKind {
    Linear,
    Conv2d,
}

impl LayerKind {
    /// The kind of a weight layout.
    pub fn of(layout: WeightLayout) -> Self {
        match layout {
            WeightLayout::Linear { .. } => LayerKind::Linear,
            WeightLayout::Conv2d { .. } => LayerKind::Conv2d,
        }
    }
}

/// One layer of a [`SparsityReport`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerReport {
    /// State-dict prefix (`in_blocks.0.attn.qkv`); the weight is `<name>.weight`.
    pub name: String,
    pub kind: LayerKind,
    /// PyTorch weight shape.
    pub shape: Vec<usize>,
    /// `dense`, `srste`, `srste:<λ>`, `ste`, `fixed`, `fixed-transposable`, `untrained`.
    pub mode: String,
    /// `N:M`, or `None` for a dense layer.
    pub pattern: Option<String>,
    /// `grouped`, `transposable`, `flat-index`, `left-dense` or `dense`.
    pub masking: String,
    /// Why a layer is dense (not selected by the policy, ASP's size rule, ...).
    pub note: Option<String>,
    /// Weight elements.
    pub params: u64,
    /// Exact zeros in the deployed weight.
    pub zeros: u64,
    /// `zeros / params`.
    pub sparsity: f64,
    /// Dense MACs of one forward, when the caller supplied them.
    pub dense_macs: Option<u64>,
    /// MACs with the N:M pattern applied (see the module doc).
    pub sparse_macs: Option<u64>,
    /// N/M when the weight carries a mask, else 1 (used for the MACs).
    #[serde(skip)]
    density: (u64, u64),
}

/// The sums of a [`SparsityReport`].
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ReportTotals {
    /// Linear/Conv2d layers.
    pub layers: usize,
    /// Layers whose weight carries an N:M mask with N < M.
    pub sparse_layers: usize,
    /// Weight elements over all layers.
    pub params: u64,
    /// Exact zeros over all layers.
    pub zeros: u64,
    /// `zeros / params`.
    pub sparsity: f64,
    /// Sum of the layers' dense MACs (those that have a count).
    pub dense_macs: Option<u64>,
    /// Sum of the layers' sparse MACs.
    pub sparse_macs: Option<u64>,
}

/// Per-layer sparsity of a model; see the module doc.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SparsityReport {
    /// The policy that produced it, when one did.
    pub policy: Option<String>,
    /// The requested pattern, when one was.
    pub pattern: Option<String>,
    pub layers: Vec<LayerReport>,
    pub totals: ReportTotals,
}

impl SparsityReport {
    /// Describes every sparse slot of `store` as it is now (no MACs; add
    /// them with [`Self::with_macs`]).
    ///
    /// # Errors
    /// A tensor error reading a weight, or a mask that cannot be built.
    pub fn from_store(store: &ParamStore) -> Result<Self, LayersError> {
        let mut layers = Vec::new();
        for (name, slot) in store.sparse_slots() {
            let mode = slot.mode();
            let values = slot.deployed_weight()?.to_vec_f32()?;
            let params = values.len() as u64;
            let zeros = values.iter().filter(|&&v| v == 0.0).count() as u64;
            let plan = slot.plan();
            let masked = plan.is_some_and(|p| p.is_masked());
            let density = match mode.pattern() {
                Some(p) if masked => (p.n() as u64, p.m() as u64),
                _ => (1, 1),
            };
            let layout = slot.layout();
            layers.push(LayerReport {
                name,
                kind: LayerKind::of(layout),
                shape: layout.shape(),
                mode: mode_label(mode),
                pattern: mode.pattern().map(|p| p.to_string()),
                masking: plan.map_or("dense", |p| p.name()).to_string(),
                note: None,
                params,
                zeros,
                sparsity: if params == 0 { 0.0 } else { zeros as f64 / params as f64 },
                dense_macs: None,
                sparse_macs: None,
                density,
            });
        }
        let mut report = SparsityReport { policy: None, pattern: None, layers, totals: ReportTotals::default() };
        report.retotal();
        Ok(report)
    }

    /// Adds each layer's dense MACs from `macs` (keyed by layer name, as
    /// the models crate's per-layer counts are) and the sparse MACs they
    /// imply; names not in the report are ignored, layers without a count
    /// keep `None`.
    pub fn with_macs(mut self, macs: &HashMap<String, u64>) -> Self {
        for l in &mut self.layers {
            l.dense_macs = macs.get(&l.name).copied();
            l.sparse_macs = l.dense_macs.map(|d| {
                let (n, m) = l.density;
                (u128::from(d) * u128::from(n) / u128::from(m)) as u64
            });
        }
        self.retotal();
        self
    }

    /// The layer called `name`.
    pub fn layer(&self, name: &str) -> Option<&LayerReport> {
        self.layers.iter().find(|l| l.name == name)
    }

    /// Sets the note of layer `name` (used by policies to say why it is dense).
    pub(crate) fn set_note(&mut self, name: &str, note: String) {
        if let Some(l) = self.layers.iter_mut().find(|l| l.name == name) {
            l.note = Some(note);
        }
    }

    /// The report as pretty-printed JSON.
    ///
    /// # Errors
    /// Never in practice (every field serialises); a serde error would be
    /// reported as [`LayersError::InvalidArgument`].
    pub fn to_json(&self) -> Result<String, LayersError> {
        serde_json::to_string_pretty(self).map_err(|e| LayersError::InvalidArgument { what: "sparsity report".into(), msg: e.to_string() })
    }

    fn retotal(&mut self) {
        let l = &self.layers;
        let params: u64 = l.iter().map(|x| x.params).sum();
        let zeros: u64 = l.iter().map(|x| x.zeros).sum();
        let any_macs = l.iter().any(|x| x.dense_macs.is_some());
        self.totals = ReportTotals {
            layers: l.len(),
            sparse_layers: l.iter().filter(|x| x.density.0 < x.density.1).count(),
            params,
            zeros,
            sparsity: if params == 0 { 0.0 } else { zeros as f64 / params as f64 },
            dense_macs: any_macs.then(|| l.iter().filter_map(|x| x.dense_macs).sum()),
            sparse_macs: any_macs.then(|| l.iter().filter_map(|x| x.sparse_macs).sum()),
        };
    }
}

/// The mode as written in reports and checkpoint metadata.
fn mode_label(mode: SparseMode) -> String {
    mode.kind().to_string()
}

fn mmacs(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{:.3}", v as f64 / 1e6))
}

impl fmt::Display for SparsityReport {
    /// An aligned table, one line per layer, then the totals.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let has_macs = self.totals.dense_macs.is_some();
        let mut rows: Vec<Vec<String>> =
            vec![["layer", "kind", "shape", "mode", "n:m", "masking", "sparsity"].iter().map(|s| s.to_string()).collect()];
        if has_macs {
            rows[0].extend(["dense MMACs".to_string(), "sparse MMACs".to_string()]);
        }
        rows[0].push("note".into());
        for l in &self.layers {
            let shape = format!("{:?}", l.shape);
            let mut row = vec![
                l.name.clone(),
                format!("{:?}", l.kind),
                shape,
                l.mode.clone(),
                l.pattern.clone().unwrap_or_else(|| "-".into()),
                l.masking.clone(),
                format!("{:.2}%", 100.0 * l.sparsity),
            ];
            if has_macs {
                row.extend([mmacs(l.dense_macs), mmacs(l.sparse_macs)]);
            }
            row.push(l.note.clone().unwrap_or_default());
            rows.push(row);
        }
        let cols = rows[0].len();
        let widths: Vec<usize> = (0..cols).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
        // Numbers right-aligned: sparsity and the MACs columns.
        let right = |c: usize| c == 6 || (has_macs && (c == 7 || c == 8));
        for row in &rows {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                if c + 1 == cols {
                    line.push_str(cell);
                } else if right(c) {
                    line.push_str(&format!("{cell:>w$}  ", w = widths[c]));
                } else {
                    line.push_str(&format!("{cell:<w$}  ", w = widths[c]));
                }
            }
            writeln!(f, "{}", line.trim_end())?;
        }
        let t = &self.totals;
        write!(
            f,
            "total: {} layers, {} with an N:M mask; {} weights, {} zeros ({:.2}%)",
            t.layers,
            t.sparse_layers,
            t.params,
            t.zeros,
            100.0 * t.sparsity
        )?;
        if let (Some(d), Some(s)) = (t.dense_macs, t.sparse_macs) {
            write!(f, "; MACs {:.4} G dense -> {:.4} G sparse", d as f64 / 1e9, s as f64 / 1e9)?;
        }
        writeln!(f)
    }
}
