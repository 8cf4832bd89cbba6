"""Log-probabilities from one row of llama.cpp's logits: the softmax's denominator and the top N,
per token, without a sort of the vocabulary."""
from __future__ import annotations

GROUP = 64   # logits per group when the top n are looked for


def log_softmax_top(logits, n: int, work) -> tuple[float, list[int]]:
    """The log of the softmax's denominator, and the ids of the n largest logits, largest first
    (ties: the lower id). Per token: the exponentials in one float32 pass (shifted by the peak only
    where they could overflow or all vanish), and the top n from a few hundred candidates, not
    from a sort of the vocabulary."""
    import numpy as np

    if n:
        cand = _candidates(logits, n)
        vals = logits[cand]
        peak = float(vals.max())
    else:
        peak = float(logits.max())
    if -80.0 < peak < 80.0:
        lse = float(np.log(np.exp(logits, out=work).sum()))
    else:
        np.subtract(logits, peak, out=work)
        lse = peak + float(np.log(np.exp(work, out=work).sum()))
    if not n:
        return lse, []
    if len(cand) > n:   # those at or above the n-th largest (ties kept, for the order below)
        keep = vals >= np.partition(vals, len(cand) - n)[len(cand) - n]
        cand, vals = cand[keep], vals[keep]
    return lse, cand[np.lexsort((cand, -vals))][:n].tolist()


def _candidates(logits, n: int):
    """Ids holding the n largest logits. Group j is j, j + stride, j + 2 stride ... (a max along
    the first axis runs at memory speed, one along rows of 64 does not); no group outside the n
    with the largest maxima holds any of the top n."""
    import numpy as np

    m = len(logits) // GROUP * GROUP
    stride = m // GROUP
    if stride < n:
        return np.arange(len(logits))
    top = logits[:m].reshape(GROUP, stride).max(axis=0)
    groups = np.flatnonzero(top >= np.partition(top, stride - n)[stride - n])
    return np.concatenate(((groups + stride * np.arange(GROUP)[:, None]).ravel(), np.arange(m, len(logits))))
