"""Synthetic world: the issue's floors on a small run, plus renderer, dynamics, determinism, resume, CLI, preview."""

from __future__ import annotations

import numpy as np
import pytest

from hand2world.data import ACTION_DIM, ClipDataset
from hand2world.world import CONTACT_ACTIONS, FREE_SPACE_ACTIONS, synthesize

CLIPS, FRAMES, SIZE = 32, 17, 64


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    result = synthesize(root, CLIPS, FRAMES, SIZE, seed=0, workers=1, shard_size=16, progress=False)
    assert result["made"] == CLIPS
    return root, ClipDataset(root)


def test_clip_format(world):
    _, ds = world
    assert len(ds) == CLIPS
    c = ds[0]
    t, s = FRAMES, SIZE
    shapes = {"video": (t, s, s, 3), "control": (t, s, s, 3), "K": (3, 3), "c2w": (t, 4, 4),
              "joints3d": (t, 2, 21, 3), "joints2d": (t, 2, 21, 2), "hand_mask": (t, s, s), "visible_mask": (t, s, s),
              "depth": (t, s, s), "actions": (t, ACTION_DIM), "hand_params": (t, 2, 61), "hands_present": (2,),
              "object_poses": (t, 6, 4, 4), "object_info": (6, 8)}
    for key, shape in shapes.items():
        assert c[key].shape == shape, key
    assert c["video"].dtype == np.uint8 and c["hand_mask"].dtype == bool and c["depth"].dtype == np.float32
    assert c["action"] and c["split"] == "train" and c["seed"] == 0 and c["fps"] == 16.0
    for i in range(CLIPS):
        c = ds[i]
        present = c["hands_present"]
        assert present.any()
        for side in range(2):  # NaN exactly where a hand is absent
            assert np.isnan(c["joints3d"][:, side]).all() == (not present[side])
            assert np.isfinite(c["joints3d"][:, side]).all() == present[side]
        # actions: relative camera + joints
        rel = np.linalg.inv(c["c2w"][0].astype(np.float64)) @ c["c2w"].astype(np.float64)
        np.testing.assert_allclose(c["actions"][:, :9], rel[:, :3, :3].reshape(t, 9), atol=1e-5)
        np.testing.assert_allclose(c["actions"][:, 12:], np.nan_to_num(c["joints3d"]).reshape(t, -1), atol=1e-6)


def test_ground_truth_agrees_with_pixels(world):
    _, ds = world
    inside = total = 0
    for i in range(CLIPS):
        c = ds[i]
        assert not (c["visible_mask"] & ~c["hand_mask"]).any(), "visible_mask must be a subset of hand_mask"
        j3 = c["joints3d"].astype(np.float64)
        uvw = j3 @ c["K"].astype(np.float64).T
        uv = uvw[..., :2] / uvw[..., 2:]
        np.testing.assert_allclose(uv[np.isfinite(uv)], c["joints2d"][np.isfinite(uv)], atol=1e-3)
        t_idx, side, joint = np.nonzero(np.isfinite(j3[..., 2]) & (j3[..., 2] > 0))
        u, v = uv[t_idx, side, joint, 0], uv[t_idx, side, joint, 1]
        ok = (u >= 0) & (u < SIZE) & (v >= 0) & (v < SIZE)  # joints that project into the image
        hit = c["hand_mask"][t_idx[ok], v[ok].astype(int), u[ok].astype(int)]
        inside += int(hit.sum())
        total += int(ok.sum())
        # the control render draws the full hands: its (centre-sampled) pixels lie in the (coverage) hand_mask
        drawn = c["control"].any(axis=-1)
        assert (drawn & ~c["hand_mask"]).sum() <= 0.01 * drawn.sum() + 2, i
        assert drawn.sum() >= 0.6 * c["hand_mask"].sum(), i
        # depth: positive everywhere something is drawn (the room encloses the scene)
        assert (c["depth"] > 0).mean() > 0.99
    assert total > 5000
    assert inside / total >= 0.99, inside / total


def test_hand_params_reproduce_joints(world):
    import torch

    from hand2world.hands import HandModel, HandPose

    _, ds = world
    models = {side: HandModel.load("open", side=side) for side in ("left", "right")}
    for i in range(4):
        c = ds[i]
        for s, side in enumerate(("left", "right")):
            if not c["hands_present"][s]:
                continue
            with torch.no_grad():
                joints = models[side](HandPose.from_vector(torch.as_tensor(c["hand_params"][:, s]))).joints.numpy()
            np.testing.assert_allclose(joints, c["joints3d"][:, s], atol=2e-4)


def test_occlusion_head_motion_and_contacts(world):
    root, ds = world
    occluded = moving_head = 0
    seen_contact = seen_free = 0
    for i in range(CLIPS):
        c = ds[i]
        meta = ds.meta(i)
        full = c["hand_mask"].sum(axis=(1, 2))
        vis = c["visible_mask"].sum(axis=(1, 2))
        occluded += bool(((vis < 0.8 * full) & (full >= 8)).any())
        moving = not np.allclose(c["c2w"], c["c2w"][:1], atol=1e-6)
        assert moving == meta["head_moving"]
        moving_head += moving
        n_obj = int(c["object_info"][:, 7].sum())
        poses = c["object_poses"][:, :n_obj].astype(np.float64)
        assert n_obj >= 1 and np.isnan(c["object_poses"][:, n_obj:]).all()
        assert (poses[:, :, 2, 3] >= -1e-6).all(), "objects never sink into the table"
        np.testing.assert_allclose(poses[-1, :, 2, 3], 0.0, atol=1e-6)  # everything rests on the table at the end
        shift = np.linalg.norm(poses[:, :, :3, 3] - poses[:1, :, :3, 3], axis=-1).max(axis=0)  # [N_obj]
        if c["action"] in CONTACT_ACTIONS:
            seen_contact += 1
            assert shift[meta["target"]] > 0.01, (i, c["action"], shift)
        if c["action"] in FREE_SPACE_ACTIONS:
            seen_free += 1
            assert shift.max() == 0.0, (i, c["action"], shift)
    assert seen_contact >= 5 and seen_free >= 3
    assert occluded / CLIPS >= 0.25, occluded / CLIPS
    assert moving_head / CLIPS >= 0.5, moving_head / CLIPS


def test_same_seed_same_bytes_any_workers(tmp_path):
    a = synthesize(tmp_path / "a", 3, 7, 48, seed=5, workers=1, shard_size=2, progress=False)
    b = synthesize(tmp_path / "b", 3, 7, 48, seed=5, workers=2, shard_size=2, progress=False)
    assert a["index"]["num_clips"] == b["index"]["num_clips"] == 3
    for name in ("shard-00000.zip", "shard-00001.zip", "index.json", "splits.npy"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    c = synthesize(tmp_path / "c", 2, 7, 48, seed=6, workers=1, shard_size=2, progress=False)
    assert c["index"]["num_clips"] == 2
    assert (tmp_path / "c" / "shard-00000.zip").read_bytes() != (tmp_path / "a" / "shard-00000.zip").read_bytes()


def test_resume_and_cli(tmp_path):
    from hand2world.cli import main

    out = tmp_path / "ds"
    args = ["world", "synth", "--clips", "4", "--frames", "5", "--size", "32", "--seed", "2", "--out", str(out),
            "--shard-size", "2"]
    assert main(args) == 0
    before = (out / "shard-00001.zip").read_bytes()
    (out / "shard-00001.zip").unlink()
    again = synthesize(out, 4, 5, 32, seed=2, shard_size=2, progress=False)
    assert again["made"] == 2 and again["skipped"] == 2
    assert (out / "shard-00001.zip").read_bytes() == before
    with pytest.raises(ValueError, match="made with"):
        synthesize(out, 4, 5, 32, seed=3, shard_size=2, progress=False)
    sheet = tmp_path / "sheet.png"
    assert main(["world", "preview", str(out), "--out", str(sheet), "--clips", "2"]) == 0
    from hand2world.io import read_image

    img = read_image(sheet)
    assert img.shape[1] == 3 * 4 * 128 and img.shape[0] == 2 * (128 + 22)
    assert img.std() > 10


def test_renderer_projection_and_depth():
    from hand2world.world.gl import Material, WorldRenderer
    from hand2world.world.meshes import make_mesh

    r = WorldRenderer(48, 64)
    try:
        K = np.array([[50.0, 0, 30.0], [0, 50.0, 20.0], [0, 0, 1]])
        r.set_camera(K)
        r.set_light(np.array([0, 0, -1.0]), np.ones(3), np.full(3, 0.3))
        v, n, f = make_mesh("sphere", np.array([0.1, 0.1, 0.1]))
        h = r.add_mesh(v, n, f, Material((1.0, 0.0, 0.0)))
        pose = np.eye(4)
        pose[:3, 3] = [0.1, 0.0, 0.95]  # base at z 0.95 along the object's z: centre at (0.1, 0, 1.0) (w2c = I)
        r.set_pose(h, pose)
        r.add_hand(2, len(v), f, Material((0.0, 1.0, 0.0)))
        r.update_hand(2, v + [0.15, 0.0, 1.45], n)  # a second sphere right behind the first (centre z 1.5)
        rgb, depth, visible, full = r.render(np.eye(4))
    finally:
        r.release()
    ys, xs = np.nonzero(rgb[..., 0] > 0)
    # centroid at K @ (0.1, 0, 1) = (35, 20); radius ~ 50 * 0.05 = 2.5 px
    assert abs(xs.mean() + 0.5 - 35.0) < 0.3 and abs(ys.mean() + 0.5 - 20.0) < 0.3
    assert abs(depth[20, 35] - 0.95) < 0.01 and depth[0, 0] == 0.0
    assert full[20, 35] == 2 and visible[20, 35] == 0  # the hand sphere is fully hidden by the red one
    assert not (visible & ~full).any()


def test_push_slides_and_grasp_carries():
    from hand2world.world.actions import Script
    from hand2world.world.dynamics import simulate
    from hand2world.world.gl import Material
    from hand2world.world.rig import PosedHand
    from hand2world.world.scene import SceneObject

    fps, T = 16.0, 40
    box = SceneObject("box", np.array([0.06, 0.06, 0.08]), Material((1, 0, 0)), np.eye(4))
    # a hand "plate" of points moving along +y through the box for 10 frames, then stopping
    grid = np.stack(np.meshgrid(np.linspace(-0.03, 0.03, 7), [0.0], np.linspace(0.01, 0.06, 6)), -1).reshape(-1, 3)
    y = np.concatenate([np.linspace(-0.08, 0.02, 11), np.full(T - 11, 0.02)])
    verts = grid[None] + np.stack([np.zeros(T), y, np.zeros(T)], -1)[:, None]
    hand = PosedHand(np.repeat(verts, 3, axis=1), np.zeros((T, 21, 3)), np.tile(np.eye(3), (T, 1, 1)),
                     np.zeros((T, 3)), np.zeros((T, 45)), np.zeros(10), "right")
    poses = simulate([box], [hand], Script("push", 0, []), fps)
    yb = poses[0, :, 1, 3]
    assert yb[10] > 0.04  # pushed ahead of the hand (front face at hand y + 0.03)
    assert yb[-1] > yb[10] + 1e-3  # kept sliding after the hand stopped
    assert np.allclose(yb[-3:], yb[-1])  # and friction stopped it
    # grasp: attached between 0.5 s and 1.5 s, carried up and over, then falls back to the table
    wrist = np.stack([np.linspace(0, 0.2, T), np.zeros(T), 0.1 * np.sin(np.linspace(0, np.pi, T))], -1)
    far = PosedHand(np.full((T, 3, 3), 5.0), np.zeros((T, 21, 3)), np.tile(np.eye(3), (T, 1, 1)), wrist,
                    np.zeros((T, 45)), np.zeros(10), "right")
    poses = simulate([box], [far], Script("grasp", 0, [], attach_t=0.5, release_t=1.5, grasp_track=0), fps)
    p = poses[0, :, :3, 3]
    assert np.allclose(p[:8], 0.0) and p[20, 2] > 0.03 and p[20, 0] > 0.05  # follows the wrist from frame 8
    np.testing.assert_allclose(p[12:24], wrist[12:24] - wrist[8], atol=1e-9)
    assert p[-1, 2] == 0.0 and p[-1, 0] > 0.07  # released in the air: fell, rests on the table further along


def test_shadows_darken_the_table_under_an_object():
    from hand2world.world.gl import Material, WorldRenderer
    from hand2world.world.meshes import make_mesh

    def render(shadows: bool) -> np.ndarray:
        r = WorldRenderer(32, 32, shadow_size=256 if shadows else 0)
        try:
            r.set_camera(np.array([[40.0, 0, 16], [0, 40.0, 16], [0, 0, 1]]))
            r.set_light(np.array([0.0, 0.0, 1.0]), np.ones(3), np.full(3, 0.2))  # sun straight above
            table = r.add_mesh(*make_mesh("box", np.array([1.0, 1.0, 0.02])), Material((0.8, 0.8, 0.8)))
            pose = np.eye(4)
            pose[2, 3] = -0.02
            r.set_pose(table, pose)
            ball = r.add_mesh(*make_mesh("sphere", np.array([0.1, 0.1, 0.1])), Material((0.8, 0.8, 0.8)))
            pose = np.eye(4)
            pose[:3, 3] = [0.2, 0.0, 0.1]  # floating beside the view axis, 10 cm above the table
            r.set_pose(ball, pose)
            w2c = np.eye(4)  # camera 1 m above the table looking straight down: x right, y down, z forward
            w2c[:3, :3] = [[1, 0, 0], [0, -1, 0], [0, 0, -1]]
            w2c[2, 3] = 1.0
            return r.render(w2c)[0].astype(int).sum(-1)
        finally:
            r.release()

    lit, shaded = render(False), render(True)
    # the sun is straight above, so the ball's shadow is the disc straight below it; seen from the camera
    # (off the ball's axis, perspective) part of that disc shows beside the ball
    assert abs(shaded[4, 4] - lit[4, 4]) <= 1  # far from the ball: same light
    assert (shaded < lit - 30).any()  # the shadow darkens some table pixels next to the ball


def test_forearms_change_pixels_not_ground_truth(tmp_path):
    """``arms=True`` draws a forearm on each hand: the RGB changes, every hand label stays the hands' own
    (the forearm only occludes), and a dataset whose world.json predates the setting still resumes."""
    import json

    plain = synthesize(tmp_path / "plain", 2, 5, 64, seed=3, workers=1, progress=False, arms=False)
    arms = synthesize(tmp_path / "arms", 2, 5, 64, seed=3, workers=1, progress=False)  # forearms by default
    assert plain["made"] == arms["made"] == 2
    a, b = ClipDataset(tmp_path / "plain"), ClipDataset(tmp_path / "arms")
    changed = 0
    for i in range(2):
        ca, cb = a[i], b[i]
        for key in ("joints3d", "joints2d", "hand_params", "hand_mask", "control", "c2w"):
            np.testing.assert_array_equal(ca[key], cb[key], err_msg=key)
        assert not (cb["visible_mask"] & ~ca["visible_mask"]).any()  # a forearm can only hide hand pixels
        changed += int((ca["video"] != cb["video"]).any(-1).sum())
    assert changed > 50
    # a world.json that predates a setting holds its legacy value: an old arm-less dataset of this style resumes
    # only as arm-less; one that predates the style (style 1 clips) never takes clips of this style
    cfg = tmp_path / "plain" / "world.json"
    old = json.loads(cfg.read_text())
    old.pop("arms")
    cfg.write_text(json.dumps(old))
    assert synthesize(tmp_path / "plain", 2, 5, 64, seed=3, workers=1, progress=False, arms=False)["skipped"] == 2
    with pytest.raises(ValueError):
        synthesize(tmp_path / "plain", 2, 5, 64, seed=3, workers=1, progress=False)
    old.pop("style")
    cfg.write_text(json.dumps(old))
    with pytest.raises(ValueError, match="style"):
        synthesize(tmp_path / "plain", 2, 5, 64, seed=3, workers=1, progress=False, arms=False)


def test_scene_photo_has_no_hands_arms_or_shadows(world):
    """``scene`` is frame 0's camera without hands, forearms or their shadows: where frame 0 shows neither a hand,
    an arm nor a shadow of one, the two images agree; where it shows a hand they differ; in a still-head clip whose
    objects do not move, every later frame equals the scene photo outside what the hands and arms change."""
    _, ds = world
    agree = differ = 0
    for i in range(CLIPS):
        c = ds[i]
        scene, first = c["scene"].astype(int), c["video"][0].astype(int)
        assert c["scene"].shape == (SIZE, SIZE, 3) and c["scene"].dtype == np.uint8
        hand = c["visible_mask"][0]
        if hand.sum() >= 10:
            differ += int(np.abs(scene - first).sum(-1)[hand].mean() > 15)  # coverage edges may match the photo
            agree += 1
    assert agree >= 10 and differ == agree, (differ, agree)
    # one clip checked pixel by pixel: a still head and resting objects leave the scene photo unchanged outside
    # the pixels that changed between frame 0 and a frame with the hand elsewhere
    found = 0
    for i in range(CLIPS):
        c, meta = ds[i], ds.meta(i)
        if meta["head_moving"] or meta["objects_path"] > 0 or not c["visible_mask"].any():
            continue
        # [T, H, W]: pixels equal to the scene photo up to the camera's sensor noise (sigma <= 3 levels)
        same = (np.abs(c["video"].astype(int) - c["scene"][None].astype(int)) <= 12).all(-1)
        assert same.mean() > 0.5, i  # most of each frame is the scene as photographed
        assert same[c["visible_mask"]].mean() < 0.3, i  # visible hand pixels are not the photo's (but coverage edges)
        found += 1
    assert found >= 2


def test_pool_fails_fast_when_workers_cannot_start(tmp_path):
    """A script fed on stdin cannot start spawned workers (they re-import ``<stdin>``): ``synthesize`` must stop
    with ``WorkerPoolError`` and say why, instead of respawning dead workers forever."""
    import subprocess
    import sys
    import time

    script = (f"from hand2world.world.synth import synthesize\n"
              f"synthesize({str(tmp_path / 'ds')!r}, 4, 3, 32, seed=1, workers=2, shard_size=1, progress=False)\n")
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-"], input=script, capture_output=True, text=True, timeout=240,
                          cwd=tmp_path)
    assert proc.returncode != 0
    assert "WorkerPoolError" in proc.stderr and "stdin" in proc.stderr, proc.stderr[-2000:]
    assert time.monotonic() - t0 < 120
    assert not list((tmp_path / "ds").glob("shard-*.zip"))


@pytest.fixture
def photo_dir(tmp_path, monkeypatch):
    """``$HAND2WORLD_PHOTOS`` pointed at a fresh folder; the per-process pool cache cleared around the test."""
    from hand2world.world.photos import photo_pool

    folder = tmp_path / "photos"
    folder.mkdir()
    monkeypatch.setenv("HAND2WORLD_PHOTOS", str(folder))
    photo_pool.cache_clear()
    yield folder
    photo_pool.cache_clear()


def test_texture_photos_never_include_the_serve_scenes(photo_dir, monkeypatch):
    """The photos ``serve`` offers as built-in scenes are excluded by name, from the default sources (skimage's
    data folder holds them beside the textures) and from a user's folder alike."""
    import cv2

    from hand2world.paths import EXCLUDED_PHOTOS, texture_photo_files
    from server.scenes import BUILTIN_SCENES

    assert set(BUILTIN_SCENES) <= set(EXCLUDED_PHOTOS)
    img = np.full((8, 8, 3), 128, np.uint8)
    for name in ("coffee.png", "Astronaut.jpg", "rocket.jpg", "wood.png"):
        cv2.imwrite(str(photo_dir / name), img)
    assert [f.name for f in texture_photo_files()] == ["wood.png"]
    monkeypatch.delenv("HAND2WORLD_PHOTOS")
    default = texture_photo_files()
    skimage_data = pytest.importorskip("skimage.data")
    from pathlib import Path

    assert (Path(skimage_data.__file__).parent / "coffee.png").is_file()  # there, and still never a texture
    assert not {f.stem.lower() for f in default} & set(EXCLUDED_PHOTOS)
    assert {"brick", "grass", "gravel"} <= {f.stem for f in default}


def test_photo_textures_show_and_fall_back(photo_dir, tmp_path, caplog):
    """A photo pool textures surfaces (a pure-magenta photo turns table/floor/wall pixels magenta, and the clip
    says which photo it used); the pool's digest is recorded, and a different pool cannot resume the dataset;
    with no photo at all the world warns and renders exactly what it renders with photos off."""
    import json
    import logging

    import cv2

    from hand2world.world.photos import photo_pool

    magenta = np.zeros((64, 64, 3), np.uint8)
    magenta[..., [0, 2]] = 255  # BGR: blue + red
    cv2.imwrite(str(photo_dir / "magenta.png"), magenta)
    res = synthesize(tmp_path / "p", 3, 3, 48, seed=11, workers=1, progress=False)
    ds = ClipDataset(tmp_path / "p")
    metas = [ds.meta(i) for i in range(3)]
    assert all(m["photos"] in ("", "magenta") for m in metas) and any(m["photos"] for m in metas)
    cfg = json.loads((tmp_path / "p" / "world.json").read_text())
    assert cfg["photo_pool"] == photo_pool().digest != "" and res["index"]["world"]["photo_pool"] == cfg["photo_pool"]
    for i, m in enumerate(metas):
        v = ds[i]["scene"].astype(int)
        mag = ((v[..., 0] > 2 * v[..., 1] + 10) & (v[..., 2] > 2 * v[..., 1] + 10)).mean()
        assert (mag > 0.05) == bool(m["photos"]), (i, mag, m["photos"])
    cv2.imwrite(str(photo_dir / "more.png"), magenta[:32])
    photo_pool.cache_clear()
    with pytest.raises(ValueError, match="photo_pool"):
        synthesize(tmp_path / "p", 3, 3, 48, seed=11, workers=1, progress=False)
    for f in photo_dir.iterdir():
        f.unlink()
    photo_pool.cache_clear()
    with caplog.at_level(logging.WARNING, logger="hand2world.world.photos"):
        synthesize(tmp_path / "none", 2, 3, 48, seed=11, workers=1, progress=False)
    assert "no texture photos" in caplog.text
    synthesize(tmp_path / "off", 2, 3, 48, seed=11, workers=1, progress=False, photos=False)
    a, b = ClipDataset(tmp_path / "none"), ClipDataset(tmp_path / "off")
    for i in range(2):
        np.testing.assert_array_equal(a[i]["video"], b[i]["video"])
        np.testing.assert_array_equal(a[i]["scene"], b[i]["scene"])


def test_realism_counts_visible_hand_frames_only(tmp_path):
    """``world realism``: MediaPipe's rate over the frames whose ground truth shows a hand. A real palm photo in two
    hand frames, a blank frame that claims a hand (a miss), a blank frame without one and a clip without any (not
    counted): 2/3."""
    import cv2

    from hand2world.cli import main
    from hand2world.data import ClipWriter, actions_from
    from hand2world.io import read_image
    from hand2world.paths import asset_path
    from hand2world.world.realism import realism

    for name in ("hand_landmarker.task", "handSrc.jpg"):
        if not asset_path(name, must_exist=False).is_file():
            pytest.skip(f"{name} missing: run `make setup`")
    palm = cv2.resize(read_image(asset_path("handSrc.jpg")), (192, 192), interpolation=cv2.INTER_AREA)
    t, s = 4, 192
    video = np.stack([palm, palm, np.full_like(palm, 90), np.full_like(palm, 90)])
    vis = np.zeros((t, s, s), bool)
    vis[:3, 40:150, 40:150] = True
    j = np.full((t, 2, 21, 3), np.nan, np.float32)
    c2w = np.tile(np.eye(4, dtype=np.float32), (t, 1, 1))
    clip = {"video": video, "control": np.zeros_like(video), "K": np.eye(3, dtype=np.float32), "c2w": c2w,
            "joints3d": j, "joints2d": j[..., :2], "hand_mask": vis, "visible_mask": vis,
            "depth": np.ones((t, s, s), np.float32), "actions": actions_from(c2w, j),
            "meta": {"action": "wave", "split": "test", "seed": 0, "skin_tone": 0.9}}
    none = {**clip, "hand_mask": np.zeros_like(vis), "visible_mask": np.zeros_like(vis)}  # a clip without a hand
    with ClipWriter(tmp_path / "ds") as w:
        w.add(none)
        w.add(clip)
    r = realism(tmp_path / "ds", sizes=(192,))
    assert r["hand_frames"] == 3 and r["frames"] == 8 and r["data_size"] == 192
    assert r["rates"][192] == pytest.approx(2 / 3)
    assert r["by_tone"][192]["dark"] == pytest.approx(2 / 3) and r["by_tone"][192]["light"] is None
    assert r["inside_frames"] == 3 and r["by_framing"][192] == {"inside": pytest.approx(2 / 3), "cut": None}
    assert main(["world", "realism", "--data", str(tmp_path / "ds"), "--sizes", "192"]) == 0
