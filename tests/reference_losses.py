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


# ---- task losses (PaddleSeg's formulas, from their docstrings and papers) -------------------------------------


def softmax_channels(x):
    """Softmax over axis 1 of an N x C x H x W array."""
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def one_hot(label, c):
    """N x H x W ids (ignored ones anywhere) -> N x C x H x W, zero where the id is not in [0, C)."""
    return np.stack([(label == k).astype(np.float64) for k in range(c)], axis=1)


def ohem_ref(logits, label, ignore_index=255, thresh=0.7, min_kept=10000):
    """Mean CE over the hard pixels: probability of the true class below max(thresh, min_kept-th smallest)."""
    p = softmax_channels(logits.astype(np.float64))
    lab = label.reshape(-1)
    probs = np.transpose(p, (0, 2, 3, 1)).reshape(-1, p.shape[1])
    valid = lab != ignore_index
    p_true = np.where(valid, probs[np.arange(lab.size), np.where(valid, lab, 0)], np.nan)
    kept = valid.copy()
    if 0 < valid.sum() and min_kept < valid.sum():
        t = thresh
        if min_kept > 0:
            t = max(t, np.sort(p_true[valid])[min_kept - 1])
        kept = valid & (np.nan_to_num(p_true, nan=2.0) < t)
    ce = -np.log(np.where(kept, p_true, 1.0))
    return ce.sum() / lab.size / (kept.mean() + 1e-5)


def dice_ref(logits, label, ignore_index=255, weight=None, smooth=1.0):
    """(1/C) sum_c w_c mean_n [1 - (2 sum p*y + s) / (sum p + sum y + s + 1e-8)] over non-ignored pixels."""
    n, c = logits.shape[:2]
    p = softmax_channels(logits.astype(np.float64))
    mask = (label != ignore_index)[:, None].astype(np.float64)
    y = one_hot(np.where(label == ignore_index, 0, label), c)
    total = 0.0
    for k in range(c):
        pk, yk = (p[:, k : k + 1] * mask).reshape(n, -1), (y[:, k : k + 1] * mask).reshape(n, -1)
        d = 1 - (2 * (pk * yk).sum(1) + smooth) / ((pk + yk).sum(1) + smooth + 1e-8)
        total += d.mean() * (1.0 if weight is None else weight[k])
    return total / c


def bce_ref(logits, label, ignore_index=255, weight=None, pos_weight=None):
    """Binary CE with logits against one-hot labels, masked, mean / (mask mean + 1e-10); 'dynamic' weights."""
    x = logits.astype(np.float64)
    c = x.shape[1]
    mask = (label != ignore_index)[:, None].astype(np.float64)
    lab = np.where(label == ignore_index, 0, label)
    y = lab[:, None].astype(np.float64) if c == 1 else one_hot(lab, c)
    pos, neg = (y == 1).sum(), (y == 0).sum()
    w = 1.0
    if weight == "dynamic":
        w = 2 * neg / (pos + neg + 1e-10) * y + 2 * pos / (pos + neg + 1e-10) * (1 - y)
    pw = 2 * neg / (pos + neg + 1e-10) if pos_weight == "dynamic" else pos_weight
    log_sig, log_one_minus = -np.logaddexp(0, -x), -np.logaddexp(0, x)
    elem = -(y * log_sig * (1.0 if pw is None else pw) + (1 - y) * log_one_minus) * w
    return (elem * mask).mean() / (mask.mean() + 1e-10)


def lovasz_softmax_ref(logits, label, ignore_index=255, classes="present"):
    """Berman et al. 2018, Alg. 1: per class, errors |y - p| sorted descending, dotted with the Jaccard gradient."""
    c = logits.shape[1]
    p = np.transpose(softmax_channels(logits.astype(np.float64)), (0, 2, 3, 1)).reshape(-1, c)
    lab = label.reshape(-1)
    p, lab = p[lab != ignore_index], lab[lab != ignore_index]
    losses = []
    for k in range(c) if classes in ("all", "present") else classes:
        fg = (lab == k).astype(np.float64)
        if classes == "present" and fg.sum() == 0:
            continue
        err = np.abs(fg - p[:, k])
        order = np.argsort(-err, kind="stable")
        fg_sorted = fg[order]
        gts = fg_sorted.sum()
        jaccard = 1 - (gts - np.cumsum(fg_sorted)) / (gts + np.cumsum(1 - fg_sorted))
        jaccard[1:] = jaccard[1:] - jaccard[:-1]
        losses.append(float(err[order] @ jaccard))
    return float(np.mean(losses))


def _laplacian(label, stride):
    """3x3 Laplacian [-1 x8, 8 centre] of a float N x H x W map, zero padding 1, at `stride`."""
    n, h, w = label.shape
    pad = np.pad(label, ((0, 0), (1, 1), (1, 1)))
    out_h, out_w = (h - 1) // stride + 1, (w - 1) // stride + 1
    out = np.zeros((n, out_h, out_w))
    for i in range(out_h):
        for j in range(out_w):
            win = pad[:, i * stride : i * stride + 3, j * stride : j * stride + 3]
            out[:, i, j] = 9 * win[:, 1, 1] - win.sum(axis=(1, 2))
    return out


def detail_aggregate_ref(logits, label, fuse_kernel):
    """STDC's detail loss: boundary targets from Laplacians at strides 1, 2, 4 (nearest upsampled, > 0.1),
    fused by the 1x1 `fuse_kernel` (3 weights) and thresholded at 0.1; BCE with logits + (1 - Dice(sigmoid))."""
    lab = label.astype(np.float64)
    h, w = lab.shape[1:]
    maps = []
    for s in (1, 2, 4):
        m = np.clip(_laplacian(lab, s), 0, None)
        if s > 1:
            m = nearest_resize(m, h, w)
        maps.append((m > 0.1).astype(np.float64))
    fused = sum(k * m for k, m in zip(fuse_kernel, maps))
    target = (fused > 0.1).astype(np.float64)[:, None]
    x = logits.astype(np.float64)
    bce = np.mean(np.logaddexp(0, x) - x * target)
    sig = 1 / (1 + np.exp(-x))
    n = x.shape[0]
    inter = (sig * target).reshape(n, -1).sum(1)
    dice = 1 - (2 * inter + 1) / (sig.reshape(n, -1).sum(1) + target.reshape(n, -1).sum(1) + 1)
    return bce + dice.mean()


# ---- the field's methods (docs/methods.md), written from the formulas in the losses' docstrings ----------------


def standardize(z):
    """Per pixel (axis 1), (z - mean) / (sample std + 1e-7)."""
    mean = z.mean(axis=1, keepdims=True)
    std = np.sqrt(((z - mean) ** 2).sum(axis=1, keepdims=True) / (z.shape[1] - 1))
    return (z - mean) / (std + 1e-7)


def pearson(x, y):
    """Pearson correlation of two 1-D vectors, 1e-8 added to the product of the centred norms."""
    x, y = x - x.mean(), y - y.mean()
    return float(x @ y / (np.sqrt(x @ x) * np.sqrt(y @ y) + 1e-8))


def dist_ref(s, t, beta=1.0, gamma=1.0, temperature=1.0):
    """tau^2 (beta (1 - mean_i pearson(rows)) + gamma (1 - mean_c pearson(columns))), rows = pixels."""
    n, c, h, w = s.shape
    tau = float(temperature)
    p_s = np.array([softmax(s[a, :, i, j] / tau) for a in range(n) for i in range(h) for j in range(w)])
    p_t = np.array([softmax(t[a, :, i, j] / tau) for a in range(n) for i in range(h) for j in range(w)])
    inter = 1 - np.mean([pearson(p_s[r], p_t[r]) for r in range(p_s.shape[0])])
    intra = 1 - np.mean([pearson(p_s[:, k], p_t[:, k]) for k in range(c)])
    return tau * tau * (beta * inter + gamma * intra)


def max_pool_ceil(f, k):
    """N x C x H x W -> N x C x ceil(H/k) x ceil(W/k), each output the max of its (possibly cut) k x k window."""
    n, c, h, w = f.shape
    oh, ow = -(-h // k), -(-w // k)
    out = np.empty((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            out[:, :, i, j] = f[:, :, i * k : (i + 1) * k, j * k : (j + 1) * k].max(axis=(2, 3))
    return out


def skd_pairwise_ref(s, t, pool=2):
    """Mean over N * HW' * HW' of (A_S - A_T)^2, A = F^T F of max-pooled, (|v| + 1e-8)-normalised pixels."""

    def affinity(f):
        f = max_pool_ceil(f, pool) if pool > 1 else f
        n, c = f.shape[:2]
        out = []
        for a in range(n):
            vecs = f[a].reshape(c, -1).T  # HW' x C
            vecs = vecs / (np.sqrt((vecs**2).sum(axis=1, keepdims=True)) + 1e-8)
            out.append(vecs @ vecs.T)
        return np.array(out)

    return float(np.mean((affinity(s) - affinity(t)) ** 2))


def cirkd_pixel_ref(s, t, temperature=0.1, pool=1):
    """1/N^2 sum_(i,j) 1/HW sum_rows KL(softmax(T_ij[m]/tau) || softmax(S_ij[m]/tau)), unit-norm pixels."""

    def units(f):
        f = max_pool_ceil(f, pool) if pool > 1 else f
        n, c = f.shape[:2]
        vecs = f.reshape(n, c, -1).transpose(0, 2, 1)  # N x HW x C
        return vecs / np.maximum(np.sqrt((vecs**2).sum(axis=2, keepdims=True)), 1e-12)

    u_s, u_t = units(s), units(t)
    n, hw = u_s.shape[:2]
    total = 0.0
    for i in range(n):
        for j in range(n):
            sim_s, sim_t = u_s[i] @ u_s[j].T, u_t[i] @ u_t[j].T
            total += sum(kl(softmax(sim_t[m] / temperature), softmax(sim_s[m] / temperature)) for m in range(hw)) / hw
    return total / (n * n)


def ifvd_ref(s, t, label, ignore_index=255):
    """Mean over non-ignored pixels of (cos_S - cos_T)^2, cos to the pixel's class prototype of its own image."""
    n, _, h, w = s.shape
    label = _label3(label)
    if label.shape[1:] != (h, w):
        label = nearest_resize(label, h, w)

    def cosines(f):
        out = {}
        for a in range(n):
            for k in set(label[a].ravel().tolist()) - {ignore_index}:
                where = label[a] == k
                proto = f[a][:, where].sum(axis=1) / (where.sum() + 1e-6)
                for i, j in zip(*np.nonzero(where)):
                    v = f[a, :, i, j]
                    out[a, i, j] = v @ proto / max(np.sqrt(v @ v) * np.sqrt(proto @ proto), 1e-8)
        return out

    cs, ct = cosines(s), cosines(t)
    return float(np.mean([(cs[p] - ct[p]) ** 2 for p in cs])) if cs else 0.0


def conv3x3(x, weight, bias):
    """N x Cin x H x W, weight Cout x Cin x 3 x 3 -> N x Cout x H x W (zero padding 1, stride 1)."""
    n, _, h, w = x.shape
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    out = np.zeros((n, weight.shape[0], h, w))
    for di in range(3):
        for dj in range(3):
            out += np.einsum("ncij,oc->noij", padded[:, :, di : di + h, dj : dj + w], weight[:, :, di, dj])
    return out + bias[None, :, None, None]


def mgd_mask_ref(keys, h, w, lambda_mask):
    """0 where u > 1 - lambda, u = default_rng(key).random((H, W)) per image."""
    return np.array(
        [(np.random.default_rng(list(k)).random((h, w)) <= 1 - lambda_mask) for k in keys], dtype=np.float64
    )[:, None]


def mgd_ref(s, t, params, keys, alpha=2e-5, lambda_mask=0.75):
    """alpha * sum (T - G(S * M))^2 / N, G = conv3x3 -> ReLU -> conv3x3 with params (w1, b1, w2, b2)."""
    w1, b1, w2, b2 = params
    masked = s * mgd_mask_ref(keys, s.shape[2], s.shape[3], lambda_mask)
    rebuilt = conv3x3(np.maximum(conv3x3(masked, w1, b1), 0), w2, b2)
    return alpha * float(((rebuilt - t) ** 2).sum()) / s.shape[0]
