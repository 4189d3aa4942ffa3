#!/usr/bin/env python3
"""PyTorch CPU peer for `cargo xtask bench vs-torch`.

Times the same network as `sparsedm bench` (the U-ViT or DDPM UNet of a
sparsedm preset, read from `crates/sparsedm-train/presets/NAME.toml`,
section [nnet]) in PyTorch: one sampling forward under `torch.no_grad()` and
one dense training step (ε-MSE on a noised batch, backward, AdamW with the
preset's hyper-parameters). Prints one JSON object on stdout.

The network is written here from the U-ViT paper's description (baofff/U-ViT
`libs/uvit.py` semantics: patch embedding by a strided conv, the time token
(and label token before it) prepended, long skips popped last-in-first-out
into `skip_linear`, LayerNorm eps 1e-5, exact GELU, a final 3×3 conv), and
the UNet from Ho et al.'s (as ported by pesser/pytorch_diffusion, whose
state-dict names it keeps: GroupNorm(32, eps 1e-6), swish, ResNet blocks
with a projected time embedding, single-head attention over H·W through
1×1 convs, a stride-2 conv after (0, 1, 0, 1) padding to downsample,
nearest ×2 and a conv to upsample). `--check` loads the shared model
fixtures of both and compares the outputs with the references, so a timing
can never be of a different network.

Runs in a Python environment of the user's (a venv outside the repo); it is
never a dependency of the build or the tests.
"""

import argparse
import json
import math
import os
import pathlib
import sys
import time

try:
    import tomllib
except ImportError:  # Python < 3.11
    tomllib = None

import torch
import torch.nn as nn
import torch.nn.functional as F


def timestep_embedding(t, dim, max_period=10000):
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class Attention(nn.Module):
    def __init__(self, dim, heads, qkv_bias):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, l, c = x.shape
        qkv = self.qkv(x).reshape(b, l, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        # The same math as U-ViT's "math" attention path, through PyTorch's fused CPU kernel.
        y = F.scaled_dot_product_attention(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(b, l, c))


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim, heads, mlp_ratio, qkv_bias, skip):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.skip_linear = nn.Linear(2 * dim, dim) if skip else None

    def forward(self, x, skip=None):
        if self.skip_linear is not None:
            x = self.skip_linear(torch.cat([x, skip], dim=-1))
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, patch, in_chans, dim):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch, stride=patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class UViT(nn.Module):
    def __init__(self, img_size=32, patch_size=2, in_chans=3, embed_dim=512, depth=12, num_heads=8, mlp_ratio=4.0,
                 qkv_bias=False, mlp_time_embed=False, num_classes=-1, conv=True, skip=True, **_):
        super().__init__()
        self.in_chans, self.patch = in_chans, patch_size
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        n = (img_size // patch_size) ** 2
        self.time_embed = nn.Sequential(nn.Linear(embed_dim, 4 * embed_dim), nn.SiLU(), nn.Linear(4 * embed_dim, embed_dim)) \
            if mlp_time_embed else nn.Identity()
        if num_classes > 0:
            self.label_emb = nn.Embedding(num_classes, embed_dim)
        self.extras = 2 if num_classes > 0 else 1
        self.pos_embed = nn.Parameter(torch.zeros(1, self.extras + n, embed_dim))
        self.in_blocks = nn.ModuleList([Block(embed_dim, num_heads, mlp_ratio, qkv_bias, False) for _ in range(depth // 2)])
        self.mid_block = Block(embed_dim, num_heads, mlp_ratio, qkv_bias, False)
        self.out_blocks = nn.ModuleList([Block(embed_dim, num_heads, mlp_ratio, qkv_bias, skip) for _ in range(depth // 2)])
        self.norm = nn.LayerNorm(embed_dim)
        self.decoder_pred = nn.Linear(embed_dim, patch_size ** 2 * in_chans)
        self.final_layer = nn.Conv2d(in_chans, in_chans, 3, padding=1) if conv else nn.Identity()
        self.embed_dim = embed_dim

    def forward(self, x, timesteps, y=None):
        b, _, hh, ww = x.shape
        x = self.patch_embed(x)
        tok = self.time_embed(timestep_embedding(timesteps, self.embed_dim)).unsqueeze(1)
        x = torch.cat([tok, x], dim=1)
        if y is not None:
            x = torch.cat([self.label_emb(y).unsqueeze(1), x], dim=1)
        x = x + self.pos_embed
        skips = []
        for blk in self.in_blocks:
            x = blk(x)
            skips.append(x)
        x = self.mid_block(x)
        for blk in self.out_blocks:
            x = blk(x, skips.pop())
        x = self.decoder_pred(self.norm(x))[:, self.extras:, :]
        p, c = self.patch, self.in_chans
        h, w = hh // p, ww // p
        x = x.reshape(b, h, w, p, p, c).permute(0, 5, 1, 3, 2, 4).reshape(b, c, h * p, w * p)
        return self.final_layer(x)


def swish(x):
    return x * torch.sigmoid(x)


def unet_timestep_embedding(t, dim):
    # sin before cos, exponent ln(10000) / (half − 1): the DDPM reference's convention.
    half = dim // 2
    freqs = torch.exp(torch.arange(half, dtype=torch.float32) * -(math.log(10000) / (half - 1)))
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


def group_norm(c, groups):
    return nn.GroupNorm(groups, c, eps=1e-6)


class ResnetBlock(nn.Module):
    def __init__(self, cin, cout, temb_ch, dropout, groups):
        super().__init__()
        self.norm1 = group_norm(cin, groups)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.temb_proj = nn.Linear(temb_ch, cout)
        self.norm2 = group_norm(cout, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x, temb):
        h = self.conv1(swish(self.norm1(x)))
        h = h + self.temb_proj(swish(temb))[:, :, None, None]
        h = self.conv2(self.dropout(swish(self.norm2(h))))
        return (x if self.nin_shortcut is None else self.nin_shortcut(x)) + h


class AttnBlock(nn.Module):
    def __init__(self, c, groups):
        super().__init__()
        self.norm = group_norm(c, groups)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(c, c, 1) for _ in range(4))

    def forward(self, x):
        b, c, hh, ww = x.shape
        h = self.norm(x)
        q = self.q(h).reshape(b, c, hh * ww).transpose(1, 2)
        k = self.k(h).reshape(b, c, hh * ww)
        v = self.v(h).reshape(b, c, hh * ww)
        w = torch.softmax(torch.bmm(q, k) * c ** -0.5, dim=2)
        h = torch.bmm(v, w.transpose(1, 2)).reshape(b, c, hh, ww)
        return x + self.proj_out(h)


class Downsample(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=2)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class UNet(nn.Module):
    def __init__(self, ch=128, out_ch=3, ch_mult=(1, 2, 2, 2), num_res_blocks=2, attn_resolutions=(16,), dropout=0.1,
                 resamp_with_conv=True, in_channels=3, resolution=32, num_groups=32, **_):
        super().__init__()
        if not resamp_with_conv:
            sys.exit("bench_torch.py: only resamp_with_conv = true is written here")
        self.ch, self.levels, self.blocks = ch, len(ch_mult), num_res_blocks
        self.temb = nn.Module()
        self.temb.dense = nn.ModuleList([nn.Linear(ch, 4 * ch), nn.Linear(4 * ch, 4 * ch)])
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)
        mults = (1,) + tuple(ch_mult)
        res, cin = resolution, ch
        self.down = nn.ModuleList()
        for i, mult in enumerate(ch_mult):
            level = nn.Module()
            level.block, level.attn = nn.ModuleList(), nn.ModuleList()
            cin = ch * mults[i]
            for _ in range(num_res_blocks):
                level.block.append(ResnetBlock(cin, ch * mult, 4 * ch, dropout, num_groups))
                cin = ch * mult
                if res in attn_resolutions:
                    level.attn.append(AttnBlock(cin, num_groups))
            if i != len(ch_mult) - 1:
                level.downsample = Downsample(cin)
                res //= 2
            self.down.append(level)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(cin, cin, 4 * ch, dropout, num_groups)
        self.mid.attn_1 = AttnBlock(cin, num_groups)
        self.mid.block_2 = ResnetBlock(cin, cin, 4 * ch, dropout, num_groups)
        up = []
        for i in reversed(range(len(ch_mult))):
            level = nn.Module()
            level.block, level.attn = nn.ModuleList(), nn.ModuleList()
            for j in range(num_res_blocks + 1):
                skip = ch * (mults[i] if j == num_res_blocks else ch_mult[i])
                level.block.append(ResnetBlock(cin + skip, ch * ch_mult[i], 4 * ch, dropout, num_groups))
                cin = ch * ch_mult[i]
                if res in attn_resolutions:
                    level.attn.append(AttnBlock(cin, num_groups))
            if i != 0:
                level.upsample = Upsample(cin)
                res *= 2
            up.insert(0, level)
        self.up = nn.ModuleList(up)
        self.norm_out = group_norm(cin, num_groups)
        self.conv_out = nn.Conv2d(cin, out_ch, 3, padding=1)

    def forward(self, x, t, y=None):
        temb = self.temb.dense[1](swish(self.temb.dense[0](unet_timestep_embedding(t, self.ch))))
        hs = [self.conv_in(x)]
        for i, level in enumerate(self.down):
            for j, block in enumerate(level.block):
                h = block(hs[-1], temb)
                hs.append(level.attn[j](h) if len(level.attn) else h)
            if i != self.levels - 1:
                hs.append(level.downsample(hs[-1]))
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(hs[-1], temb)), temb)
        for i in reversed(range(self.levels)):
            level = self.up[i]
            for j, block in enumerate(level.block):
                h = block(torch.cat([h, hs.pop()], dim=1), temb)
                if len(level.attn):
                    h = level.attn[j](h)
            if i != 0:
                h = level.upsample(h)
        return self.conv_out(swish(self.norm_out(h)))


def load_preset(root, name):
    path = root / "crates" / "sparsedm-train" / "presets" / f"{name}.toml"
    if tomllib is None:
        sys.exit("bench_torch.py: Python 3.11+ is needed to read the preset TOML")
    with open(path, "rb") as f:
        cfg = tomllib.load(f)
    if cfg.get("arch") not in ("uvit", "ddpm-unet"):
        sys.exit(f"bench_torch.py: preset {name} is {cfg.get('arch')!r}; U-ViT and DDPM UNet presets are benchmarked here")
    return cfg


def check(fixture_dir):
    """Our U-ViT and UNet against the shared reference fixtures (output, 1e-4 relative)."""
    from safetensors.torch import load_file

    worst = 0.0
    for name, make, t_key in [("uvit_tiny_uncond", UViT, "input.timesteps"), ("uvit_tiny_cond", UViT, "input.timesteps"),
                              ("ddpm_unet_tiny", UNet, "input.t")]:
        meta = json.load(open(fixture_dir / f"{name}.json"))
        net = make(**meta["config"])
        net.load_state_dict(load_file(str(fixture_dir / f"{name}.weights.safetensors")), strict=True)
        net.eval()
        io = load_file(str(fixture_dir / f"{name}.io.safetensors"))
        y = io.get("input.y")
        with torch.no_grad():
            out = net(io["input.x"], io[t_key], y)
        err = ((out - io["output"]).abs().max() / io["output"].abs().max()).item()
        worst = max(worst, err)
        print(f"{name}: max relative error {err:.2e}", file=sys.stderr)
    if worst > 1e-4:
        sys.exit(f"bench_torch.py: a PyTorch network differs from its reference fixture ({worst:.2e} > 1e-4)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="demo_shapes_uvit")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--check", metavar="FIXTURE_DIR", help="compare the network with the U-ViT fixtures first")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    root = pathlib.Path(__file__).resolve().parent.parent
    if a.check:
        check(pathlib.Path(a.check))
    cfg = load_preset(root, a.preset)
    kw = dict(cfg["nnet"])
    torch.manual_seed(0)
    unet = cfg["arch"] == "ddpm-unet"
    net = UNet(**kw) if unet else UViT(**kw)
    c = kw.get("in_channels", 3) if unet else kw.get("in_chans", 3)
    s = kw["resolution"] if unet else kw["img_size"]
    x0 = torch.randn(a.batch, c, s, s)
    t = torch.full((a.batch,), 500.0)

    net.eval()
    with torch.no_grad():
        for _ in range(2):
            net(x0, t)
        start = time.perf_counter()
        for _ in range(a.iters):
            net(x0, t)
        forward_ms = (time.perf_counter() - start) * 1e3 / a.iters

    net.train()
    o = cfg.get("optimizer", {})
    opt = torch.optim.AdamW(net.parameters(), lr=o.get("lr", 2e-4), betas=tuple(o.get("betas", [0.9, 0.999])),
                            weight_decay=o.get("weight_decay", 0.03))

    def step():
        # VP-linear (β from 0.1 to 20) forward process at a uniform t, as sparsedm's trainer draws it.
        tt = torch.rand(a.batch) * (1 - 1e-5) + 1e-5
        log_mean = -0.25 * tt ** 2 * (20 - 0.1) - 0.5 * tt * 0.1
        mean, std = log_mean.exp(), (1 - (2 * log_mean).exp()).sqrt()
        eps = torch.randn_like(x0)
        xt = mean[:, None, None, None] * x0 + std[:, None, None, None] * eps
        # The UNet takes integer steps of its discrete schedule; the timing does not depend on the values.
        steps = (tt * 999).floor() if unet else tt * 999
        loss = (net(xt, steps) - eps).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(2):
        step()
    start = time.perf_counter()
    for _ in range(a.iters):
        step()
    train_ms = (time.perf_counter() - start) * 1e3 / a.iters
    print(json.dumps({
        "peer": f"PyTorch {torch.__version__} CPU fp32, {torch.get_num_threads()} threads",
        "preset": a.preset,
        "batch": a.batch,
        "forward_ms": forward_ms,
        "train_step_ms": train_ms,
        "params": sum(p.numel() for p in net.parameters()),
    }))


if __name__ == "__main__":
    main()
