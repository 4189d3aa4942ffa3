#!/usr/bin/env python3
"""Convert a PyTorch checkpoint (.pth / .ckpt / .pt) to safetensors, keeping every tensor name.

The Rust models of sparsedm load official weights by their PyTorch state-dict names
(``in_blocks.0.attn.qkv.weight``, ``down.1.block.0.nin_shortcut.weight``, ``Mixed_5b.branch1x1.conv.weight``),
so a converted file must hold exactly the ``state_dict()`` of the reference module. This script
writes that, nothing renamed:

* U-ViT (baofff/U-ViT): ``nnet_ema.pth`` / ``nnet.pth`` (a plain state dict);
* pesser/pytorch_diffusion checkpoints (``diffusion_cifar10_model/model-790000.ckpt``,
  ``ema_diffusion_cifar10_model/...``; plain state dicts despite the suffix);
* pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` (FID Inception, with the int64
  ``num_batches_tracked`` buffers and ``fc.*``);
* Lightning-style ``.ckpt`` files and training snapshots whose state dict sits under a key such as
  ``state_dict``, ``model``, ``ema``, ``model_ema``, ``nnet`` or ``module`` (found automatically, or
  chosen with ``--key a.b``).

Details handled: non-contiguous tensors (transposed views) are made contiguous; tensors sharing
storage (tied weights, views of one buffer) are each written as their own copy, since safetensors
stores no aliasing; dtypes are kept (f16/bf16 are converted to f32 by the Rust loader) unless
``--dtype f32`` is given; non-tensor entries (step counters, optimizer hyper-parameters) are
reported and skipped. After writing, the file is read back and compared tensor by tensor.

Usage (needs PyTorch and the ``safetensors`` package; not part of the Rust build or CI)::

    python scripts/convert_checkpoint.py nnet_ema.pth cifar10_uvit_small.safetensors
    python scripts/convert_checkpoint.py model-790000.ckpt ddpm_cifar10.safetensors --dtype f32
    python scripts/convert_checkpoint.py pt_inception-2015-12-05-6726825d.pth inception.safetensors
    python scripts/convert_checkpoint.py last.ckpt out.safetensors --key state_dict --strip-prefix model.

Then, for example::

    sparsedm forward --arch uvit --config uvit.json --weights cifar10_uvit_small.safetensors \\
        --inputs in.safetensors --output out.safetensors

``torch.load`` runs with ``weights_only=True`` (no code execution from the file); pass
``--unsafe-load`` only for a trusted file that needs full unpickling (some Lightning checkpoints).
Exit status 0 on success, 1 with one ``error:`` line otherwise.
"""

from __future__ import annotations

import argparse
import collections.abc
import sys

# Keys under which training scripts commonly nest the model's state dict, most specific first.
NESTED_KEYS = ("state_dict", "model_ema", "ema", "model", "nnet_ema", "nnet", "net", "module", "params")


class ConvertError(Exception):
    """A problem with the input that the user can fix (reported as one line)."""


def _is_tensor(x) -> bool:
    import torch

    return isinstance(x, torch.Tensor)


def _tensor_count(d) -> int:
    return sum(1 for v in d.values() if _is_tensor(v)) if isinstance(d, collections.abc.Mapping) else 0


def find_state_dict(obj, key: str | None):
    """Returns (state_dict, path) where path names the nesting that was followed."""
    if key:
        cur = obj
        for part in key.split("."):
            if not isinstance(cur, collections.abc.Mapping) or part not in cur:
                have = ", ".join(map(str, cur.keys())) if isinstance(cur, collections.abc.Mapping) else type(cur).__name__
                raise ConvertError(f"--key {key!r}: no entry {part!r} (found: {have})")
            cur = cur[part]
        if _tensor_count(cur) == 0:
            raise ConvertError(f"--key {key!r} does not lead to a dict of tensors")
        return cur, key
    if not isinstance(obj, collections.abc.Mapping):
        if hasattr(obj, "state_dict"):
            return obj.state_dict(), "<module>.state_dict()"
        raise ConvertError(f"the checkpoint holds a {type(obj).__name__}, not a state dict")
    path = []
    cur = obj
    # Follow nesting while the current level holds no tensors but a known key does.
    while _tensor_count(cur) == 0:
        nxt = next((k for k in NESTED_KEYS if isinstance(cur.get(k), collections.abc.Mapping)), None)
        if nxt is None:
            have = ", ".join(map(str, cur.keys()))
            raise ConvertError(f"no tensors found at {'.'.join(path) or 'the top level'} (keys: {have}); choose one with --key")
        path.append(nxt)
        cur = cur[nxt]
    return cur, ".".join(path) or "<top level>"


def flatten(state, prefix: str = ""):
    """Yields (name, value), descending into nested mappings with dotted names."""
    for k, v in state.items():
        name = f"{prefix}{k}"
        if isinstance(v, collections.abc.Mapping):
            yield from flatten(v, name + ".")
        else:
            yield name, v


def convert(src: str, dst: str, key: str | None, dtype: str | None, strip_prefix: str | None, unsafe: bool, verify: bool) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    try:
        obj = torch.load(src, map_location="cpu", weights_only=not unsafe)
    except FileNotFoundError:
        raise ConvertError(f"{src}: no such file")
    except Exception as e:  # unpickling errors, corrupt files
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        hint = "" if unsafe else " (if the file is trusted and needs full unpickling, add --unsafe-load)"
        raise ConvertError(f"{src}: cannot load ({first}){hint}")

    state, where = find_state_dict(obj, key)
    tensors = {}
    skipped = []
    for name, value in flatten(state):
        if strip_prefix and name.startswith(strip_prefix):
            name = name[len(strip_prefix):]
        if not _is_tensor(value):
            skipped.append(f"{name} ({type(value).__name__})")
            continue
        if name in tensors:
            raise ConvertError(f"two tensors named {name!r} after --strip-prefix")
        t = value.detach().to("cpu")
        if dtype == "f32" and t.is_floating_point():
            t = t.to(torch.float32)
        # A fresh contiguous copy: no shared storage, no strides, no extra bytes of a larger buffer.
        tensors[name] = t.contiguous().clone()
    if not tensors:
        raise ConvertError(f"{src}: no tensors to write")

    metadata = {"format": "pt", "source": src.rsplit("/", 1)[-1], "state_dict_path": where}
    save_file(tensors, dst, metadata=metadata)

    if verify:
        back = load_file(dst)
        if set(back) != set(tensors):
            raise ConvertError(f"{dst}: read-back names differ from the source")
        for name, t in tensors.items():
            b = back[name]
            if b.dtype != t.dtype or b.shape != t.shape or not torch.equal(b, t):
                raise ConvertError(f"{dst}: tensor {name} differs after read-back")

    n_values = sum(t.numel() for t in tensors.values())
    dtypes = collections.Counter(str(t.dtype).replace("torch.", "") for t in tensors.values())
    print(f"{src} [{where}] -> {dst}: {len(tensors)} tensors, {n_values:,} values ({', '.join(f'{v} {k}' for k, v in sorted(dtypes.items()))})")
    for s in skipped:
        print(f"  skipped non-tensor entry {s}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Convert a PyTorch checkpoint to safetensors, keeping every tensor name.")
    p.add_argument("src", help="input .pth / .ckpt / .pt file")
    p.add_argument("dst", help="output .safetensors file")
    p.add_argument("--key", help="dotted path of the state dict inside the checkpoint (default: found automatically)")
    p.add_argument("--dtype", choices=["keep", "f32"], default="keep", help="convert floating tensors to f32 (default: keep)")
    p.add_argument("--strip-prefix", help="remove this prefix from names that start with it (e.g. 'module.')")
    p.add_argument("--unsafe-load", action="store_true", help="torch.load with weights_only=False (trusted files only)")
    p.add_argument("--no-verify", action="store_true", help="skip reading the output back")
    a = p.parse_args(argv)
    try:
        convert(a.src, a.dst, a.key, None if a.dtype == "keep" else a.dtype, a.strip_prefix, a.unsafe_load, not a.no_verify)
    except ConvertError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except ImportError as e:
        print(f"error: {e} (this script needs PyTorch and the safetensors package)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
