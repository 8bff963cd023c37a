"""The licence-clean default hand model, built once at set-up from the WebXR generic-hand GLBs.

Source: npm ``@webxr-input-profiles/assets`` ``dist/profiles/generic-hand/{left,right}.glb``
(MIT, Copyright (c) 2019 Amazon): 1,360 vertices skinned to the 25-joint WebXR hand skeleton.

Design choices:
- The GLB is parsed here with numpy (12-byte header, JSON chunk, BIN chunk; accessors and buffer
  views, interleaved strides and normalised integer weights handled); trimesh drops skin data.
- Bind pose: joint placements come from the inverse bind matrices (``inv(IBM)``), which by
  definition place the skeleton in the mesh's bind space; the node hierarchy's world transforms
  are checked against them. The GLBs are in metres.
- 25 WebXR joints -> 16 MANO-like articulated joints: the four non-thumb metacarpals merge into
  the wrist, each tip merges into its distal joint (thumb: CMC = thumb-metacarpal, MCP =
  thumb-phalanx-proximal, IP = thumb-phalanx-distal; fingers: MCP = phalanx-proximal, PIP =
  intermediate, DIP = distal). The 21 output joints use fingertip *vertices* (the most distal
  surface vertex along each distal bone), as MANO does.
- Canonical frame (both sides), OpenCV-like: origin at the wrist joint; the wrist -> middle-MCP
  direction is ``-y`` (fingers "up" in an image); ``+z`` is the palm normal (the palm faces
  ``+z``, away from a camera at the origin, i.e. a person's own raised hand seen egocentrically,
  back of the hand to the camera); the thumb lies towards ``-x`` on the right hand and ``+x`` on
  the left. The left model is (nearly, 2 mm) the mirror image ``x -> -x`` of the right model; a
  right pose ``(wx, wy, wz)`` mirrors to the left pose ``(wx, -wy, -wz)``.
- Ten designed linear shape directions (``betas``; one unit ~ one standard deviation of adult
  hands): 0 overall scale (6 %), 1 palm length (5 %), 2 palm width (5 %), 3 palm thickness
  (10 %), 4 finger thickness (10 %), 5-9 thumb/index/middle/ring/pinky length (5 % each). Each is
  a per-bone displacement field anchored at its joint; children follow their parent's displaced
  attachment point, vertices take the skin-weighted blend, so bones never detach. The thickness
  directions move vertices only (joints stay), the others move vertices and joints together.
- ``joint_frames`` stores each joint's anatomical axes (columns: flexion, abduction = dorsal
  normal, twist = bone direction) from the WebXR joint frames; a positive rotation about the
  flexion axis curls a finger towards the palm on both sides.
- Vertices duplicated at the GLB's texture seams are welded (1,360 -> 1,159 vertices), which makes
  the surface one closed 2-manifold. Faces are wound counter-clockwise seen from outside,
  checked with the generalised winding number of the joints (which also verifies that the
  bind-pose joints lie inside the mesh).
- Output is a small compressed ``.npz`` (~95 KB, loads in ~20 ms) written atomically.
"""

from __future__ import annotations

import json
import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hand2world import paths
from hand2world.hands.skeleton import (
    ARTICULATED_JOINT_NAMES,
    FINGERS,
    MEDIAPIPE_FROM_INTERNAL,
    MEDIAPIPE_JOINT_NAMES,
    OPEN_SHAPE_NAMES,
    PARENTS,
    SIDES,
)

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
GLB_RELATIVE = "node_modules/@webxr-input-profiles/assets/dist/profiles/generic-hand/{side}.glb"
LICENCE = (
    "Mesh, faces and skin weights derived from @webxr-input-profiles/assets "
    "dist/profiles/generic-hand/{side}.glb, MIT License, Copyright (c) 2019 Amazon. "
    "Shape directions and joint mapping designed by hand2world."
)

WEBXR_JOINT_NAMES: tuple[str, ...] = (
    "wrist",
    "thumb-metacarpal",
    "thumb-phalanx-proximal",
    "thumb-phalanx-distal",
    "thumb-tip",
    *(
        f"{finger}-finger-{part}"
        for finger in ("index", "middle", "ring")
        for part in ("metacarpal", "phalanx-proximal", "phalanx-intermediate", "phalanx-distal", "tip")
    ),
    "pinky-finger-metacarpal",
    "pinky-finger-phalanx-proximal",
    "pinky-finger-phalanx-intermediate",
    "pinky-finger-phalanx-distal",
    "pinky-finger-tip",
)


def _webxr_mapping() -> tuple[dict[str, int], list[str], list[str]]:
    """WebXR joint name -> articulated joint (skin merge), node per articulated joint, tip nodes."""
    merge = {"wrist": 0}
    joint_nodes = ["wrist"]
    tip_nodes = []
    for f, finger in enumerate(FINGERS):
        base = 1 + 3 * f
        if finger == "thumb":
            parts = ["thumb-metacarpal", "thumb-phalanx-proximal", "thumb-phalanx-distal"]
            tip = "thumb-tip"
        else:
            prefix = f"{finger}-finger-"
            merge[prefix + "metacarpal"] = 0
            parts = [prefix + p for p in ("phalanx-proximal", "phalanx-intermediate", "phalanx-distal")]
            tip = prefix + "tip"
        for k, name in enumerate(parts):
            merge[name] = base + k
        merge[tip] = base + 2
        joint_nodes += parts
        tip_nodes.append(tip)
    return merge, joint_nodes, tip_nodes


# ----------------------------------------------------------------------------------------------
# GLB parsing
# ----------------------------------------------------------------------------------------------

_COMPONENT = {
    5120: np.int8,
    5121: np.uint8,
    5122: np.int16,
    5123: np.uint16,
    5125: np.uint32,
    5126: np.float32,
}
_NUM = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT2": 4, "MAT3": 9, "MAT4": 16}


@dataclass
class GLBSkin:
    """The skinned mesh of a GLB in its bind space.

    Attributes:
        positions: ``[V, 3]`` float64 bind-pose vertices.
        faces: ``[F, 3]`` int64 triangle indices.
        joints: ``[V, K]`` skin-joint indices per vertex (into ``joint_names``).
        weights: ``[V, K]`` matching weights (rows sum to 1).
        joint_names: names of the skin joints.
        bind_joints: ``[J, 4, 4]`` joint placement in bind space, ``inv(inverseBindMatrix)``.
        node_world: ``[J, 4, 4]`` world transform of each joint node from the node hierarchy.
    """

    positions: np.ndarray
    faces: np.ndarray
    joints: np.ndarray
    weights: np.ndarray
    joint_names: list[str]
    bind_joints: np.ndarray
    node_world: np.ndarray


def _quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """glTF quaternion ``(x, y, z, w)`` -> ``[3, 3]`` rotation."""
    x, y, z, w = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def _node_local(node: dict) -> np.ndarray:
    if "matrix" in node:
        return np.asarray(node["matrix"], dtype=np.float64).reshape(4, 4).T  # column-major
    m = np.eye(4)
    rot = _quat_to_matrix(node.get("rotation", [0, 0, 0, 1]))
    m[:3, :3] = rot * np.asarray(node.get("scale", [1, 1, 1]), dtype=np.float64)[None, :]
    m[:3, 3] = node.get("translation", [0, 0, 0])
    return m


def read_glb_skin(path: str | os.PathLike) -> GLBSkin:
    """Parse the first skinned mesh primitive of a binary glTF (``.glb``) file."""
    data = Path(path).read_bytes()
    magic, version, length = struct.unpack_from("<4sII", data, 0)
    if magic != b"glTF" or version != 2:
        raise ValueError(f"{path}: not a glTF 2.0 binary file")
    offset, doc, binary = 12, None, b""
    while offset < min(length, len(data)):
        chunk_len, chunk_type = struct.unpack_from("<II", data, offset)
        chunk = data[offset + 8 : offset + 8 + chunk_len]
        if chunk_type == 0x4E4F534A:  # JSON
            doc = json.loads(chunk.decode("utf-8"))
        elif chunk_type == 0x004E4942 and not binary:  # BIN
            binary = chunk
        offset += 8 + chunk_len
    if doc is None:
        raise ValueError(f"{path}: no JSON chunk")

    def accessor(index: int) -> np.ndarray:
        acc = doc["accessors"][index]
        if "sparse" in acc or "bufferView" not in acc:
            raise ValueError(f"{path}: sparse/empty accessors are not supported")
        view = doc["bufferViews"][acc["bufferView"]]
        if view.get("buffer", 0) != 0:
            raise ValueError(f"{path}: only the GLB's own binary buffer is supported")
        dtype = np.dtype(_COMPONENT[acc["componentType"]]).newbyteorder("<")
        ncomp = _NUM[acc["type"]]
        start = view.get("byteOffset", 0) + acc.get("byteOffset", 0)
        stride = view.get("byteStride") or dtype.itemsize * ncomp
        count = acc["count"]
        rows = np.ndarray(
            shape=(count, ncomp), dtype=dtype, buffer=binary, offset=start, strides=(stride, dtype.itemsize)
        ).copy()
        if acc.get("normalized", False) and dtype.kind in "ui":
            rows = rows.astype(np.float64) / np.iinfo(dtype).max
        return rows

    mesh_node = next((i for i, n in enumerate(doc["nodes"]) if "mesh" in n and "skin" in n), None)
    if mesh_node is None:
        raise ValueError(f"{path}: no skinned mesh node")
    node = doc["nodes"][mesh_node]
    prim = doc["meshes"][node["mesh"]]["primitives"][0]
    attrs = prim["attributes"]
    positions = accessor(attrs["POSITION"]).astype(np.float64)
    if "indices" in prim:
        faces = accessor(prim["indices"]).reshape(-1, 3).astype(np.int64)
    else:
        faces = np.arange(len(positions)).reshape(-1, 3)
    if prim.get("mode", 4) != 4:
        raise ValueError(f"{path}: only triangle lists are supported")
    joints = [accessor(attrs[k]) for k in sorted(attrs) if k.startswith("JOINTS_")]
    weights = [accessor(attrs[k]) for k in sorted(attrs) if k.startswith("WEIGHTS_")]
    joints_a = np.concatenate(joints, axis=1).astype(np.int64)
    weights_a = np.concatenate(weights, axis=1).astype(np.float64)
    weights_a /= weights_a.sum(axis=1, keepdims=True)

    skin = doc["skins"][node["skin"]]
    joint_nodes = skin["joints"]
    ibm = accessor(skin["inverseBindMatrices"]).reshape(-1, 4, 4).transpose(0, 2, 1).astype(np.float64)

    parent = {c: i for i, n in enumerate(doc["nodes"]) for c in n.get("children", [])}

    def world(i: int) -> np.ndarray:
        m = _node_local(doc["nodes"][i])
        while i in parent:
            i = parent[i]
            m = _node_local(doc["nodes"][i]) @ m
        return m

    return GLBSkin(
        positions=positions,
        faces=faces,
        joints=joints_a,
        weights=weights_a,
        joint_names=[doc["nodes"][j].get("name", str(j)) for j in joint_nodes],
        bind_joints=np.linalg.inv(ibm),
        node_world=np.stack([world(j) for j in joint_nodes]),
    )


# ----------------------------------------------------------------------------------------------
# Geometry helpers
# ----------------------------------------------------------------------------------------------


def winding_numbers(vertices: np.ndarray, faces: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Generalised winding number of ``points`` ``[P, 3]`` w.r.t. a triangle mesh.

    ~1 inside a closed, outward-wound mesh, ~0 outside, ~-1 inside an inward-wound one (open
    meshes give fractional values near the hole).
    """
    tri = vertices[faces][None] - points[:, None, None, :]  # [P, F, 3, 3]
    a, b, c = tri[..., 0, :], tri[..., 1, :], tri[..., 2, :]
    la, lb, lc = (np.linalg.norm(x, axis=-1) for x in (a, b, c))
    det = np.einsum("pfi,pfi->pf", a, np.cross(b, c))
    den = la * lb * lc + (a * b).sum(-1) * lc + (b * c).sum(-1) * la + (c * a).sum(-1) * lb
    return np.arctan2(det, den).sum(-1) / (2.0 * np.pi)


def default_glb_path(side: str) -> Path:
    """Where npm installed the WebXR generic-hand GLB for ``side``."""
    return paths.client_dir() / GLB_RELATIVE.format(side=side)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _weld(verts: np.ndarray, faces: np.ndarray, weights: np.ndarray, tol: float = 1e-6):
    """Merge vertices duplicated at UV/normal seams (same position), keeping first-seen order.

    The GLB splits the surface at texture seams; welding makes it one closed manifold, which
    the winding check and mesh consumers (normals, silhouettes) rely on.
    """
    key = np.round(verts / tol).astype(np.int64)
    _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first)  # unique groups in order of first appearance
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    keep = first[order]
    new_faces = rank[inverse.reshape(-1)][faces]
    if np.abs(weights[keep][rank[inverse.reshape(-1)]] - weights).max() > 1e-5:
        raise ValueError("coincident vertices with different skin weights")
    return verts[keep], new_faces, weights[keep]


def _skeletal_field(bone_fields, joints: np.ndarray, verts: np.ndarray, weights: np.ndarray, propagate: bool):
    """Blend per-bone displacement fields into vertex and joint displacements.

    ``bone_fields[b]`` maps points ``[N, 3]`` to displacements ``[N, 3]`` (zero at joint ``b``) or
    is ``None``. With ``propagate`` a child joint moves with its parent's displaced attachment.
    Returns ``(dv [V, 3], dj [16, 3])``.
    """
    dj = np.zeros_like(joints)
    if propagate:
        for j in range(1, len(PARENTS)):
            p = PARENTS[j]
            field = bone_fields[p]
            dj[j] = dj[p] + (field(joints[j][None])[0] if field is not None else 0.0)
    dv = np.zeros_like(verts)
    for b, field in enumerate(bone_fields):
        local = field(verts) if field is not None else 0.0
        dv += weights[:, b : b + 1] * (dj[b][None] + local)
    return dv, dj


def _design_shapes(verts, joints, weights, bone_dirs):
    """The ten shape directions; returns ``(shapedirs [V,3,10], j_shapedirs [16,3,10], sigmas [10])``."""
    ex, ey, ez = np.eye(3)
    sigmas = np.array([0.06, 0.05, 0.05, 0.10, 0.10, 0.05, 0.05, 0.05, 0.05, 0.05])
    n = len(PARENTS)
    fields = []
    # 0 overall scale about the wrist
    fields.append(([(lambda x, j=j: x - joints[j]) for j in range(n)], True))
    # 1 palm length: stretch the palm towards the fingers (-y); the forearm stub (y > 0) stays
    fields.append(([lambda x: np.minimum(x[:, 1:2], 0.0) * ey] + [None] * (n - 1), True))
    # 2 palm width: spread across the palm about the middle-finger axis (x = 0)
    fields.append(([lambda x: x[:, 0:1] * ex] + [None] * (n - 1), True))
    # 3 palm thickness about the palm's mid-plane (the MCP/wrist joint plane), vertices only
    z0 = joints[[0, 4, 7, 10, 13], 2].mean()
    fields.append(([lambda x: (x[:, 2:3] - z0) * ez] + [None] * (n - 1), False))

    # 4 finger thickness: radial growth about every finger bone's axis, vertices only
    def radial(j):
        u = bone_dirs[j]
        return lambda x: (x - joints[j]) - ((x - joints[j]) @ u)[:, None] * u[None]

    fields.append(([None] + [radial(j) for j in range(1, n)], False))

    # 5-9 per-finger length: stretch each bone of that finger along its axis (distal side only)
    def axial(j):
        u = bone_dirs[j]
        return lambda x: np.maximum((x - joints[j]) @ u, 0.0)[:, None] * u[None]

    for f in range(5):
        bones = [None] * n
        for j in range(1 + 3 * f, 4 + 3 * f):
            bones[j] = axial(j)
        fields.append((bones, True))
    shapedirs = np.zeros((len(verts), 3, 10))
    j_shapedirs = np.zeros((n, 3, 10))
    for k, (bones, propagate) in enumerate(fields):
        dv, dj = _skeletal_field(bones, joints, verts, weights, propagate)
        shapedirs[:, :, k] = sigmas[k] * dv
        j_shapedirs[:, :, k] = sigmas[k] * dj
    return shapedirs, j_shapedirs, sigmas


# ----------------------------------------------------------------------------------------------
# Build
# ----------------------------------------------------------------------------------------------


def build_open_hand_arrays(side: str, glb_path: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """Convert a WebXR generic-hand GLB into the MANO-like arrays of the open model.

    Returns a dict with ``v_template [V,3]``, ``faces [F,3]``, ``weights [V,16]``,
    ``j_template [21,3]`` (MediaPipe order), ``shapedirs [V,3,10]``, ``j_shapedirs [21,3,10]``,
    ``parents [16]``, ``tip_vertex_ids [5]``, ``joint_frames [16,3,3]``, names and provenance.
    """
    if side not in SIDES:
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    glb_path = Path(glb_path) if glb_path is not None else default_glb_path(side)
    if not glb_path.is_file():
        raise FileNotFoundError(
            f"{glb_path} not found: run `npm ci` in {paths.client_dir()} "
            "(it installs @webxr-input-profiles/assets)"
        )
    skin = read_glb_skin(glb_path)
    merge, joint_nodes, tip_nodes = _webxr_mapping()
    missing = set(WEBXR_JOINT_NAMES) - set(skin.joint_names)
    if missing:
        raise ValueError(f"{glb_path}: missing WebXR joints {sorted(missing)}")
    name_to_skin = {name: i for i, name in enumerate(skin.joint_names)}
    drift = np.abs(skin.node_world[:, :3, 3] - skin.bind_joints[:, :3, 3]).max()
    if drift > 1e-4:
        log.warning(
            "%s: node rest pose differs from the bind pose by %.2g m; using the bind pose", glb_path, drift
        )

    # merge 25 skin joints into 16
    num_v = len(skin.positions)
    weights = np.zeros((num_v, len(PARENTS)))
    target = np.array([merge.get(name, -1) for name in skin.joint_names])
    if (target[skin.joints][skin.weights > 0] < 0).any():
        raise ValueError(f"{glb_path}: vertices weighted to joints outside the WebXR hand skeleton")
    np.add.at(
        weights,
        (np.repeat(np.arange(num_v), skin.joints.shape[1]), target[skin.joints].ravel()),
        skin.weights.ravel(),
    )
    weights /= weights.sum(axis=1, keepdims=True)

    bind_pos = {name: skin.bind_joints[i, :3, 3] for name, i in name_to_skin.items()}
    bind_rot = {name: skin.bind_joints[i, :3, :3] for name, i in name_to_skin.items()}
    joints = np.stack([bind_pos[n] for n in joint_nodes])  # [16, 3]
    tips = np.stack([bind_pos[n] for n in tip_nodes])  # [5, 3] tip joints (inside the fingertip)

    # canonical frame: wrist origin, fingers -y, palm normal +z, thumb -x (right) / +x (left)
    fingers_dir = _unit(joints[7] - joints[0])  # wrist -> middle MCP
    across = joints[4] - joints[13]  # pinky MCP -> index MCP: towards the thumb side
    across = _unit(across - (across @ fingers_dir) * fingers_dir)
    palm = np.cross(across, fingers_dir) if side == "right" else np.cross(fingers_dir, across)
    x_axis = -across if side == "right" else across
    rot = np.stack([x_axis, -fingers_dir, palm])  # rows: canonical axes in GLB coordinates
    assert np.linalg.det(rot) > 0.999
    origin = joints[0].copy()

    def to_canonical(p: np.ndarray) -> np.ndarray:
        return (p - origin) @ rot.T

    verts, faces, weights = _weld(to_canonical(skin.positions), skin.faces, weights)
    joints = to_canonical(joints)
    tips = to_canonical(tips)
    # anatomical joint frames from the WebXR joint frames (-Z along the bone, +Y out of the back)
    frames = np.stack([rot @ bind_rot[n] for n in joint_nodes])
    frames = frames / np.linalg.norm(frames, axis=1, keepdims=True)
    frames = np.stack([-frames[:, :, 0], frames[:, :, 1], -frames[:, :, 2]], axis=-1)
    frames[0] = np.eye(3)

    size = np.linalg.norm(tips[2] - joints[0])
    if not 0.1 < size < 0.3:
        raise ValueError(f"{glb_path}: wrist-to-middle-tip distance {size:.3f} is not a hand in metres")

    inside = winding_numbers(verts, faces, joints)
    if np.median(inside) < 0:
        log.info("%s: faces wound inwards; flipping", glb_path)
        faces = faces[:, ::-1].copy()
        inside = -inside
    if (inside < 0.5).any():
        raise ValueError(f"{glb_path}: bind-pose joints outside the mesh (winding numbers {inside.round(2)})")

    # bone directions (towards the child joint, or the tip joint for distal bones)
    bone_dirs = np.zeros_like(joints)
    for f in range(5):
        chain = [joints[1 + 3 * f], joints[2 + 3 * f], joints[3 + 3 * f], tips[f]]
        for k in range(3):
            bone_dirs[1 + 3 * f + k] = _unit(chain[k + 1] - chain[k])

    # fingertip vertex: the most distal vertex along each distal bone among that bone's vertices
    tip_ids = []
    for f in range(5):
        distal = 3 + 3 * f
        candidates = np.flatnonzero(weights[:, distal] > 0.5)
        reach = (verts[candidates] - joints[distal]) @ bone_dirs[distal]
        tip_ids.append(int(candidates[np.argmax(reach)]))
    tip_ids = np.array(tip_ids)

    shapedirs, j_shapedirs16, sigmas = _design_shapes(verts, joints, weights, bone_dirs)
    j21 = np.concatenate([joints, verts[tip_ids]])[list(MEDIAPIPE_FROM_INTERNAL)]
    js21 = np.concatenate([j_shapedirs16, shapedirs[tip_ids]])[list(MEDIAPIPE_FROM_INTERNAL)]

    return {
        "format_version": np.array(FORMAT_VERSION),
        "v_template": verts.astype(np.float32),
        "faces": faces.astype(np.int32),
        "weights": weights.astype(np.float32),
        "j_template": j21.astype(np.float32),
        "shapedirs": shapedirs.astype(np.float32),
        "j_shapedirs": js21.astype(np.float32),
        "parents": np.array(PARENTS, dtype=np.int32),
        "tip_vertex_ids": tip_ids.astype(np.int32),
        "joint_frames": frames.astype(np.float32),
        "shape_names": np.array(OPEN_SHAPE_NAMES),
        "shape_sigmas": sigmas.astype(np.float32),
        "joint_names": np.array(MEDIAPIPE_JOINT_NAMES),
        "articulated_joint_names": np.array(ARTICULATED_JOINT_NAMES),
        "side": np.array(side),
        "source": np.array(f"@webxr-input-profiles/assets/dist/profiles/generic-hand/{side}.glb"),
        "licence": np.array(LICENCE.format(side=side)),
    }


def build_open_hand(
    side: str, glb_path: str | os.PathLike | None = None, out: str | os.PathLike | None = None
) -> Path:
    """Build the open hand model for ``side`` and write it atomically.

    Args:
        side: ``"right"`` or ``"left"``.
        glb_path: source GLB; default: the npm-installed WebXR generic hand under
            ``paths.client_dir()``.
        out: output ``.npz``; default ``paths.asset_path("open_hand_{side}.npz")``.
    Returns:
        the written path. Re-running overwrites the file atomically (safe to call at every set-up).
    """
    arrays = build_open_hand_arrays(side, glb_path)
    out = Path(out) if out is not None else paths.asset_path(f"open_hand_{side}.npz", must_exist=False)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("wrote open %s hand model to %s (%d bytes)", side, out, out.stat().st_size)
    return out


def load_open_hand(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read an open-model ``.npz`` written by ``build_open_hand`` (no pickle)."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    if int(arrays.get("format_version", 0)) != FORMAT_VERSION:
        raise ValueError(
            f"{path}: format version {arrays.get('format_version')} != {FORMAT_VERSION}; rebuild it"
        )
    return arrays
