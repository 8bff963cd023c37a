"""Fit hand-model parameters to 21 MediaPipe landmarks (world and/or image), batched.

Design choices:
- Inputs follow MediaPipe: ``world`` landmarks in metres, hand-centred, axes ~ camera axes (so
  they fix the hand's orientation, articulation and size but not its position); ``image``
  landmarks in pixels of a camera with intrinsics ``K`` fix the position in camera coordinates.
- Cold start: the global orientation comes from a Kabsch fit of the rigid palm points (wrist,
  thumb CMC, four MCPs), then a "swing" initialisation rotates every bone of the template onto
  the observed bone direction (closed form, level by level), so the optimiser starts near the
  answer and needs few iterations.
- Stage 1: batched Levenberg-Marquardt on centred 3-D joint residuals (``/ sigma_world``) plus an
  anatomical pose prior (rotation components along each joint's flexion / abduction / twist
  axes, hinge joints penalised off-axis) and a shape prior. Jacobians are analytic and batched
  (``lbs.lbs_with_jacobian``): no Python loop over hands or joints, damping and acceptance per
  hand. ``autodiff=True`` swaps in ``torch.func.vmap(jacfwd(...))`` of the per-hand residual
  (identical values; tests compare the two), which costs ~8 ms instead of ~1 ms per iteration.
- Placement: with ``image``, ``transl`` solves the linear least-squares system of the projection
  equations ``x_n (Z + t_z) = X + t_x``, ``y_n (Z + t_z) = Y + t_y`` (normalised coordinates);
  without it, the model's joint centroid is put on the world-landmark centroid.
- Stage 2 (with ``image``): LM on all 61 parameters with both the 3-D residuals and reprojection
  residuals (``/ sigma_image`` pixels).
- Streams: pass the previous frame's result as ``init``; the initialisation is skipped and fewer
  iterations run (``iters``/``refine_iters`` default to 5/3 warm instead of 30/10 cold; every
  stage also stops early once no hand's predicted improvement exceeds ``tol``). The warm
  start's ``transl`` is not needed: placement is re-solved in closed form every frame.
  ``optimize_shape=False`` keeps ``init.betas`` (e.g. once a shape has settled over the first
  frames).
- Computation runs in float64 (tiny problems, overhead-bound on CPU); the result takes the
  dtype of ``world`` (float32 if it is not floating point).
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import Tensor
from torch.func import jacfwd, vmap

from hand2world.hands.lbs import axis_angle_to_matrix, lbs_with_jacobian, matrix_to_axis_angle
from hand2world.hands.model import HandModel, HandPose
from hand2world.hands.skeleton import MEDIAPIPE_FROM_INTERNAL, NUM_BETAS, NUM_HAND_JOINTS

log = logging.getLogger(__name__)

__all__ = ["fit_landmarks", "kabsch", "pose_prior_scales", "reprojection_error"]

PALM_POINTS = (0, 1, 5, 9, 13, 17)  # wrist, thumb CMC, MCPs: rigid under finger motion
NUM_PARAMS = 3 + 3 * NUM_HAND_JOINTS + NUM_BETAS  # without transl: 58


def pose_prior_scales() -> Tensor:
    """Inverse standard deviations ``[15, 3]`` (flexion, abduction, twist) of the pose prior, radians^-1.

    Finger MCPs: flexion free-ish, moderate abduction, little twist; PIP/DIP/IP are hinges.
    """
    inv = torch.empty(NUM_HAND_JOINTS, 3, dtype=torch.float64)
    inv[0] = torch.tensor([1 / 1.0, 1 / 0.8, 1 / 0.5])  # thumb CMC
    inv[1] = torch.tensor([1 / 1.0, 1 / 0.3, 1 / 0.3])  # thumb MCP
    inv[2] = torch.tensor([1 / 1.5, 1 / 0.15, 1 / 0.15])  # thumb IP
    for f in range(1, 5):
        inv[3 * f] = torch.tensor([1 / 1.5, 1 / 0.4, 1 / 0.25])  # MCP
        inv[3 * f + 1] = torch.tensor([1 / 1.5, 1 / 0.15, 1 / 0.15])  # PIP
        inv[3 * f + 2] = torch.tensor([1 / 1.5, 1 / 0.15, 1 / 0.15])  # DIP
    return inv


def kabsch(src: Tensor, dst: Tensor) -> Tensor:
    """Best rotation ``R`` with ``R @ src_i ~ dst_i`` for centred point sets.

    Args:
        src, dst: ``[B, N, 3]`` (centred inside).
    Returns:
        ``[B, 3, 3]`` proper rotations.
    """
    src = src - src.mean(1, keepdim=True)
    dst = dst - dst.mean(1, keepdim=True)
    cov = dst.transpose(1, 2) @ src  # [B, 3, 3]
    u, _, vt = torch.linalg.svd(cov)
    sign = torch.sign(torch.det(u @ vt))
    fix = torch.diag_embed(torch.stack([torch.ones_like(sign), torch.ones_like(sign), sign], -1))
    return u @ fix @ vt


def _swing_init(rest: Tensor, world: Tensor, root: Tensor) -> Tensor:
    """Closed-form finger rotations aligning each template bone with the observed bone.

    Args:
        rest: ``[B, 21, 3]`` zero-pose joints; world: ``[B, 21, 3]`` targets; root: ``[B, 3, 3]``.
    Returns:
        ``hand_pose [B, 45]`` (minimal "swing" rotations, no twist).
    """
    batch = rest.shape[0]
    parent_rot = root[:, None].expand(batch, 5, 3, 3)
    local = []
    for level in range(3):
        idx = [1 + 4 * f + level for f in range(5)]
        child = [i + 1 for i in idx]
        d_tmp = torch.nn.functional.normalize(rest[:, child] - rest[:, idx], dim=-1)
        d_cur = (parent_rot @ d_tmp.unsqueeze(-1)).squeeze(-1)
        d_obs = torch.nn.functional.normalize(world[:, child] - world[:, idx], dim=-1)
        cross = torch.cross(d_cur, d_obs, dim=-1)
        sin = cross.norm(dim=-1, keepdim=True)
        angle = torch.atan2(sin, (d_cur * d_obs).sum(-1, keepdim=True))
        swing = cross / sin.clamp_min(1e-9) * angle  # world-frame axis-angle
        local.append((parent_rot.transpose(-1, -2) @ swing.unsqueeze(-1)).squeeze(-1))  # [B, 5, 3]
        parent_rot = axis_angle_to_matrix(swing) @ parent_rot
    # local[level][:, finger] -> hand_pose block 3 * finger + level
    return torch.stack(local, dim=2).reshape(batch, 3 * NUM_HAND_JOINTS)


def _as_tensor(x: Tensor | np.ndarray | None, dtype: torch.dtype, device: torch.device) -> Tensor | None:
    if x is None:
        return None
    return torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x).to(dtype=dtype, device=device)


class _Problem:
    """Residuals (and their Jacobians) of the landmark fit, batched over hands.

    Parameter vectors are ``[B, 58]`` (global_orient, hand_pose, betas) in stage 1 and ``[B, 61]``
    (+ transl) in stage 2. Residual blocks: centred 3-D joints ``/ sigma_world`` [63], optionally
    reprojections ``/ sigma_image`` [42], anatomical pose prior [45], shape prior [10].
    """

    def __init__(
        self,
        model: HandModel,
        sigma_world: float,
        sigma_image: float,
        pose_prior: float,
        shape_prior: float,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        ids = model.tip_vertex_ids

        def cast(t: Tensor) -> Tensor:
            return t.to(dtype=dtype, device=device)

        self.tree = model.tree
        self.arrays = {
            "j_template": cast(model.j_template),
            "j_shapedirs": cast(model.j_shapedirs),
            "v_template": cast(model.v_template[ids]),
            "shapedirs": cast(model.shapedirs[ids]),
            "weights": cast(model.weights[ids]),
        }
        self.posedirs = None
        if model.posedirs is not None:
            cols = (ids[:, None] * 3 + torch.arange(3, device=ids.device)).reshape(-1)
            self.posedirs = cast(model.posedirs[:, cols])
        self.order = list(MEDIAPIPE_FROM_INTERNAL)
        self.joints_fn = model.joint_function(dtype, device)
        self.frames = cast(model.joint_frames[1:])  # [15, 3, 3]
        scale = pose_prior_scales().to(dtype=dtype, device=device) * pose_prior  # [15, 3]
        # prior residual = D F^T w: its (constant) Jacobian w.r.t. hand_pose, block diagonal [45, 45]
        blocks = scale[:, :, None] * self.frames.transpose(1, 2)  # [15, 3(anat), 3(w)]
        self.prior_pose = torch.block_diag(*blocks)
        self.shape_prior = shape_prior
        self.inv_sw = 1.0 / sigma_world
        self.inv_si = 1.0 / sigma_image

    # -------------------------------------------------------------- batched, analytic
    def joints(self, params: Tensor) -> Tensor:
        """``[B, 58+]`` -> joints ``[B, 21, 3]`` without translation."""
        aa = params[:, : 3 + 3 * NUM_HAND_JOINTS].reshape(-1, 1 + NUM_HAND_JOINTS, 3)
        return self.joints_fn(aa, params[:, 3 + 3 * NUM_HAND_JOINTS : NUM_PARAMS])

    def _joints_jac(self, params: Tensor) -> tuple[Tensor, Tensor]:
        aa = params[:, : 3 + 3 * NUM_HAND_JOINTS].reshape(-1, 1 + NUM_HAND_JOINTS, 3)
        betas = params[:, 3 + 3 * NUM_HAND_JOINTS : NUM_PARAMS]
        joints, tips, d_joints, d_tips = lbs_with_jacobian(
            aa, betas, tree=self.tree, posedirs=self.posedirs, **self.arrays
        )
        return torch.cat([joints, tips], 1)[:, self.order], torch.cat([d_joints, d_tips], 1)[:, self.order]

    def _prior(self, params: Tensor) -> tuple[Tensor, Tensor]:
        batch = params.shape[0]
        hp = params[:, 3 : 3 + 3 * NUM_HAND_JOINTS]
        betas = params[:, NUM_PARAMS - NUM_BETAS : NUM_PARAMS]
        r = torch.cat([hp @ self.prior_pose.T, self.shape_prior * betas], dim=-1)
        jac = torch.zeros(batch, r.shape[1], params.shape[1], dtype=params.dtype, device=params.device)
        jac[:, : 3 * NUM_HAND_JOINTS, 3 : 3 + 3 * NUM_HAND_JOINTS] = self.prior_pose
        idx = torch.arange(NUM_BETAS, device=params.device)
        jac[:, 3 * NUM_HAND_JOINTS + idx, NUM_PARAMS - NUM_BETAS + idx] = self.shape_prior
        return r, jac

    def evaluate(self, params: Tensor, data: tuple, jacobian: bool) -> tuple[Tensor, Tensor | None]:
        """Residuals ``[B, R]`` and (optionally) their Jacobian ``[B, R, P]``."""
        world_c = data[0]
        batch, num = params.shape
        if not jacobian:
            joints, d_joints = self.joints(params), None
        else:
            joints, d_joints = self._joints_jac(params)
            if num > NUM_PARAMS:
                d_joints = torch.cat([d_joints, d_joints.new_zeros(batch, 21, 3, num - NUM_PARAMS)], -1)
        r3 = (joints - joints.mean(1, keepdim=True) - world_c).reshape(batch, -1) * self.inv_sw
        res, jacs = [r3], []
        if jacobian:
            jacs.append((d_joints - d_joints.mean(1, keepdim=True)).reshape(batch, 63, num) * self.inv_sw)
        if len(data) > 1:
            image, k = data[1], data[2]
            cam = joints + params[:, NUM_PARAMS : NUM_PARAMS + 3, None].transpose(1, 2)
            proj = cam @ k.transpose(1, 2)
            depth = proj[..., 2:].clamp_min(1e-4)
            uv = proj[..., :2] / depth
            res.append((uv - image).reshape(batch, -1) * self.inv_si)
            if jacobian:
                # d uv / d cam = (K_rows01 - uv K_row2) / depth; d cam / d transl = I
                d_uv_cam = (k[:, None, :2, :] - uv[..., :, None] * k[:, None, 2:3, :]) / depth[..., None]
                d_cam = d_joints.clone()
                d_cam[..., NUM_PARAMS : NUM_PARAMS + 3] += torch.eye(
                    3, dtype=params.dtype, device=params.device
                )
                jacs.append((d_uv_cam @ d_cam).reshape(batch, 42, num) * self.inv_si)
        r_prior, j_prior = self._prior(params)
        res.append(r_prior)
        jacs.append(j_prior)
        return torch.cat(res, 1), (torch.cat(jacs, 1) if jacobian else None)

    # -------------------------------------------------------------- per hand, autodiff (reference)
    def single(self, p: Tensor, *data: Tensor) -> tuple[Tensor, Tensor]:
        """Residual of one hand (``p [P]``) for ``torch.func``; returns ``(r, r)`` for ``has_aux``."""
        r, _ = self.evaluate(p[None], tuple(d[None] for d in data), jacobian=False)
        return r[0], r[0]


def _levenberg_marquardt(
    problem: _Problem,
    params: Tensor,
    data: tuple,
    iters: int,
    mask: Tensor,
    tol: float,
    autodiff: bool = False,
) -> Tensor:
    """Batched LM on ``problem`` residuals; ``params [B, P]``; ``mask [P]`` marks free entries."""
    if autodiff:
        jac_fn = vmap(jacfwd(problem.single, has_aux=True))

        def evaluate(p: Tensor) -> tuple[Tensor, Tensor]:
            jac, r = jac_fn(p, *data)
            return r, jac
    else:

        def evaluate(p: Tensor) -> tuple[Tensor, Tensor]:
            return problem.evaluate(p, data, jacobian=True)

    batch, num = params.shape
    lam = torch.full((batch,), 1e-3, dtype=params.dtype, device=params.device)
    free = mask.to(params.dtype)
    pin = torch.diag_embed(1.0 - free)  # keeps fixed entries' rows non-singular
    done = 0
    while done < iters:
        done += 1
        r, jac = evaluate(params)
        jac = jac * free
        cost = (r * r).sum(-1)
        hess = jac.transpose(1, 2) @ jac
        grad = (jac.transpose(1, 2) @ r.unsqueeze(-1)).squeeze(-1)
        diag = torch.diagonal(hess, dim1=1, dim2=2)
        damped = hess + lam[:, None, None] * torch.diag_embed(diag + 1e-9) + pin
        step = -torch.linalg.solve(damped, grad) * free
        trial = params + step
        new_r, _ = problem.evaluate(trial, data, jacobian=False)
        new_cost = (new_r * new_r).sum(-1)
        accept = new_cost < cost
        params = torch.where(accept[:, None], trial, params)
        lam = torch.where(accept, (lam * 0.3).clamp_min(1e-7), (lam * 4.0).clamp_max(1e7))
        # Gauss-Newton model's predicted decrease of |r|^2 for this step: -(2 g.d + d^T H d)
        predicted = -(2 * (grad * step).sum(-1) + (step.unsqueeze(1) @ hess @ step.unsqueeze(-1)).flatten())
        if bool((predicted <= tol * cost).all()):
            break
    log.debug("LM stopped after %d/%d iterations (P=%d, B=%d)", done, iters, num, batch)
    return params


def _solve_translation(joints: Tensor, image: Tensor, k: Tensor) -> Tensor:
    """Least-squares ``t`` with ``project(K, joints + t) ~ image``.

    Args:
        joints: ``[B, 21, 3]`` camera-oriented joints without translation; image: ``[B, 21, 2]``
        pixels; k: ``[B, 3, 3]``.
    Returns:
        ``[B, 3]``.
    """
    homo = torch.cat([image, torch.ones_like(image[..., :1])], dim=-1)
    norm = (torch.linalg.inv(k)[:, None] @ homo.unsqueeze(-1)).squeeze(-1)  # [B, 21, 3]
    xn, yn = norm[..., 0] / norm[..., 2], norm[..., 1] / norm[..., 2]
    one, zero = torch.ones_like(xn), torch.zeros_like(xn)
    # x_n (Z + tz) = X + tx  ->  tx - x_n tz = x_n Z - X ; same for y
    a = torch.cat([torch.stack([one, zero, -xn], -1), torch.stack([zero, one, -yn], -1)], dim=1)  # [B, 42, 3]
    b = torch.cat([xn * joints[..., 2] - joints[..., 0], yn * joints[..., 2] - joints[..., 1]], dim=1)
    return torch.linalg.lstsq(a, b.unsqueeze(-1)).solution.squeeze(-1)


def fit_landmarks(
    model: HandModel,
    world: Tensor | np.ndarray,
    image: Tensor | np.ndarray | None = None,
    K: Tensor | np.ndarray | None = None,
    init: HandPose | None = None,
    iters: int | None = None,
    refine_iters: int | None = None,
    *,
    sigma_world: float = 0.005,
    sigma_image: float = 2.0,
    pose_prior: float = 1.0,
    shape_prior: float = 0.3,
    optimize_shape: bool = True,
    tol: float = 1e-6,
    autodiff: bool = False,
) -> HandPose:
    """Fit pose, shape and camera-space placement of ``model`` to MediaPipe-order landmarks.

    Args:
        model: the hand model (its ``side`` must match the landmarks' hand).
        world: ``[B, 21, 3]`` or ``[21, 3]`` metric hand-centred landmarks (camera axes).
        image: optional ``[B, 21, 2]`` pixel landmarks (``[..., 3]`` accepted, z ignored); MediaPipe's
            normalised image coordinates must be multiplied by the image width/height first.
        K: ``[3, 3]`` or ``[B, 3, 3]`` intrinsics in pixels; required with ``image``.
        init: warm start (e.g. the previous frame's result), batch ``B`` or 1.
        iters: stage-1 (3-D) LM iterations; default 30 cold, 5 warm.
        refine_iters: stage-2 (3-D + reprojection) iterations; default 10 cold, 3 warm.
        sigma_world: metres per unit of 3-D residual; sigma_image: pixels per unit of 2-D residual.
        pose_prior, shape_prior: prior weights (0 disables).
        optimize_shape: False keeps ``betas`` at ``init.betas`` (zeros without ``init``).
        tol: a stage stops once every hand's predicted relative cost decrease is below ``tol``.
        autodiff: use ``vmap(jacfwd(...))`` Jacobians instead of the analytic ones (same values,
            ~5-10x slower on CPU; kept as the reference the analytic path is tested against).
    Returns:
        ``HandPose`` with batch ``B`` whose joints ``model(pose).joints`` are in camera coordinates
        (with ``image``) or in the world-landmark frame (without).
    """
    out_dtype = world.dtype if isinstance(world, Tensor) and world.is_floating_point() else torch.float32
    device = world.device if isinstance(world, Tensor) else torch.device("cpu")
    dtype = torch.float64
    world_t = _as_tensor(world, dtype, device)
    if world_t.dim() == 2:
        world_t = world_t[None]
    if world_t.shape[-2:] != (21, 3):
        raise ValueError(f"world landmarks must be [B, 21, 3], got {tuple(world_t.shape)}")
    batch = world_t.shape[0]
    image_t = _as_tensor(image, dtype, device)
    k_t = None
    if image_t is not None:
        if image_t.dim() == 2:
            image_t = image_t[None]
        image_t = image_t[..., :2].expand(batch, 21, 2)
        if K is None:
            raise ValueError("K is required with image landmarks")
        k_t = _as_tensor(K, dtype, device)
        k_t = (k_t[None] if k_t.dim() == 2 else k_t).expand(batch, 3, 3).contiguous()

    warm = init is not None
    iters = (5 if warm else 30) if iters is None else iters
    refine_iters = (3 if warm else 10) if refine_iters is None else refine_iters
    problem = _Problem(model, sigma_world, sigma_image, pose_prior, shape_prior, dtype, device)
    world_c = world_t - world_t.mean(1, keepdim=True)

    if warm:
        init = init.to(device=device, dtype=dtype)
        params = init.to_vector()[:, :NUM_PARAMS].expand(batch, -1).clone()
    else:
        betas = torch.zeros(batch, NUM_BETAS, dtype=dtype, device=device)
        rest = model.joint_function(dtype, device)(
            torch.zeros(batch, 16, 3, dtype=dtype, device=device), betas
        )
        root = kabsch(rest[:, list(PALM_POINTS)], world_c[:, list(PALM_POINTS)])
        hand_pose = _swing_init(rest, world_c, root)
        params = torch.cat([matrix_to_axis_angle(root), hand_pose, betas], dim=-1)

    mask = torch.ones(NUM_PARAMS + 3, dtype=torch.bool, device=device)
    if not optimize_shape:
        mask[NUM_PARAMS - NUM_BETAS : NUM_PARAMS] = False
    if iters > 0:
        params = _levenberg_marquardt(problem, params, (world_c,), iters, mask[:NUM_PARAMS], tol, autodiff)

    joints = problem.joints(params)
    if image_t is not None:
        transl = _solve_translation(joints, image_t, k_t)
        full = torch.cat([params, transl], dim=-1)
        if refine_iters > 0:
            full = _levenberg_marquardt(
                problem, full, (world_c, image_t, k_t), refine_iters, mask, tol, autodiff
            )
        params, transl = full[:, :NUM_PARAMS], full[:, NUM_PARAMS:]
    else:
        transl = world_t.mean(1) - joints.mean(1)
    result = HandPose.from_vector(torch.cat([params, transl], dim=-1))
    return result.to(dtype=out_dtype)


def reprojection_error(joints: Tensor, image: Tensor, K: Tensor) -> Tensor:
    """Per-joint pixel distance ``[B, 21]`` between projected ``joints [B,21,3]`` and ``image [B,21,2]``."""
    k = K if K.dim() == 3 else K[None]
    proj = joints @ k.transpose(1, 2)
    uv = proj[..., :2] / proj[..., 2:]
    return (uv - image[..., :2]).norm(dim=-1)
