//! The paper's published numbers (SparseDM, arXiv 2404.10445; the tables'
//! text as extracted in ../shared/reference/SparseDM_paper.txt), printed
//! beside ours. FID on 50k samples; MACs in G per image.

/// One published row: dataset, method, FID, MACs (G).
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct PaperRow {
    pub model: &'static str,
    pub dataset: &'static str,
    pub method: &'static str,
    pub fid: f64,
    pub macs_g: f64,
}

const fn r(model: &'static str, dataset: &'static str, method: &'static str, fid: f64, macs_g: f64) -> PaperRow {
    PaperRow { model, dataset, method, fid, macs_g }
}

/// Table 1: a half-size U-ViT and apex ASP collapse where the dense model does not.
pub const TABLE1: &[PaperRow] = &[
    r("U-ViT-S/2", "CIFAR10 32x32", "dense", 3.97, 11.34),
    r("U-ViT-S/2", "CIFAR10 32x32", "half-size U-ViT", 678.20, 5.83),
    r("U-ViT-S/2", "CIFAR10 32x32", "ASP", 319.87, 5.76),
    r("U-ViT-S/4", "CelebA 64x64", "dense", 3.30, 11.34),
    r("U-ViT-S/4", "CelebA 64x64", "half-size U-ViT", 441.37, 5.83),
    r("U-ViT-S/4", "CelebA 64x64", "ASP", 438.31, 5.76),
];

/// Table 2: 2:4 results.
pub const TABLE2: &[PaperRow] = &[
    r("U-ViT", "CIFAR10 32x32", "dense", 3.97, 11.34),
    r("U-ViT", "CIFAR10 32x32", "Diff-Pruning", 12.63, 5.32),
    r("U-ViT", "CIFAR10 32x32", "ASP", 319.87, 5.76),
    r("U-ViT", "CIFAR10 32x32", "STE", 4.23, 5.67),
    r("U-ViT", "CIFAR10 32x32", "SparseDM", 3.81, 5.67),
    r("U-ViT", "CelebA 64x64", "dense", 3.30, 11.34),
    r("U-ViT", "CelebA 64x64", "Diff-Pruning", 11.35, 5.32),
    r("U-ViT", "CelebA 64x64", "ASP", 438.31, 5.76),
    r("U-ViT", "CelebA 64x64", "STE", 3.75, 5.67),
    r("U-ViT", "CelebA 64x64", "SparseDM", 3.52, 5.67),
    r("U-ViT (LDM)", "MS-COCO 256x256", "dense", 5.95, 11.34),
    r("U-ViT (LDM)", "MS-COCO 256x256", "Diff-Pruning", 15.20, 5.43),
    r("U-ViT (LDM)", "MS-COCO 256x256", "ASP", 350.87, 5.79),
    r("U-ViT (LDM)", "MS-COCO 256x256", "STE", 8.14, 5.68),
    r("U-ViT (LDM)", "MS-COCO 256x256", "SparseDM", 7.09, 5.68),
    r("U-ViT (LDM)", "ImageNet 256x256", "dense", 3.81, 76.66),
    r("U-ViT (LDM)", "ImageNet 256x256", "Diff-Pruning", 14.28, 34.06),
    r("U-ViT (LDM)", "ImageNet 256x256", "ASP", 367.41, 37.93),
    r("U-ViT (LDM)", "ImageNet 256x256", "STE", 5.83, 36.84),
    r("U-ViT (LDM)", "ImageNet 256x256", "SparseDM", 5.25, 36.84),
    r("DDPM UNet", "CIFAR10 32x32", "dense", 3.23, 9.44),
    r("DDPM UNet", "CIFAR10 32x32", "Diff-Pruning", 12.31, 4.75),
    r("DDPM UNet", "CIFAR10 32x32", "ASP", 328.47, 4.91),
    r("DDPM UNet", "CIFAR10 32x32", "STE", 3.83, 4.87),
    r("DDPM UNet", "CIFAR10 32x32", "SparseDM", 3.12, 4.87),
    r("DDPM UNet", "CelebA 64x64", "dense", 2.94, 9.44),
    r("DDPM UNet", "CelebA 64x64", "Diff-Pruning", 11.19, 4.75),
    r("DDPM UNet", "CelebA 64x64", "ASP", 441.52, 4.91),
    r("DDPM UNet", "CelebA 64x64", "STE", 3.66, 4.87),
    r("DDPM UNet", "CelebA 64x64", "SparseDM", 3.04, 4.87),
];

/// Table 3: end-to-end 2:4 speed-up (dense time / sparse time) of a one-block
/// U-ViT of width 8192 (8 heads × 1024), batch 64, fp16, on 32×32 inputs:
/// rows mlp_ratio 1, 2, 4, 8; columns patch 1, 2, 4. Paper: A40, PyTorch 2.2
/// CUTLASS kernels. Peer: PyTorch 2.11 cuSPARSELt on the H200 (../shared/GPU.md §6).
/// Table 3's block: width 8192 = 8 heads × 1024, batch 64, 32×32 inputs (tokens = (32/patch)² + 1
/// with the time token), mlp_ratio 1/2/4/8 × patch 1/2/4 (../shared/GPU.md §6).
pub const TABLE3_WIDTH: usize = 8192;
pub const TABLE3_HEADS: usize = 8;
pub const TABLE3_BATCH: usize = 64;
pub const TABLE3_IMAGE: usize = 32;
pub const TABLE3_MLP_RATIOS: [usize; 4] = [1, 2, 4, 8];
pub const TABLE3_PATCHES: [usize; 3] = [1, 2, 4];
pub const TABLE3_PAPER: [[f64; 3]; 4] = [[1.02, 1.01, 1.01], [1.04, 0.97, 1.01], [1.23, 1.10, 0.98], [1.22, 1.17, 1.08]];
pub const TABLE3_PYTORCH_H200: [[f64; 3]; 4] = [[0.73, 0.91, 0.87], [0.79, 0.98, 1.00], [0.85, 0.99, 1.08], [0.91, 0.99, 1.14]];

/// The ablation's sparsity ratios (Fig. 3 of the paper; its numbers are only in figures).
pub const ABLATION_RATIOS: [&str; 10] = ["32:32", "31:32", "15:16", "7:8", "3:4", "2:4", "1:4", "1:8", "1:16", "1:32"];
