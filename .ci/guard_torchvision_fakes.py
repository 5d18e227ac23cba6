"""Let torchvision's pure-PyTorch parts import beside a CPU torch (the vLLM CI venv only).

The registry's torchvision is a CUDA build: its compiled ops do not load with the CPU torch
wheel, and torchvision/_meta_registrations.py then fails at import, registering fake kernels
for `torchvision::nms` and `::qnms` without checking that the ops exist ("operator
torchvision::nms does not exist"). vLLM's LLaVA imports transformers' pixtral image
processing, which imports torchvision.transforms.v2. This guards those two registrations
the way the file guards its others (`torchvision.extension._has_ops()`); idempotent.
A GPU user's matching torch/torchvision pair needs none of this.
"""
import importlib.util
import pathlib
import sys

GUARD = "(lambda fn: fn) if not torchvision.extension._has_ops() else "

spec = importlib.util.find_spec("torchvision")
if spec is None or spec.origin is None:
    sys.exit("torchvision is not installed")
path = pathlib.Path(spec.origin).parent / "_meta_registrations.py"
source = path.read_text()
changed = 0
for op in ("nms", "qnms"):
    plain = f'@torch.library.register_fake("torchvision::{op}")'
    guarded = f'@({GUARD}torch.library.register_fake("torchvision::{op}"))'
    if guarded in source:
        continue
    if plain not in source:
        sys.exit(f"{path}: no `{plain}` to guard; this torchvision differs from the one the script was written for")
    source = source.replace(plain, guarded)
    changed += 1
path.write_text(source)
print(f"{path}: {changed} registration(s) guarded")
