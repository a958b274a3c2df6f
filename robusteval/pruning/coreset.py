"""Data-free filter/neuron importance from coreset sensitivities, after Tukan, Mualem & Maalouf
(NeurIPS 2022), "Pruning Neural Networks via Coresets and Convex Geometry: Towards No Assumptions".

What is implemented
-------------------
The paper scores each neuron/filter of layer l by its *sensitivity* with respect to the output of
layer l+1 and bounds it with the Löwner ellipsoid and Carathéodory's theorem; nothing depends on
data. Here, with a_c the activation of channel c and z = Σ_c a_c W[:, c] the next layer's output
(a convolution cast as a matrix product: each kernel position (c, u, v) gives one column
W[:, c, u, v]), the points are the next layer's weight columns p_i ∈ R^m scaled by a data-free bound
on their channel's activation, and the sensitivity of p_i is

    s(p_i) = sup_q |p_iᵀq| / Σ_j |p_jᵀq|        (over every query direction q of the output).

Bound (valid for any points, proved in the comments of :func:`point_sensitivities`):
  1. E_t = {x : xᵀG_t x ≤ 1}, the Löwner ellipsoid of the symmetric set ±R_t of remaining points
     (Khachiyan's algorithm; E_t/√r ⊆ conv(±R_t) ⊆ E_t by John's theorem, r = dim span R_t).
  2. Each semi-axis vertex v_k of E_t/√r lies in conv(±R_t); a vertex solution of the linear
     program max α s.t. α v_k ∈ conv(±R_t) is a Carathéodory set S_tk of at most r + 1 points.
  3. For every q: Σ_{S_t} |p_jᵀq| ≥ α_t max_k |v_kᵀq| ≥ α_t |pᵀq| / (r ‖p‖_{G_t}) for p ∈ R_t.
  4. S_t = ∪_k S_tk is removed ("peeled") and the step repeats on the rest, so the disjoint sets
     S_1..S_t all count: s(p) ≤ 1 / Σ_{t' ≤ t(p)} α_t' / (r_t' ‖p‖_{G_t'}).
A filter's importance is the sum of the bounds of its points (its k×k columns, over every layer
that reads it); filters with the smallest importance are removed.

Where we chose
--------------
* Activation bound (the paper's weights of the points): |γ_c| + |β_c| of the BatchNorm that
  follows the filter (|BN(x)| ≤ |γ||x̂| + |β|), else ‖w_c‖₂ + |b_c| (unit-norm inputs).
* Points wider than ``max_dim`` dimensions are projected on their top ``max_dim`` singular
  directions (keeps the linear programs small on 512-channel layers); at most ``max_peels`` peels
  (points left over keep the bound of every peel they took part in, still valid).
* Each Carathéodory program only sees the 2r points most aligned with its axis (largest
  |pᵀG v_k|); this can only lower α, so the bound stays valid, and it is 5-10x faster.
* Bounds are cached per point set, so the ratios of a family share one computation.
* We rank by the bound itself rather than sampling a coreset with probability ∝ s (the paper's
  coreset is a weighted sample; structured removal needs a deterministic, reweighting-free choice).
"""
from __future__ import annotations

import hashlib

import numpy as np
import torch
from scipy.optimize import linprog

from robusteval.pruning.importance import PruneContext
from robusteval.pruning.registry import PRUNING_METHODS
from robusteval.pruning.structured import ChannelGroup, ChannelPruning

MVEE_TOL = 1e-2
_CACHE: dict[tuple[bytes, tuple[int, ...], int, int], np.ndarray] = {}
_CACHE_SIZE = 256


def mvee_symmetric(points: np.ndarray, *, tol: float = MVEE_TOL, max_iter: int = 20000) -> np.ndarray:
    """G of the (near) minimum-volume ellipsoid {x : xᵀGx ≤ 1} enclosing ±points (Khachiyan 1996).

    ``points`` (n × r) must span R^r. Frank-Wolfe on the D-optimal design weights u with
    Sherman-Morrison updates; G is scaled so that every point is inside.
    """
    n, r = points.shape
    u = np.full(n, 1.0 / n)
    minv = np.linalg.inv(points.T @ (points * u[:, None]))
    kappa = np.einsum("ij,jk,ik->i", points, minv, points)
    for it in range(max_iter):
        j = int(np.argmax(kappa))
        if kappa[j] <= r * (1.0 + tol):
            break
        beta = (kappa[j] - r) / (r * (kappa[j] - 1.0))
        c = beta / (1.0 - beta)
        w = minv @ points[j]
        minv = (minv - c * np.outer(w, w) / (1.0 + c * kappa[j])) / (1.0 - beta)
        kappa = (kappa - c * (points @ w) ** 2 / (1.0 + c * kappa[j])) / (1.0 - beta)
        u *= 1.0 - beta
        u[j] += beta
        if it % 500 == 499:  # refresh against round-off drift
            minv = np.linalg.inv(points.T @ (points * u[:, None]))
            kappa = np.einsum("ij,jk,ik->i", points, minv, points)
    return minv / kappa.max()


def caratheodory_scale(points: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray]:
    """Largest α with α·target ∈ conv(±points), and the ≤ r+1 points of a vertex solution."""
    n, r = points.shape
    a_eq = np.zeros((r + 1, 2 * n + 1))
    a_eq[:r, :n], a_eq[:r, n: 2 * n], a_eq[:r, -1] = points.T, -points.T, -target
    a_eq[r, : 2 * n] = 1.0
    b_eq = np.zeros(r + 1)
    b_eq[r] = 1.0
    cost = np.zeros(2 * n + 1)
    cost[-1] = -1.0
    res = linprog(cost, A_eq=a_eq, b_eq=b_eq, bounds=(0, None), method="highs-ds")
    if res.status != 0:
        return 0.0, np.zeros(0, dtype=int)
    lam = res.x[: 2 * n]
    support = np.flatnonzero((lam[:n] > 1e-12) | (lam[n:] > 1e-12))
    return float(res.x[-1]), support


def _span_coordinates(points: np.ndarray, max_dim: int) -> np.ndarray:
    """Coordinates of the points in their top-``max_dim`` principal (uncentred) directions."""
    evals, evecs = np.linalg.eigh(points.T @ points)  # ascending; cheaper than an SVD of tall P
    top = evals[-1] if evals.size else 0.0
    rank = int((evals > top * 1e-12).sum()) if top > 0 else 0
    return points @ evecs[:, ::-1][:, : min(rank, max_dim)]


def point_sensitivities(points: np.ndarray, *, max_dim: int = 32, max_peels: int = 4) -> np.ndarray:
    """Upper bounds on s(p_i) = sup_q |p_iᵀq| / Σ_j |p_jᵀq| by Löwner-ellipsoid + Carathéodory peeling.

    Bounds above 1 carry no more than the trivial bound but still rank the points. Zero points
    get 0; when the points are linearly independent every one of them is needed (bound 1).
    """
    points = np.ascontiguousarray(points, dtype=np.float64)
    key = (hashlib.sha1(points.tobytes()).digest(), points.shape, max_dim, max_peels)
    if key not in _CACHE:
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = _peel_bounds(points, max_dim, max_peels)
    return _CACHE[key].copy()


def _peel_bounds(points: np.ndarray, max_dim: int, max_peels: int) -> np.ndarray:
    coords = _span_coordinates(points, max_dim)
    alive = np.flatnonzero(np.linalg.norm(coords, axis=1) > 0)
    acc = np.zeros(len(points))  # Σ_t α_t / (r_t ‖p‖_{G_t})
    for _ in range(max_peels):
        own = _span_coordinates(coords[alive], max_dim) if len(alive) else coords[alive]
        r = own.shape[1]
        if len(alive) <= r or r == 0:
            break
        g = mvee_symmetric(own)
        norms = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", own, g, own), 1e-300))
        evals, evecs = np.linalg.eigh(g)
        alpha, peeled = np.inf, set()
        for k in range(r):
            vertex = evecs[:, k] / np.sqrt(evals[k] * r)
            near = np.argsort(-np.abs(own @ (g @ vertex)), kind="stable")[: 2 * r]
            a, support = caratheodory_scale(own[near], vertex)
            alpha = min(alpha, a)
            peeled.update(near[support].tolist())
        acc[alive] += alpha / (r * norms)
        alive = np.delete(alive, sorted(peeled))
    bound = np.zeros(len(points))
    nonzero = np.linalg.norm(points, axis=1) > 0
    bound[nonzero] = 1.0
    bound[acc > 0] = 1.0 / acc[acc > 0]
    return bound


def activation_bound(group: ChannelGroup) -> torch.Tensor:
    """Data-free bound on each output channel's activation magnitude (see "Where we chose")."""
    if group.bn is not None and group.bn.weight is not None:
        return group.bn.weight.detach().abs() + group.bn.bias.detach().abs()
    w = group.producer.weight.detach().flatten(1).norm(dim=1)
    bias = group.producer.bias
    return w if bias is None else w + bias.detach().abs()


def channel_points(group: ChannelGroup, consumer: torch.nn.Module, idxs: list[int],
                   roots: list[int]) -> tuple[np.ndarray, torch.Tensor]:
    """The points of one reader of ``group``: its weight columns (one per input index and kernel position)
    scaled by their channel's activation bound, and the channel each point belongs to."""
    scale = activation_bound(group).cpu().double()  # MPS has no float64: CPU first
    w = consumer.weight.detach().cpu().double()[:, idxs]  # (m, len(idxs), *kernel)
    per_index = int(np.prod(w.shape[2:])) if w.dim() > 2 else 1
    cols = w.reshape(w.shape[0], len(idxs), per_index).permute(1, 2, 0)  # (index, position, m)
    owner = torch.as_tensor(roots)
    pts = (cols * scale[owner][:, None, None]).reshape(-1, w.shape[0])
    return pts.numpy(), owner.repeat_interleave(per_index)


def coreset_importance(group: ChannelGroup, ctx: PruneContext) -> torch.Tensor:
    """Sum of the sensitivity bounds of each channel's columns in every layer that reads it."""
    importance = torch.zeros(group.channels, dtype=torch.float64)
    for consumer, idxs, roots in group.consumers:
        pts, owner = channel_points(group, consumer, idxs, roots)
        sens = torch.from_numpy(point_sensitivities(pts, max_dim=ctx.settings.coreset_max_dim))
        importance.index_add_(0, owner, sens)
    return importance.float()


PRUNING_METHODS.add("coreset_filter", ChannelPruning(
    coreset_importance, reference="Tukan et al. 2022, Pruning neural networks via coresets and convex geometry"))
