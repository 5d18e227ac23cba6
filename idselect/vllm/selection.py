"""TEMPORARY per-image stand-in (replaced by the batched version)."""
from typing import List, Optional, Sequence

import torch

from .. import importance as imp
from ..api import select as id_select


def kept_rows(features: Sequence[torch.Tensor], scores: Sequence[torch.Tensor], keeps: Sequence[int],
              gammas: Sequence[float], candidates: Optional[Sequence[Optional[Sequence[int]]]] = None) -> List[torch.Tensor]:
    out = []
    for i, (f, s, k, g) in enumerate(zip(features, scores, keeps, gammas)):
        T = f.shape[0]
        if k >= T:
            out.append(torch.arange(T, device=f.device))
            continue
        cand = torch.arange(T, device=f.device) if candidates is None or candidates[i] is None else torch.as_tensor(candidates[i], device=f.device)
        if k >= cand.numel():
            out.append(cand)
            continue
        picked = id_select(f[cand].detach(), imp.minmax(s[cand]), k, g, validate=False).sort().values
        out.append(cand[picked])
    return out
