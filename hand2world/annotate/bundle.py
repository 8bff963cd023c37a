"""Bundle adjustment of a monocular camera trajectory over long feature tracks (the odometry's refinement).

Why: pairwise relative poses over the short baselines of head motion (a few millimetres between
frames, scene at ~0.5 m) confuse a small rotation with a sideways translation (the classic
rotation/translation ambiguity of the essential matrix under a narrow field of view); chaining
them accumulates degrees of rotation error per second. Jointly fitting every frame's pose and every
tracked point to all their observations uses the whole track length (tens of frames) as baseline
and the scene's depth variation to separate the two.

Design choices:
- Unknowns: world-to-camera pose per frame (frame 0 fixed to identity: the gauge), each
  point as world XYZ (one residual block touches one pose and one point, so the normal matrix
  stays sparse; solved with a sparse LU, no Schur complement needed at these sizes).
- Residual: reprojection error in pixels (``K`` of the tracked frames), Huber-weighted (IRLS,
  ``huber_px``); Levenberg-Marquardt with multiplicative damping on the diagonal; rotation
  updates as left perturbations ``R <- exp(d) R`` re-linearised every iteration (exact Jacobians).
- Scale: a monocular reconstruction has one free scale; after every step poses and points are
  rescaled so the points' median depth (in their first observing camera) stays ``depth``, which
  leaves every residual unchanged. Points without parallax (pure rotation) keep the depth they
  were given, held by the damping.
- Motion prior (optional, ``step_sigma``, ``turn_sigma_deg``; the odometry sets them per frame from
  per-second values): Gaussian residuals on each camera-centre step ``c_f - c_(f-1)`` and on each change
  of the frame-to-frame rotation, added to the pose block of the normal equations and to every cost
  (also ``trajectory_cost``, so the multi-start compares solutions under the same prior).
- Outliers (points on undetected hands, their shadows, moved objects, occlusion T-junctions that
  slide with parallax): after a first solve, observations above ``outlier_px`` are dropped,
  tracks left shorter than ``min_track`` go entirely, and the problem is solved again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np
import scipy.sparse as sp

log = logging.getLogger(__name__)

__all__ = ["BundleConfig", "bundle_adjust", "incremental_bundle", "trajectory_cost",
           "triangulate_tracks"]


@dataclass(frozen=True)
class BundleConfig:
    """Settings of the trajectory bundle adjustment."""

    min_track: int = 3  # observations a point needs to enter the adjustment
    loss_px: float = 0.7  # scale of the Cauchy loss on the reprojection residual (pixels of the tracked frames)
    outlier_px: float = 2.0  # observations above this after a solve are dropped ...
    track_px: float = 1.0  # ... and whole tracks whose median residual is above this
    iterations: int = 12  # Levenberg-Marquardt iterations per solve
    rounds: int = 3  # solve, drop outliers, solve again (rounds - 1 times)
    lm_init: float = 1e-3  # initial damping (relative to the diagonal)
    init_frames: int = 8  # incremental solve: the first block of frames (seeded by the chained poses) ...
    grow: int = 8  # ... then this many frames at a time, each started from PnP ...
    window: int = 40  # ... re-adjusting the last this many frames (older ones fixed)
    grow_rounds: int = 1  # rounds and iterations of the intermediate solves
    grow_iterations: int = 6
    min_pnp: int = 12  # points a frame needs for PnP (else it starts from the previous frame's pose)
    step_sigma: float = 0.0  # motion prior (Gaussian): camera-centre step between consecutive frames, in
    # units of the scene depth per frame ...
    turn_sigma_deg: float = 0.0  # ... and change of the frame-to-frame rotation, degrees per frame^2 (0: off)


def _skew(v: np.ndarray) -> np.ndarray:
    """``[N, 3] -> [N, 3, 3]`` cross-product matrices."""
    z = np.zeros(len(v))
    return np.stack([np.stack([z, -v[:, 2], v[:, 1]], 1), np.stack([v[:, 2], z, -v[:, 0]], 1),
                     np.stack([-v[:, 1], v[:, 0], z], 1)], 1)


def _exp(w: np.ndarray) -> np.ndarray:
    """Rotation vectors ``[N, 3]`` -> matrices ``[N, 3, 3]`` (Rodrigues)."""
    th = np.linalg.norm(w, axis=1)[:, None, None]
    K = _skew(w / np.maximum(th[:, :, 0], 1e-12))
    return np.eye(3) + np.sin(th) * K + (1 - np.cos(th)) * (K @ K)


def triangulate_tracks(R: np.ndarray, t: np.ndarray, bearings: np.ndarray, frames: np.ndarray, point: np.ndarray,
                       n_points: int, depth: float) -> np.ndarray:
    """Initial world points ``[P, 3]``: linear least squares over all of a track's rays (midpoint method).

    Args:
        R, t: world-to-camera ``[F, 3, 3]``, ``[F, 3]``.
        bearings: ``[N, 3]`` ``K^-1 [u, v, 1]`` per observation; ``frames``, ``point``: ``[N]`` indices.
        depth: fallback depth along the first ray where the rays are near parallel or the result lies behind.
    """
    c = -np.einsum("nji,nj->ni", R[frames], t[frames])  # camera centres
    d = np.einsum("nji,nj->ni", R[frames], bearings)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    proj = np.eye(3) - d[:, :, None] * d[:, None, :]  # [N, 3, 3]
    A = np.zeros((n_points, 3, 3))
    b = np.zeros((n_points, 3))
    np.add.at(A, point, proj)
    np.add.at(b, point, np.einsum("nij,nj->ni", proj, c))
    first = np.full(n_points, -1)
    order = np.argsort(frames, kind="stable")
    first[point[order][::-1]] = order[::-1]  # first observation of each point (smallest frame)
    c0, d0 = c[first], d[first]
    X = c0 + depth * d0
    ev = np.linalg.eigvalsh(A)
    good = ev[:, 0] > 1e-4 * np.maximum(ev[:, -1], 1e-12)  # ~0.6 degrees of ray spread
    if good.any():
        Xg = np.linalg.solve(A[good] + 1e-9 * np.eye(3), b[good][..., None])[..., 0]
        z = np.einsum("ni,ni->n", Xg - c0[good], d0[good])
        ok = (z > 0.1 * depth) & (z < 20 * depth)
        idx = np.flatnonzero(good)[ok]
        X[idx] = Xg[ok]
    return X


def _residuals(R: np.ndarray, t: np.ndarray, X: np.ndarray, K: np.ndarray, frames: np.ndarray, point: np.ndarray,
               uv: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(r [N, 2], camera points [N, 3], valid [N])`` of the observations."""
    P = np.einsum("nij,nj->ni", R[frames], X[point]) + t[frames]
    z = P[:, 2]
    valid = z > 1e-6
    zs = np.where(valid, z, 1.0)
    proj = np.stack([K[0, 0] * P[:, 0] / zs + K[0, 2], K[1, 1] * P[:, 1] / zs + K[1, 2]], 1)
    return proj - uv, P, valid


def _cost(r: np.ndarray, valid: np.ndarray, keep: np.ndarray, scale: float) -> float:
    """Cauchy cost of the kept observations; an invalid one (behind its camera) counts as a far outlier."""
    e = np.linalg.norm(r, axis=1)[valid & keep]
    return float(np.sum(0.5 * scale ** 2 * np.log1p((e / scale) ** 2)) + scale ** 2 * 5 * np.sum(~valid & keep))


def _centres(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Camera centres ``[F, 3]`` of world-to-camera poses (``c = -R^T t``)."""
    return -np.einsum("fji,fj->fi", R, t)


def _log(R: np.ndarray) -> np.ndarray:
    """Rotation matrices ``[N, 3, 3]`` -> rotation vectors ``[N, 3]`` (angles below pi)."""
    cos = np.clip((np.trace(R, axis1=1, axis2=2) - 1) / 2, -1.0, 1.0)
    th = np.arccos(cos)
    v = np.stack([R[:, 2, 1] - R[:, 1, 2], R[:, 0, 2] - R[:, 2, 0], R[:, 1, 0] - R[:, 0, 1]], 1)
    return v * np.where(th > 1e-8, th / (2 * np.sin(np.maximum(th, 1e-8))), 0.5)[:, None]


def _motion_terms(R: np.ndarray, t: np.ndarray, step: float, turn: float) -> list[tuple[np.ndarray, ...]]:
    """The motion prior's residuals in groups ``(r [M, 3], frames [M, k], J [M, k, 3, 6])``: residual ``m``
    depends on the poses ``frames[m]`` through ``J[m] = dr / d(pose)``.

    ``step``: camera-centre step ``(c_f - c_(f-1)) / step``; with the update ``R <- exp(d) R, t <- t + dt``
    the centre moves by ``-R^T [t]x d - R^T dt``. ``turn``: change of the frame-to-frame rotation
    ``(w_(f+1) - w_f) / turn`` with ``w_f = log(R_f R_(f-1)^T)``, which moves by ``d_f - Q_f d_(f-1)``
    (``Q_f = R_f R_(f-1)^T``; the log's Jacobian taken as identity: the steps are small). 0 disables a term.
    """
    terms: list[tuple[np.ndarray, ...]] = []
    F = len(R)
    if step > 0 and F >= 2:
        Rt = R.transpose(0, 2, 1)
        J = np.concatenate([-Rt @ _skew(t), -Rt], axis=2) / step  # [F, 3, 6]: d c_f / d(pose f)
        f = np.arange(1, F)
        terms.append((np.diff(_centres(R, t), axis=0) / step, np.stack([f, f - 1], 1),
                      np.stack([J[1:], -J[:-1]], 1)))
    if turn > 0 and F >= 3:
        Q = R[1:] @ R[:-1].transpose(0, 2, 1)  # Q[f - 1] = R_f R_(f-1)^T
        w = _log(Q)
        f = np.arange(1, F - 1)
        J = np.zeros((F - 2, 3, 3, 6))
        J[:, 0, :, :3] = np.eye(3)
        J[:, 1, :, :3] = -Q[1:] - np.eye(3)
        J[:, 2, :, :3] = Q[:-1]
        terms.append((np.diff(w, axis=0) / turn, np.stack([f + 1, f, f - 1], 1), J / turn))
    return terms


def _motion_cost(R: np.ndarray, t: np.ndarray, step: float, turn: float) -> float:
    """The motion prior's cost ``0.5 sum |r|^2`` (``_motion_terms``)."""
    return float(sum(0.5 * np.sum(r * r) for r, _, _ in _motion_terms(R, t, step, turn)))


def _add_motion_prior(U: np.ndarray, g: np.ndarray, R: np.ndarray, t: np.ndarray, free: np.ndarray,
                      step: float, turn: float) -> None:
    """Add the motion prior's Gauss-Newton terms to the pose block ``U [6n, 6n]`` and gradient ``g [6n]``
    (in place; the ``n`` free frames in frame order, as ``bundle_adjust`` lays them out; frames not ``free``
    contribute nothing)."""
    F = len(R)
    blocks, grad = np.zeros((F, F, 6, 6)), np.zeros((F, 6))
    for r, frames, J in _motion_terms(R, t, step, turn):
        np.add.at(grad, frames, np.einsum("mkij,mi->mkj", J, r))
        np.add.at(blocks, (frames[:, :, None], frames[:, None, :]), np.einsum("maij,mbik->mabjk", J, J))
    idx = np.flatnonzero(free)
    g += grad[idx].ravel()
    U += blocks[np.ix_(idx, idx)].transpose(0, 2, 1, 3).reshape(6 * len(idx), 6 * len(idx))


def _prior_scales(config: BundleConfig, depth: float) -> tuple[float, float]:
    """``(step, turn)`` of the motion prior in the solve's units: scene depths -> its length, degrees -> radians."""
    return config.step_sigma * depth, float(np.radians(config.turn_sigma_deg))


def _objective(r: np.ndarray, valid: np.ndarray, keep: np.ndarray, R: np.ndarray, t: np.ndarray,
               config: BundleConfig, prior: tuple[float, float]) -> float:
    """What the adjustment minimises: the robust reprojection cost plus the motion prior's."""
    return _cost(r, valid, keep, config.loss_px) + _motion_cost(R, t, *prior)


def _weights(e: np.ndarray, scale: float) -> np.ndarray:
    """IRLS weights of the Cauchy loss for residual norms ``e``."""
    return 1.0 / (1.0 + (e / scale) ** 2)


def _prune(r: np.ndarray, valid: np.ndarray, keep: np.ndarray, point: np.ndarray, n_points: int,
           config: BundleConfig) -> np.ndarray:
    """Drop observations above ``outlier_px``, then whole tracks whose median residual exceeds ``track_px``
    (a drifting track or a point that moves) or that are left shorter than ``min_track``."""
    e = np.linalg.norm(r, axis=1)
    keep = keep & valid
    med = np.full(n_points, np.inf)
    order = np.lexsort((e, point))
    pts, first = np.unique(point[order][keep[order]], return_index=True)
    if pts.size:
        kept = order[keep[order]]
        counts = np.diff(np.r_[first, kept.size])
        med[pts] = e[kept[first + counts // 2]]
    keep &= (e < config.outlier_px) & (med[point] < config.track_px)
    cnt = np.bincount(point[keep], minlength=n_points)
    return keep & (cnt[point] >= config.min_track)


def bundle_adjust(R: np.ndarray, t: np.ndarray, K: np.ndarray, frames: np.ndarray, point: np.ndarray,
                  uv: np.ndarray, depth: float, config: BundleConfig = BundleConfig(), free: np.ndarray | None = None,
                  X: np.ndarray | None = None, rounds: int | None = None, iterations: int | None = None) -> dict:
    """Refine world-to-camera poses and points to the tracked observations (see module docstring).

    Args:
        R, t: initial world-to-camera rotations ``[F, 3, 3]`` and translations ``[F, 3]``.
        K: ``[3, 3]`` intrinsics of the tracked pixel coordinates (pixel centres at ``i + 0.5``).
        frames, point: ``[N]`` frame and point index of each observation; ``uv`` ``[N, 2]`` its pixels.
        depth: the reconstruction's scale: the points' median depth in their first camera (kept only while
            frame 0 is the one fixed frame; otherwise the fixed frames set the scale).
        free: ``[F]`` bool, poses to refine (default all but frame 0).
        X: ``[P, 3]`` initial points (rows with NaN are triangulated from the initial poses).
        rounds, iterations: override the config's.
    Returns:
        ``{"R": [F, 3, 3], "t": [F, 3], "X": [P, 3], "inliers": [N] bool, "rms_px": float, "points": int}``.
    """
    c = config
    rounds = c.rounds if rounds is None else rounds
    iterations = c.iterations if iterations is None else iterations
    F = len(R)
    R, t = R.astype(np.float64).copy(), t.astype(np.float64).copy()
    uv = uv.astype(np.float64)
    free = np.arange(F) > 0 if free is None else np.asarray(free, bool).copy()
    gauge = not free[0] and free[1:].all()  # only frame 0 fixed: the scale is ours to hold
    prior = _prior_scales(c, depth)
    n_obs = np.bincount(point, minlength=0 if X is None else len(X))
    P_n = len(n_obs)
    keep = n_obs[point] >= c.min_track
    bear = np.c_[uv, np.ones(len(uv))] @ np.linalg.inv(K).T
    X_tri = triangulate_tracks(R, t, bear, frames, point, P_n, depth)
    if X is not None:
        X = np.asarray(X, np.float64).copy()
        bad = ~np.isfinite(X).all(1)
        X[bad] = X_tri[bad]
    else:
        X = X_tri
    first = np.full(P_n, F)
    np.minimum.at(first, point, frames)
    col = np.full(F, -1)
    col[free] = 6 * np.arange(free.sum())
    n_pose = 6 * int(free.sum())
    vr = np.broadcast_to(3 * np.arange(P_n)[:, None, None] + np.arange(3)[None, :, None], (P_n, 3, 3)).ravel()
    vc = np.broadcast_to(3 * np.arange(P_n)[:, None, None] + np.arange(3)[None, None, :], (P_n, 3, 3)).ravel()

    def rescale(t: np.ndarray, X: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sel = mask & (frames == first[point])
        if not gauge or sel.sum() < 3:
            return t, X
        z = (np.einsum("nij,nj->ni", R[frames[sel]], X[point[sel]]) + t[frames[sel]])[:, 2]
        med = float(np.median(z))
        if not np.isfinite(med) or med <= 0:
            return t, X
        return t * (depth / med), X * (depth / med)

    t, X = rescale(t, X, keep)
    for rnd in range(max(1, rounds)):
        lam = c.lm_init
        r, P, valid = _residuals(R, t, X, K, frames, point, uv)
        cost = _objective(r, valid, keep, R, t, c, prior)
        for _ in range(iterations):
            idx = np.flatnonzero(valid & keep)
            if idx.size < 6:
                break
            fr, pt = frames[idx], point[idx]
            w = _weights(np.linalg.norm(r[idx], axis=1), c.loss_px)
            Pm = P[idx]
            z = Pm[:, 2]
            dpi = np.zeros((idx.size, 2, 3))
            dpi[:, 0, 0] = K[0, 0] / z
            dpi[:, 0, 2] = -K[0, 0] * Pm[:, 0] / z ** 2
            dpi[:, 1, 1] = K[1, 1] / z
            dpi[:, 1, 2] = -K[1, 1] * Pm[:, 1] / z ** 2
            A = np.concatenate([-dpi @ _skew(Pm - t[fr]), dpi], axis=2)  # [n, 2, 6]: d/d(rotation, translation)
            B = dpi @ R[fr]  # [n, 2, 3]: d/dX
            Aw, Bw, ri = A * w[:, None, None], B * w[:, None, None], r[idx]
            V = _sum_blocks(pt, np.einsum("nki,nkj->nij", Bw, B), P_n)
            gl = _sum_blocks(pt, np.einsum("nki,nk->ni", Bw, ri), P_n)
            hp = free[fr]
            Up = _sum_blocks(fr[hp], np.einsum("nki,nkj->nij", Aw[hp], A[hp]), F)
            gp = _sum_blocks(fr[hp], np.einsum("nki,nk->ni", Aw[hp], ri[hp]), F)
            Wb = np.einsum("nki,nkj->nij", Aw[hp], B[hp])  # [n', 6, 3]
            rr = np.broadcast_to(col[fr[hp]][:, None, None] + np.arange(6)[None, :, None], Wb.shape).ravel()
            cc = np.broadcast_to((3 * pt[hp])[:, None, None] + np.arange(3)[None, None, :], Wb.shape).ravel()
            Wsp = sp.csr_matrix((Wb.ravel(), (rr, cc)), shape=(n_pose, 3 * P_n))
            U = np.zeros((n_pose, n_pose))
            for f in np.flatnonzero(free):
                U[col[f]:col[f] + 6, col[f]:col[f] + 6] = Up[f]
            gp_flat, gl_flat = gp[free].ravel(), gl.ravel()
            if any(prior):
                _add_motion_prior(U, gp_flat, R, t, free, *prior)
            dU, dV = np.diag(U).copy(), np.einsum("pii->pi", V)
            accepted = False
            for _try in range(8):
                Vinv = np.linalg.inv(V + (lam * np.maximum(dV, 1e-9) + 1e-9)[:, :, None] * np.eye(3))
                Vsp = sp.csr_matrix((Vinv.ravel(), (vr, vc)), shape=(3 * P_n, 3 * P_n))
                WV = Wsp @ Vsp
                S = U + np.diag(lam * np.maximum(dU, 1e-9) + 1e-9) - (WV @ Wsp.T).toarray()
                try:
                    dp = np.linalg.solve(S, -gp_flat + WV @ gl_flat)
                except np.linalg.LinAlgError:
                    lam *= 10
                    continue
                dX = -(Vsp @ (gl_flat + Wsp.T @ dp)).reshape(P_n, 3)
                if not (np.all(np.isfinite(dp)) and np.all(np.isfinite(dX))):
                    lam *= 10
                    continue
                dpose = dp.reshape(-1, 6)
                R_new, t_new = R.copy(), t.copy()
                R_new[free] = _exp(dpose[:, :3]) @ R[free]
                t_new[free] = t[free] + dpose[:, 3:]  # P = exp(d) R X + t: the rotation update leaves t alone
                X_new = X + dX
                r_new, _, valid_new = _residuals(R_new, t_new, X_new, K, frames, point, uv)
                if _objective(r_new, valid_new, keep, R_new, t_new, c, prior) < cost:
                    t_new, X_new = rescale(t_new, X_new, keep & valid_new)
                    R, t, X = R_new, t_new, X_new
                    r, P, valid = _residuals(R, t, X, K, frames, point, uv)
                    cost = _objective(r, valid, keep, R, t, c, prior)
                    lam = max(lam / 3, 1e-7)
                    accepted = True
                    break
                lam *= 10
            if not accepted or max(np.abs(dp).max(initial=0), np.abs(dX).max(initial=0)) < 1e-7:
                break
        if rnd < rounds - 1:
            keep = _prune(r, valid, keep, point, P_n, c)
    r, P, valid = _residuals(R, t, X, K, frames, point, uv)
    m = keep & valid
    rms = float(np.sqrt(np.mean(np.sum(r[m] ** 2, axis=1)))) if m.any() else float("nan")
    n_pts = int((np.bincount(point[m], minlength=P_n) > 0).sum())
    log.debug("bundle: %d frames (%d free), %d points, %d/%d observations kept, rms %.2f px", F, int(free.sum()),
              n_pts, int(m.sum()), len(m), rms)
    return {"R": R, "t": t, "X": X, "inliers": m, "rms_px": rms, "points": n_pts}


def _sum_blocks(index: np.ndarray, blocks: np.ndarray, n: int) -> np.ndarray:
    """``out[i] = sum of blocks[index == i]`` for ``blocks [N, ...]`` (a faster ``np.add.at``)."""
    flat = blocks.reshape(len(blocks), int(np.prod(blocks.shape[1:])))
    out = np.zeros((n, flat.shape[1]))
    for k in range(flat.shape[1]):
        out[:, k] = np.bincount(index, flat[:, k], minlength=n)
    return out.reshape((n,) + blocks.shape[1:])


def _pnp(X: np.ndarray, uv: np.ndarray, K: np.ndarray, R0: np.ndarray, t0: np.ndarray,
         min_points: int) -> tuple[np.ndarray, np.ndarray] | None:
    """World-to-camera pose from 3-D points and their pixels (RANSAC PnP started at ``R0, t0``); None on failure."""
    if len(X) < min_points:
        return None
    rvec, _ = cv2.Rodrigues(R0)
    ok, rvec, tvec, inl = cv2.solvePnPRansac(X, uv - 0.5, K, None, rvec.copy(), t0.reshape(3, 1).copy(),
                                             useExtrinsicGuess=True, iterationsCount=100, reprojectionError=2.0,
                                             flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok or inl is None or len(inl) < min_points:
        return None
    return cv2.Rodrigues(rvec)[0], tvec[:, 0]


def incremental_bundle(R: np.ndarray, t: np.ndarray, K: np.ndarray, frames: np.ndarray, point: np.ndarray,
                       uv: np.ndarray, depth: float, config: BundleConfig = BundleConfig(),
                       reverse: bool = False) -> dict:
    """Bundle adjustment grown frame block by frame block (as incremental SfM), then one final solve.

    The initial poses (``R, t``: chained pairwise estimates) only seed the first ``init_frames`` frames
    and the fallback; every later frame starts from PnP on the points solved so far (started at the
    previous frame's pose), and the frames seen so far (the last ``window`` of them free) are re-adjusted
    before the next block. A chain of pairwise poses can start the adjustment in the wrong valley of
    the rotation/translation ambiguity; growing the solution keeps every start close to the answer.
    ``reverse`` grows it from the last frame backward instead (another start: which end's first block
    has the better-conditioned geometry depends on the video); the result is re-expressed with frame 0
    as the world, as always. Arguments and result as ``bundle_adjust``.
    """
    if reverse:
        last = len(R) - 1
        out = incremental_bundle(R[::-1], t[::-1], K, last - frames, point, uv, depth, config)
        G = np.eye(4)  # old world (the last frame's camera) -> new world (frame 0's camera)
        G[:3, :3], G[:3, 3] = out["R"][-1], out["t"][-1]
        Gi = np.linalg.inv(G)  # not G's transpose: rotations seeded from float32 poses are orthonormal to ~1e-7 only,
        R_new = out["R"][::-1] @ Gi[:3, :3]  # and frame 0 must come out as the identity exactly
        t_new = out["t"][::-1] + np.einsum("fij,j->fi", out["R"][::-1], Gi[:3, 3])
        return {**out, "R": R_new, "t": t_new, "X": out["X"] @ G[:3, :3].T + G[:3, 3]}
    c = config
    F = len(R)
    R, t = R.astype(np.float64).copy(), t.astype(np.float64).copy()
    R0, t0 = R.copy(), t.copy()
    P_n = int(point.max()) + 1 if len(point) else 0
    X = np.full((P_n, 3), np.nan)
    hi = min(F, c.init_frames)
    while True:
        lo = max(0, hi - c.window)
        sel = (frames < hi) & (frames >= max(0, lo - c.window))
        free = np.zeros(hi, bool)
        free[max(1, lo):] = True
        last = hi >= F
        out = bundle_adjust(R[:hi], t[:hi], K, frames[sel], point[sel], uv[sel], depth, c, free=free, X=X,
                            rounds=None if last else c.grow_rounds, iterations=None if last else c.grow_iterations)
        R[:hi], t[:hi] = out["R"], out["t"]
        solved = np.zeros(P_n, bool)
        solved[point[sel][out["inliers"]]] = True
        X = np.where(solved[:, None], out["X"], np.nan)
        if last:
            inliers = np.zeros(len(frames), bool)
            inliers[np.flatnonzero(sel)[out["inliers"]]] = True
            return {**out, "R": R, "t": t, "inliers": inliers}
        nxt = min(F, hi + c.grow)
        for f in range(hi, nxt):
            # seed (and fallback): the chained motion from the previous frame applied to its solved pose
            rel_R = R0[f] @ R0[f - 1].T
            seed_R, seed_t = rel_R @ R[f - 1], rel_R @ t[f - 1] + t0[f] - rel_R @ t0[f - 1]
            m = (frames == f) & solved[point]
            pose = _pnp(X[point[m]], uv[m], K, seed_R, seed_t, c.min_pnp)
            R[f], t[f] = pose if pose is not None else (seed_R, seed_t)
        hi = nxt


def trajectory_cost(R: np.ndarray, t: np.ndarray, K: np.ndarray, frames: np.ndarray, point: np.ndarray,
                    uv: np.ndarray, depth: float, config: BundleConfig = BundleConfig()) -> float:
    """Robust (Cauchy) reprojection cost of fixed poses over every track, its points refitted: a common score
    for solutions started from different seeds (each solve prunes its own outliers, so their own costs differ)."""
    out = bundle_adjust(R, t, K, frames, point, uv, depth, config, free=np.zeros(len(R), bool), rounds=1,
                        iterations=config.grow_iterations)
    r, _, valid = _residuals(R, t, out["X"], K, frames, point, uv)
    keep = np.bincount(point)[point] >= config.min_track
    return _objective(r, valid, keep, R, t, config, _prior_scales(config, depth))
