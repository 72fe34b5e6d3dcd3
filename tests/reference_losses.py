"""Independent float64 numpy versions of the losses, written from the formulas (not from the paddle code).

They favour obviousness over speed: explicit loops over the axes a distribution lives on.
"""

import numpy as np


def softmax(x):
    """Softmax of a 1-D vector."""
    e = np.exp(x - x.max())
    return e / e.sum()


def kl(p, q):
    """KL(p || q) = sum_i p_i log(p_i / q_i) of two 1-D distributions."""
    return float(np.sum(p * np.log(p / q)))


def nearest_resize(label, out_h, out_w):
    """N x H x W -> N x out_h x out_w, output (i, j) takes input (floor(i*H/out_h), floor(j*W/out_w))."""
    n, h, w = label.shape
    out = np.empty((n, out_h, out_w), dtype=label.dtype)
    for i in range(out_h):
        for j in range(out_w):
            out[:, i, j] = label[:, (i * h) // out_h, (j * w) // out_w]
    return out


def _label3(label):
    label = np.asarray(label)
    return label[:, 0] if label.ndim == 4 else label


def kl_ref(s, t, label=None, ignore_index=255, temperature=1.0):
    """PaddleSeg KLLoss: T^2 * KL(softmax(t/T) || softmax(s/T)) per pixel over channels.

    Without label: mean over the N*C*H*W elements = (sum of per-pixel KL) / (N*C*H*W).
    With label: (sum over kept pixels of per-pixel KL) / (N*C*H*W), divided by (kept / (N*H*W) + 1e-8).
    """
    n, c, h, w = s.shape
    T = float(temperature)
    if label is not None:
        label = _label3(label)
        if label.shape[1:] != (h, w):
            label = nearest_resize(label, h, w)
    total = 0.0
    kept = 0
    for a in range(n):
        for i in range(h):
            for j in range(w):
                if label is not None and label[a, i, j] == ignore_index:
                    continue
                kept += 1
                total += T * T * kl(softmax(t[a, :, i, j] / T), softmax(s[a, :, i, j] / T))
    mean_elem = total / (n * c * h * w)
    if label is None:
        return mean_elem
    return mean_elem / (kept / (n * h * w) + 1e-8)


def cwd_ref(s, t, temperature=1.0):
    """Shu et al.: tau^2 / (N*C) * sum over (n, c) of KL(softmax(t[n,c]/tau) || softmax(s[n,c]/tau)) over H*W."""
    n, c, _, _ = s.shape
    tau = float(temperature)
    total = 0.0
    for a in range(n):
        for b in range(c):
            total += kl(softmax(t[a, b].ravel() / tau), softmax(s[a, b].ravel() / tau))
    return tau * tau * total / (n * c)


def channelwise_legacy_ref(s, t):
    """Old PaddleSlim SegChannelwiseLoss: mean over N*C*H*W of p_T (log p_T - log p_S), softmax over W rows."""
    n, c, h, w = s.shape
    total = 0.0
    for a in range(n):
        for b in range(c):
            for i in range(h):
                total += kl(softmax(t[a, b, i]), softmax(s[a, b, i]))
    return total / (n * c * h * w)


def mse_ref(s, t):
    return float(np.sum((s - t) ** 2) / s.size)


def ce_ref(logits, label, ignore_index=255, weight=None):
    """sum over kept pixels of w[y] * (-log softmax(x)[y]) / sum of w[y]; 0 when nothing is kept."""
    n, c, h, w = logits.shape
    label = _label3(label)
    wts = np.ones(c) if weight is None else np.asarray(weight, dtype=np.float64)
    num = 0.0
    den = 0.0
    for a in range(n):
        for i in range(h):
            for j in range(w):
                y = int(label[a, i, j])
                if y == ignore_index:
                    continue
                p = softmax(logits[a, :, i, j])
                num += wts[y] * -np.log(p[y])
                den += wts[y]
    return num / den if den > 0 else 0.0


def ce_options_ref(logits, label, ignore_index=255, weight=None, avg_non_ignore=True, top_k=1.0):
    """PaddleSeg 2.8 CrossEntropyLoss's reductions, written from its documented formula:
    l = w[y] * nll per pixel (0 where ignored); avg_non_ignore: sum(l) / sum(w[y] kept); else mean(l) over
    all pixels; top_k < 1: the k = int(top_k * pixels) largest l, divided by the mean of w[y'] at those pixels
    (y' = y, or 0 where ignored, as PaddleSeg's label * mask)."""
    n, c, h, w = logits.shape
    label = _label3(label)
    wts = np.ones(c) if weight is None else np.asarray(weight, dtype=np.float64)
    losses, coefs, kept = [], [], []
    for a in range(n):
        for i in range(h):
            for j in range(w):
                y = int(label[a, i, j])
                keep = y != ignore_index
                yy = y if keep else 0
                p = softmax(logits[a, :, i, j])
                losses.append(wts[yy] * -np.log(p[yy]) if keep else 0.0)
                coefs.append(wts[yy])
                kept.append(wts[yy] if keep else 0.0)
    losses, coefs = np.array(losses), np.array(coefs)
    if top_k < 1.0:
        k = max(1, int(top_k * losses.size))
        order = np.argsort(-losses, kind="stable")[:k]
        return float(losses[order].mean() / (coefs[order].mean() + 1e-8))
    if not avg_non_ignore:
        return float(losses.mean())
    return float(losses.sum() / sum(kept)) if sum(kept) > 0 else 0.0


def numeric_grad(f, x, eps=1e-6):
    """Central finite differences of the scalar function f at x (float64)."""
    x = np.array(x, dtype=np.float64)
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        old = x[idx]
        x[idx] = old + eps
        up = f(x)
        x[idx] = old - eps
        down = f(x)
        x[idx] = old
        g[idx] = (up - down) / (2 * eps)
    return g
