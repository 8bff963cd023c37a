"""ControlPipeline: landmarks -> fitted meshes -> control render (no rays: the frame source makes them)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from hand2world.conditioning import ControlConfig, ControlPipeline
from hand2world.geometry import plucker_rays, project, relative_c2w
from hand2world.hands import HandModel, random_hand_pose
from hand2world.render.colors import SIDE_COLORS

H, W = 192, 256


@dataclass
class Hand:
    side: str
    image: np.ndarray
    world: np.ndarray


def synthetic_hands(pipe: ControlPipeline, sides=("right",), seed=0, shift=0.0):
    """Hands as a tracker would report them, from known meshes; returns (hands, true joints [21,3] per side)."""
    gen = torch.Generator().manual_seed(seed)
    hands, truth = [], {}
    for i, side in enumerate(sides):
        model = HandModel.load("open", side=side)
        pose = random_hand_pose(model, 1, generator=gen, betas_range=1.0, global_orient=False, scale=0.5)
        pose.transl[:] = torch.tensor([(-0.08 if side == "left" else 0.08) + shift, 0.0, 0.45])
        with torch.no_grad():
            joints = model(pose).joints[0]
        uv = project(joints, torch.as_tensor(pipe.K)).numpy()
        image = np.concatenate([uv / [W, H], np.zeros((21, 1))], axis=1).astype(np.float32)
        world = (joints - joints.mean(0)).numpy().astype(np.float32)
        hands.append(Hand(side, image, world))
        truth[side] = joints.numpy()
        assert i < 2
    return hands, truth


def test_fit_places_the_hand_where_the_landmarks_are():
    pipe = ControlPipeline(ControlConfig(height=H, width=W))
    hands, truth = synthetic_hands(pipe, sides=("left", "right"))
    frame = pipe.process(hands, t=0.0)
    assert frame.control.shape == (H, W, 3) and frame.control.dtype == np.uint8
    assert not hasattr(frame, "rays")  # the frame source owns the camera and makes the rays
    assert {m.side for m in frame.meshes} == {"left", "right"}
    for mesh in frame.meshes:
        err_mm = 1000 * np.linalg.norm(mesh.joints[0].numpy() - truth[mesh.side], axis=-1).mean()
        assert err_mm < 5.0, (mesh.side, err_mm)
    # every landmark lands on the silhouette, in its side's hue family
    for hand in hands:
        px = (hand.image[:, :2] * [W, H]).astype(int)
        colours = frame.control[px[:, 1].clip(0, H - 1), px[:, 0].clip(0, W - 1)].astype(int)
        assert (colours.sum(-1) > 0).mean() >= 0.9
        fill = np.array(SIDE_COLORS[hand.side].fill)
        other = np.array(SIDE_COLORS["left" if hand.side == "right" else "right"].fill)
        lit = colours[colours.sum(-1) > 0]
        cos = lambda a, b: (a @ b) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b) + 1e-9)  # noqa: E731
        assert (cos(lit, fill) > cos(lit, other)).mean() > 0.8


def test_no_hands_black_frame():
    pipe = ControlPipeline(ControlConfig(height=H, width=W))
    frame = pipe.process([], t=0.0)
    assert not frame.control.any() and frame.meshes == []


def test_control_video_rays_are_relative_to_the_first_pose():
    """The `control` video's rays panel: poses relative to the trajectory's first (``relative_c2w``)."""
    K = torch.as_tensor(ControlPipeline(ControlConfig(height=H, width=W)).K)
    c2w0 = np.eye(4, dtype=np.float32)
    c2w0[:3, 3] = [1.0, 2.0, 3.0]
    moved = c2w0.copy()
    moved[:3, 3] += [0.1, 0.0, 0.0]
    rel = relative_c2w(torch.from_numpy(np.stack([c2w0, moved])))
    first, second = plucker_rays(K, rel[0], H, W), plucker_rays(K, rel[1], H, W)
    torch.testing.assert_close(first, plucker_rays(K, torch.eye(4), H, W))
    assert torch.allclose(second[:3], first[:3], atol=1e-6)  # pure translation: same directions
    assert not torch.allclose(second[3:], first[3:], atol=1e-4)  # moments change


def test_hand_leaving_resets_its_state_and_tracking_follows_motion():
    pipe = ControlPipeline(ControlConfig(height=H, width=W))
    hands, _ = synthetic_hands(pipe)
    pipe.process(hands, t=0.0)
    assert pipe.process([], t=0.05).meshes == []
    # the hand returns elsewhere: no smoothing lag from its old position
    moved, truth = synthetic_hands(pipe, shift=-0.1)
    frame = pipe.process(moved, t=0.1)
    err_mm = 1000 * np.linalg.norm(frame.meshes[0].joints[0].numpy() - truth["right"], axis=-1).mean()
    assert err_mm < 5.0


def test_duplicate_side_uses_the_first_hand_only():
    pipe = ControlPipeline(ControlConfig(height=H, width=W))
    hands, _ = synthetic_hands(pipe)
    frame = pipe.process([hands[0], hands[0]], t=0.0)
    assert len(frame.meshes) == 1
