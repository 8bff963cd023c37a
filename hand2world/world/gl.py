"""Headless OpenGL renderer of the tabletop world (moderngl over EGL: Mesa llvmpipe on CPU, any GPU).

Design choices:
- One context and one framebuffer per process (``WorldRenderer`` is created once per worker
  and reused for every clip; meshes of a clip are uploaded once and released after it).
- Projection straight from OpenCV intrinsics: clip ``x = (2 fx / W) x + (2 cx / W - 1) z``,
  ``y = (2 fy / H) y + (2 cy / H - 1) z``, ``w = z`` for camera coordinates (x right, y down,
  z forward). Image row ``v`` maps to NDC ``y = 2 v / H - 1``, so framebuffer row 0 (GL's
  bottom row) is image row 0 and the read-back needs no flip. Samples at pixel centres,
  like ``hand2world.geometry``.
- One shaded pass gives RGB and, through a second render target (R32F), the camera z-depth of
  the nearest surface. Real depth test (GL_LESS); no culling: both sides of every triangle
  are drawn and lit (normals are flipped toward the viewer).
- Hand masks are *coverage* masks: a pixel belongs to a hand when the hand covers any of its
  ``mask_scale x mask_scale`` sub-samples (default 5x5; with an odd scale the middle sample is
  the pixel centre the shaded pass uses, and the projection matrix is the same at any scale).
  Two cheap id-only passes at that resolution, scissored to the hands' bounding box (projected
  vertices + 1 px): hands alone (the full hand mask, nothing occludes it) and the scene's
  depth then the hands (hand pixels not hidden by anything).
  Coverage rather than centre sampling keeps thin fingertips in the mask at 64-128 px (a
  fingertip joint is a surface vertex, so its pixel is always touched by the hand), and since
  both masks use the same sub-samples the visible mask is exactly a subset of the full one.
- Materials are procedural in the fragment shader (solid, checker, stripes, wood, noise,
  tiles, skin) from two colours and a scale, evaluated on texture coordinates that move with
  the surface: a mesh's own frame for rigid meshes, a static per-vertex copy for hands (their
  first-frame surface in the hand's frame), so skin detail stays on the skin; nothing is
  uploaded per procedural texture. Skin is 3-D noise (blotches, grain, marks, palm creases) plus a
  palm-side tone, lit with wrap lighting. Real photographs are image textures on the same
  planar coordinates (``set_photo`` uploads each once per renderer, with mipmaps; a material
  picks one with a tile size, rotation, crop, tint and saturation; mirrored repeats hide seams).
- Lighting: hemispheric ambient (sky from above, a bounce from below) + one directional key
  light (Lambert, or wrapped for skin) + a Blinn-Phong highlight. The key light casts shadows
  (hands and arms on the table, objects on each other): an orthographic depth map along the
  light (1024², covering the table) of the casters (objects, hands, arms; the table and room
  only receive) rendered every frame with the id-only program, sampled with percentage-closer
  soft shadows (a 16-texel blocker search in 4 gathers, then 16 bilinear PCF taps on a fixed
  Poisson disk, smooth rather than noisy; a bias that grows with the surface's slope to the
  light and the tap radius, so wide filters do not shadow a surface by itself): the penumbra
  grows with the caster-receiver distance times the light's angular size
  (``set_light(softness=...)``), so shadows range from hard to soft per clip and harden where
  a hand touches the table. Colours pass a soft shoulder above 0.8 instead of a
  hard clip (bright warm light keeps skin gradations).
- ``LP_NUM_THREADS`` (llvmpipe's raster threads) is left to the caller: worker processes
  set it to 1 so two workers use two cores without oversubscription.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import moderngl
import numpy as np

log = logging.getLogger(__name__)

__all__ = ["PATTERNS", "Material", "WorldRenderer", "projection_from_K"]

#: procedural patterns (``Material.pattern``)
PATTERNS: tuple[str, ...] = ("solid", "checker", "stripes", "wood", "noise", "tiles", "skin")

_VERTEX = """
#version 330
uniform mat4 u_model;
uniform mat4 u_view;
uniform mat4 u_proj;
uniform mat4 u_light_vp;
in vec3 in_pos;
in vec3 in_normal;
in vec3 in_tex;
in vec3 in_tex_normal;
out vec4 v_light;
out vec3 v_world;
out vec3 v_local;
out vec3 v_normal;
out vec3 v_local_normal;
out float v_depth;
void main() {
    vec4 world = u_model * vec4(in_pos, 1.0);
    vec4 cam = u_view * world;
    v_world = world.xyz;
    v_local = in_tex;
    v_normal = mat3(u_model) * in_normal;
    v_local_normal = in_tex_normal;
    v_depth = cam.z;
    v_light = u_light_vp * world;
    gl_Position = u_proj * cam;
}
"""

_FRAGMENT = """
#version 400
uniform vec3 u_col_a;
uniform vec3 u_col_b;
uniform int u_pattern;
uniform float u_scale;
uniform float u_shine;
uniform float u_spec;
uniform float u_wrap;
uniform vec3 u_palm_col;
uniform float u_palm;
uniform float u_detail;
uniform sampler2D u_photo;
uniform float u_use_photo;
uniform vec4 u_photo_crop;
uniform vec3 u_photo_map;
uniform float u_photo_sat;
uniform vec3 u_light_dir;
uniform vec3 u_light_col;
uniform vec3 u_ambient;
uniform vec3 u_ground;
uniform vec3 u_eye;
uniform sampler2DShadow u_shadow;
uniform sampler2D u_shadow_raw;
uniform float u_use_shadow;
uniform float u_penumbra;
uniform float u_min_radius;
uniform float u_uv_depth;
in vec4 v_light;
in vec3 v_world;
in vec3 v_local;
in vec3 v_normal;
in vec3 v_local_normal;
in float v_depth;
layout(location = 0) out vec4 out_color;
layout(location = 1) out float out_depth;

float hash(vec2 p) { return fract(sin(dot(p, vec2(127.1, 311.7))) * 43758.5453); }
float hash3(vec3 p) {  // arithmetic (no sin): cheap on llvmpipe
    p = fract(p * 0.1031);
    p += dot(p, p.zyx + 31.32);
    return fract((p.x + p.y) * p.z);
}
float vnoise(vec2 p) {
    vec2 i = floor(p), f = fract(p);
    vec2 u = f * f * (3.0 - 2.0 * f);
    return mix(mix(hash(i), hash(i + vec2(1, 0)), u.x), mix(hash(i + vec2(0, 1)), hash(i + vec2(1, 1)), u.x), u.y);
}
float vnoise3(vec3 p) {
    vec3 i = floor(p), f = fract(p);
    vec3 u = f * f * (3.0 - 2.0 * f);
    float a = mix(mix(hash3(i), hash3(i + vec3(1, 0, 0)), u.x),
                  mix(hash3(i + vec3(0, 1, 0)), hash3(i + vec3(1, 1, 0)), u.x), u.y);
    float b = mix(mix(hash3(i + vec3(0, 0, 1)), hash3(i + vec3(1, 0, 1)), u.x),
                  mix(hash3(i + vec3(0, 1, 1)), hash3(i + vec3(1, 1, 1)), u.x), u.y);
    return mix(a, b, u.z);
}
float fbm(vec2 p) { return 0.5 * vnoise(p) + 0.3 * vnoise(2.03 * p) + 0.2 * vnoise(4.01 * p); }

float pattern(vec2 uv) {
    vec2 p = uv * u_scale;
    if (u_pattern == 1) return mod(floor(p.x) + floor(p.y), 2.0);
    if (u_pattern == 2) return step(0.5, fract(p.x + 0.15 * vnoise(p * 0.5)));
    if (u_pattern == 3) return smoothstep(0.2, 0.8, fract(p.x * 0.35 + 2.0 * fbm(p * vec2(0.4, 6.0))));
    if (u_pattern == 4) return fbm(p);
    if (u_pattern == 5) { vec2 f = abs(fract(p) - 0.5); return step(0.46, max(f.x, f.y)); }
    return 0.0;
}

// skin: 3-D noise on the surface's rest coordinates (x along the fingers / the arm, y toward the palm)
vec3 skin(vec3 p, vec3 pn) {
    vec3 q = p * u_scale;
    float blotch = 0.65 * vnoise3(q * 0.12) + 0.35 * vnoise3(q * 0.29);  // centimetre-scale redness, evenness
    vec3 c = mix(u_col_a, u_col_b, u_detail * smoothstep(0.35, 0.85, blotch));
    c *= 1.0 + u_detail * 0.16 * (vnoise3(q * 1.7) - 0.5);  // fine grain (pores, hair shadow)
    c *= 1.0 - u_detail * 0.10 * smoothstep(0.75, 0.95, vnoise3(q * 0.5 + 7.0));  // freckles, small marks
    float side = smoothstep(-0.15, 0.55, normalize(pn).y);  // 1 on the palm side
    c = mix(c, u_palm_col, u_palm * side);
    float line = abs(fract(p.x * 60.0 + 0.8 * vnoise3(q * 0.25)) - 0.5) * 2.0;  // a few creases across the palm side
    c *= 1.0 - u_detail * 0.12 * side * (1.0 - smoothstep(0.0, 0.1, line)) * step(0.6, vnoise3(q * 0.15 + 3.0));
    return c;
}

// 16 points of a Poisson disk (radius 1), spread evenly: the PCF taps (the first 4 also seed the blocker search)
const vec2 DISK[16] = vec2[](vec2(-0.942, -0.399), vec2(0.946, -0.769), vec2(-0.094, -0.929), vec2(0.345, 0.294),
    vec2(-0.916, 0.458), vec2(-0.815, -0.879), vec2(-0.383, 0.277), vec2(0.975, 0.756), vec2(0.443, -0.976),
    vec2(0.538, -0.474), vec2(-0.265, -0.419), vec2(0.792, 0.191), vec2(-0.242, 0.997), vec2(-0.814, 0.914),
    vec2(0.200, 0.786), vec2(0.144, -0.141));

// percentage-closer soft shadows: blocker search, then a penumbra that widens with the blocker's distance.
// ``slope``: light-depth change per uv unit along the surface (a tap at distance r needs r * slope more bias).
float shadow_lit(vec3 lp, float bias, float slope) {
    float search = u_min_radius + u_penumbra * 0.08;
    float zs = lp.z - bias - slope * search;
    float blockers = 0.0, zb = 0.0;
    for (int i = 0; i < 4; i++) {  // 4 gathers: 16 depths
        vec4 d = textureGather(u_shadow_raw, lp.xy + DISK[i] * search);
        vec4 hit = step(d, vec4(zs));
        blockers += dot(hit, vec4(1.0));
        zb += dot(hit, d);
    }
    if (blockers == 0.0) return 1.0;
    float radius = clamp((lp.z - bias - zb / blockers) * u_penumbra, u_min_radius, search);
    float zr = lp.z - bias - slope * radius;
    float lit = 0.0;
    for (int i = 0; i < 16; i++) lit += texture(u_shadow, vec3(lp.xy + DISK[i] * radius, zr));
    return lit / 16.0;
}

void main() {
    vec3 an = abs(v_local_normal);
    vec3 albedo;
    vec2 uv = an.z >= max(an.x, an.y) ? v_local.xy : (an.x >= an.y ? v_local.yz : v_local.xz);
    if (u_pattern == 6) albedo = skin(v_local, v_local_normal);
    else if (u_use_photo > 0.5) {  // a photo: rotated, tiled with mirrored repeats, cropped, tinted
        vec2 q = mat2(u_photo_map.y, u_photo_map.z, -u_photo_map.z, u_photo_map.y) * uv * u_photo_map.x;
        vec2 m = 1.0 - abs(mod(q, 2.0) - 1.0);
        vec3 t = texture(u_photo, u_photo_crop.xy + m * u_photo_crop.zw).rgb;
        albedo = mix(vec3(dot(t, vec3(0.299, 0.587, 0.114))), t, u_photo_sat) * u_col_a;
    } else albedo = mix(u_col_a, u_col_b, pattern(uv));
    vec3 n = normalize(v_normal);
    vec3 view = normalize(u_eye - v_world);
    if (dot(n, view) < 0.0) n = -n;
    float ndl = dot(n, u_light_dir);
    float diffuse = max((ndl + u_wrap) / (1.0 + u_wrap), 0.0);  // wrap > 0: light bleeds past the terminator (skin)
    if (u_use_shadow > 0.5 && diffuse > 0.0) {
        vec3 lp = v_light.xyz / v_light.w * 0.5 + 0.5;
        float bias = 0.0008 + 0.002 * (1.0 - max(ndl, 0.0));
        float c = max(ndl, 0.1);
        float slope = u_uv_depth * sqrt(1.0 - c * c) / c;  // tan(angle to the light), in depth per uv
        if (all(greaterThanEqual(lp, vec3(0.0))) && all(lessThanEqual(lp, vec3(1.0))))
            diffuse *= shadow_lit(lp, bias, slope);
    }
    vec3 h = normalize(u_light_dir + view);
    float spec = u_shine > 0.0 ? pow(max(dot(n, h), 0.0), u_shine) * u_spec * step(0.0, ndl) * diffuse : 0.0;
    vec3 ambient = mix(u_ground, u_ambient, 0.5 + 0.5 * n.z);  // sky from above, bounce from below
    vec3 color = albedo * (ambient + u_light_col * diffuse) + u_light_col * spec;
    vec3 over = max(color - 0.8, 0.0);  // a soft shoulder above 0.8 instead of a hard clip (no flat colour blobs)
    color = min(color, 0.8) + 0.2 * (1.0 - exp(-over / 0.2));
    out_color = vec4(clamp(color, 0.0, 1.0), 1.0);
    out_depth = v_depth;
}
"""


_ID_FRAGMENT = """
#version 330
uniform float u_id;
out vec4 out_id;
void main() { out_id = vec4(u_id / 255.0, 0.0, 0.0, 0.0); }
"""


@dataclass
class Material:
    """A procedural surface: ``pattern`` (index into ``PATTERNS``) mixes ``color_a``/``color_b`` (RGB 0..1).

    ``scale``: pattern frequency (per metre of the surface's texture coordinates); ``shine``/``spec``:
    Blinn-Phong exponent (0: matte) and strength; ``wrap``: light wrapped past the terminator
    (0 Lambert; skin ~0.3). Skin (``pattern == PATTERNS.index("skin")``): ``color_b`` is the blotch
    tone, ``detail`` the strength of blotches, grain, marks and creases, ``palm`` the palm-side
    albedo (None: no palm tone). Photo (``photo``: a key given to ``WorldRenderer.set_photo``): the
    surface shows that image tinted by ``color_a``, one mirrored tile per ``photo_tile`` metres,
    rotated by ``photo_angle`` (radians), sampled inside ``photo_crop`` (u0, v0, du, dv in 0..1),
    its saturation scaled by ``photo_saturation``; ``pattern`` is then ignored.
    """

    color_a: tuple[float, float, float]
    color_b: tuple[float, float, float] = (0.0, 0.0, 0.0)
    pattern: int = 0
    scale: float = 10.0
    shine: float = 0.0
    spec: float = 0.25
    wrap: float = 0.0
    detail: float = 1.0
    palm: tuple[float, float, float] | None = None
    photo: str | None = None
    photo_tile: float = 1.0
    photo_angle: float = 0.0
    photo_crop: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)
    photo_saturation: float = 1.0


def projection_from_K(K: np.ndarray, height: int, width: int, near: float = 0.02, far: float = 20.0) -> np.ndarray:
    """OpenGL projection ``[4, 4]`` for OpenCV intrinsics (see module notes; image row 0 = GL row 0)."""
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    P = np.zeros((4, 4))
    P[0, 0], P[0, 2] = 2 * fx / width, 2 * cx / width - 1
    P[1, 1], P[1, 2] = 2 * fy / height, 2 * cy / height - 1
    P[2, 2], P[2, 3] = (far + near) / (far - near), -2 * far * near / (far - near)
    P[3, 2] = 1.0
    return P


def _mat(m: np.ndarray) -> bytes:
    return np.ascontiguousarray(np.asarray(m, dtype=np.float32).T).tobytes()  # GL is column-major


class _Drawable:
    def __init__(self, ctx: moderngl.Context, prog: moderngl.Program, id_prog: moderngl.Program,
                 vertices: np.ndarray, normals: np.ndarray, faces: np.ndarray, material: Material, ident: int = 0,
                 dynamic: bool = False, tex: np.ndarray | None = None) -> None:
        data = np.concatenate([vertices, normals], axis=1).astype(np.float32)
        self.vbo = ctx.buffer(data.tobytes(), dynamic=dynamic)
        self.ibo = ctx.buffer(np.ascontiguousarray(faces, dtype=np.int32).tobytes())
        # texture coordinates: a static copy (hands: their rest-frame surface), else the mesh's own frame
        self.tbo = ctx.buffer(np.asarray(tex, np.float32).tobytes()) if tex is not None else None
        tex_src = (self.tbo or self.vbo, "3f 3f", "in_tex", "in_tex_normal")
        self.vao = ctx.vertex_array(prog, [(self.vbo, "3f 3f", "in_pos", "in_normal"), tex_src], self.ibo)
        self.id_vao = ctx.vertex_array(id_prog, [(self.vbo, "3f 12x", "in_pos")], self.ibo)
        self.material = material
        self.ident = ident
        self.model = np.eye(4)
        self.casts_shadow = True

    def release(self) -> None:
        for obj in (self.vao, self.id_vao, self.vbo, self.ibo, self.tbo):
            if obj is not None:
                obj.release()


class WorldRenderer:
    """Renders frames of one scene at a time: shaded RGB, depth, and the visible and full hand masks.

    Usage per clip: ``set_camera(K)``, ``set_light(...)``, ``add_mesh(...)`` for static meshes,
    ``add_hand(side_id, faces, material)`` per hand; then per frame ``set_pose``/``update_hand``
    and ``render(w2c)``; finally ``clear_scene()``.
    """

    def __init__(self, height: int, width: int, mask_scale: int = 5, shadow_size: int = 1024) -> None:
        self.height, self.width, self.mask_scale = height, width, mask_scale
        self.ctx = moderngl.create_standalone_context(backend="egl")
        self.prog = self.ctx.program(vertex_shader=_VERTEX, fragment_shader=_FRAGMENT)
        self.id_prog = self.ctx.program(vertex_shader=_VERTEX, fragment_shader=_ID_FRAGMENT)
        rb = self.ctx.renderbuffer
        self.fbo = self.ctx.framebuffer([rb((width, height), 4), rb((width, height), 1, dtype="f4")],
                                        self.ctx.depth_renderbuffer((width, height)))
        ms = (width * mask_scale, height * mask_scale)
        self.mask_fbo = self.ctx.framebuffer([rb(ms, 1)], self.ctx.depth_renderbuffer(ms))
        self.shadow_size = shadow_size
        if shadow_size:
            self.shadow_map = self.ctx.depth_texture((shadow_size, shadow_size))
            self.shadow_map.compare_func = "<="
            self.shadow_map.filter = (moderngl.LINEAR, moderngl.LINEAR)  # bilinear PCF per tap
            self.shadow_map.repeat_x = self.shadow_map.repeat_y = False
            self.shadow_raw = self.ctx.sampler(repeat_x=False, repeat_y=False, compare_func="",
                                               filter=(moderngl.NEAREST, moderngl.NEAREST), texture=self.shadow_map)
            self.shadow_fbo = self.ctx.framebuffer(depth_attachment=self.shadow_map)
            self.prog["u_shadow"].value = 0
            self.prog["u_shadow_raw"].value = 1
        self.prog["u_use_shadow"].value = 1.0 if shadow_size else 0.0
        self._light_vp = np.eye(4)
        self._proj = _mat(np.eye(4))
        self.prog["u_photo"].value = 2
        self.photos: dict[str, moderngl.Texture] = {}
        self.meshes: list[_Drawable] = []
        self.hands: dict[int, _Drawable] = {}
        self.hand_vertices: dict[int, np.ndarray] = {}
        self.K = np.eye(3)
        log.debug("world renderer %dx%d on %s", width, height, self.ctx.info["GL_RENDERER"])

    # ------------------------------------------------------------------ scene set-up
    def set_camera(self, K: np.ndarray) -> None:
        """Intrinsics ``K [3, 3]`` in pixels of the render size."""
        self.K = np.asarray(K, np.float64)
        proj = self._proj = _mat(projection_from_K(np.asarray(K, np.float64), self.height, self.width))
        self.prog["u_proj"].write(proj)
        self.id_prog["u_proj"].write(proj)  # the same matrix at any multiple of the size

    def set_light(self, direction: np.ndarray, color: np.ndarray, ambient: np.ndarray,
                  center: tuple[float, float, float] = (0.0, 0.05, 0.0), extent: float = 0.8,
                  ground: np.ndarray | None = None, softness: float = 0.0) -> None:
        """Directional light (``direction`` toward the light, world frame), its RGB, and the ambient RGB.

        ``ambient`` comes from above (world +z), ``ground`` (default: the same) from below; surfaces
        between get a mix by their normal. Shadows are cast within ``extent`` metres of ``center``
        (an orthographic depth map along the light); ``softness`` is the light's angular radius
        (radians): 0 gives hard shadows (a one-texel filter), larger values penumbrae that widen
        with the distance between caster and receiver (a sun ~0.005, a lamp shade ~0.05, an
        overcast window ~0.2).
        """
        d = np.asarray(direction, np.float64)
        d = d / np.linalg.norm(d)
        self.prog["u_light_dir"].value = tuple(d)
        self.prog["u_light_col"].value = tuple(float(c) for c in color)
        self.prog["u_ambient"].value = tuple(float(c) for c in ambient)
        self.prog["u_ground"].value = tuple(float(c) for c in (ambient if ground is None else ground))
        # light view: z toward the scene, orthographic box [-extent, extent]^2 x [near, far]
        z = -d
        helper = np.array([0.0, 0.0, 1.0]) if abs(z[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
        x = np.cross(helper, z)
        x /= np.linalg.norm(x)
        y = np.cross(z, x)
        eye = np.asarray(center, np.float64) - 2.0 * z
        view = np.eye(4)
        view[:3, :3] = np.stack([x, y, z])
        view[:3, 3] = -view[:3, :3] @ eye
        near, far = 0.5, 4.0
        ortho = np.diag([1.0 / extent, 1.0 / extent, 2.0 / (far - near), 1.0])
        ortho[2, 3] = -(far + near) / (far - near)
        self._light_vp = ortho @ view
        self.prog["u_light_vp"].write(_mat(self._light_vp))
        # penumbra radius in shadow-map uv per unit of light depth ([0, 1] spans far - near metres)
        self.prog["u_penumbra"].value = float((far - near) * np.tan(max(softness, 0.0)) / (2 * extent))
        self.prog["u_min_radius"].value = 1.0 / max(self.shadow_size, 1)
        self.prog["u_uv_depth"].value = float(2 * extent / (far - near))  # metres per uv / metres per depth unit

    def set_photo(self, key: str, rgb: np.ndarray) -> None:
        """Make photo ``rgb`` (uint8 ``[h, w, 3]``) available to materials as ``key``: uploaded once, with
        mipmaps (trilinear filtering), and kept for the renderer's life (``has_photo`` says whether it is)."""
        if key in self.photos:
            return
        img = np.ascontiguousarray(rgb, dtype=np.uint8)
        tex = self.ctx.texture((img.shape[1], img.shape[0]), 3, img.tobytes(), alignment=1)
        tex.repeat_x = tex.repeat_y = False
        tex.build_mipmaps()
        tex.filter = (moderngl.LINEAR_MIPMAP_LINEAR, moderngl.LINEAR)
        self.photos[key] = tex

    def has_photo(self, key: str) -> bool:
        return key in self.photos

    def add_mesh(self, vertices: np.ndarray, normals: np.ndarray, faces: np.ndarray, material: Material,
                 casts_shadow: bool = True) -> int:
        """Add a static mesh (object frame); returns its handle for ``set_pose``.

        ``casts_shadow=False`` for large receivers (table, room): they stay out of the shadow map,
        which then only rasterises the small casters (objects, hands).
        """
        d = _Drawable(self.ctx, self.prog, self.id_prog, vertices, normals, faces, material)
        d.casts_shadow = casts_shadow
        self.meshes.append(d)
        return len(self.meshes) - 1

    def set_pose(self, handle: int, model: np.ndarray) -> None:
        """Object-to-world ``[4, 4]`` of mesh ``handle``."""
        self.meshes[handle].model = np.asarray(model)

    def add_hand(self, ident: int, num_vertices: int, faces: np.ndarray, material: Material,
                 tex: np.ndarray | None = None) -> None:
        """A hand (``ident`` 1 = left, 2 = right) whose world-space vertices change every frame.

        ``tex [V, 6]``: per-vertex texture position and normal that stay with the skin (e.g. the
        hand's first-frame surface in its own frame); default: zeros (an untextured surface).
        """
        zeros = np.zeros((num_vertices, 3), np.float32)
        tex = np.zeros((num_vertices, 6), np.float32) if tex is None else tex
        self.hands[ident] = _Drawable(self.ctx, self.prog, self.id_prog, zeros, zeros, faces, material, ident,
                                      dynamic=True, tex=tex)

    def update_hand(self, ident: int, vertices: np.ndarray, normals: np.ndarray) -> None:
        """World-space ``vertices [V, 3]`` and ``normals [V, 3]`` of hand ``ident`` for the next frame."""
        self.hands[ident].vbo.write(np.concatenate([vertices, normals], axis=1).astype(np.float32).tobytes())
        self.hand_vertices[ident] = np.asarray(vertices, np.float64)

    def clear_scene(self) -> None:
        """Release the clip's meshes and hands (context and framebuffer stay)."""
        for d in [*self.meshes, *self.hands.values()]:
            d.release()
        self.meshes, self.hands, self.hand_vertices = [], {}, {}

    # ------------------------------------------------------------------ drawing
    def _draw(self, d: _Drawable) -> None:
        m = d.material
        self.prog["u_model"].write(_mat(d.model))
        self.prog["u_col_a"].value = tuple(m.color_a)
        self.prog["u_col_b"].value = tuple(m.color_b)
        self.prog["u_pattern"].value = int(m.pattern)
        self.prog["u_scale"].value = float(m.scale)
        self.prog["u_shine"].value = float(m.shine)
        self.prog["u_spec"].value = float(m.spec)
        self.prog["u_wrap"].value = float(m.wrap)
        self.prog["u_detail"].value = float(m.detail)
        self.prog["u_palm"].value = 0.0 if m.palm is None else 1.0
        self.prog["u_palm_col"].value = tuple(m.color_a if m.palm is None else m.palm)
        self.prog["u_use_photo"].value = 0.0 if m.photo is None else 1.0
        if m.photo is not None:
            self.photos[m.photo].use(location=2)
            self.prog["u_photo_map"].value = (1.0 / m.photo_tile, float(np.cos(m.photo_angle)),
                                              float(np.sin(m.photo_angle)))
            self.prog["u_photo_crop"].value = tuple(float(c) for c in m.photo_crop)
            self.prog["u_photo_sat"].value = float(m.photo_saturation)
        d.vao.render(moderngl.TRIANGLES)

    def _draw_id(self, d: _Drawable, ident: int) -> None:
        self.id_prog["u_model"].write(_mat(d.model))
        self.id_prog["u_id"].value = float(ident)
        d.id_vao.render(moderngl.TRIANGLES)

    def _hand_box(self, w2c: np.ndarray) -> tuple[int, int, int, int] | None:
        """Pixel box ``(x0, y0, x1, y1)`` (exclusive ends) around every hand, 1 px margin; None: no hand."""
        if not self.hand_vertices:
            return None
        pts = np.concatenate(list(self.hand_vertices.values())) @ w2c[:3, :3].T + w2c[:3, 3]
        if pts[:, 2].min() <= 0.02:  # crosses the near plane: projections are unreliable, take the frame
            return 0, 0, self.width, self.height
        uv = (pts @ self.K.T)[:, :2] / pts[:, 2:]
        x0, y0 = np.floor(uv.min(axis=0)).astype(int) - 1
        x1, y1 = np.ceil(uv.max(axis=0)).astype(int) + 1
        x0, x1 = max(x0, 0), min(x1, self.width)
        y0, y1 = max(y0, 0), min(y1, self.height)
        return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None

    def _mask_pass(self, box: tuple[int, int, int, int], occluders: bool) -> np.ndarray:
        """One id-only pass at ``mask_scale`` inside ``box``; returns the box's ``[h, w]`` coverage ids."""
        s = self.mask_scale
        x0, y0, x1, y1 = box
        vp = (x0 * s, y0 * s, (x1 - x0) * s, (y1 - y0) * s)  # GL rows are image rows (see module notes)
        self.mask_fbo.clear(0.0, 0.0, 0.0, 0.0, depth=1.0, viewport=vp)
        if occluders:
            for d in self.meshes:
                self._draw_id(d, 0)
        for d in self.hands.values():
            self._draw_id(d, d.ident)
        ids = np.frombuffer(self.mask_fbo.read(viewport=vp, components=1, attachment=0), np.uint8)
        return ids.reshape(y1 - y0, s, x1 - x0, s).max(axis=(1, 3))

    def render(self, w2c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Render one frame.

        Args:
            w2c: ``[4, 4]`` world-to-camera (OpenCV convention).

        Returns:
            ``rgb uint8 [H, W, 3]``; ``depth float32 [H, W]`` (camera z of the nearest surface, 0
            where nothing); ``visible uint8 [H, W]`` and ``full uint8 [H, W]``: hand coverage ids
            (0 none, else the largest id of the hands covering the pixel) of the hand pixels not
            hidden by anything, and of the whole hands (nothing occludes them).
        """
        w2c = np.asarray(w2c, np.float64)
        view = _mat(w2c)
        self.prog["u_view"].write(view)
        self.id_prog["u_view"].write(view)
        self.prog["u_eye"].value = tuple(-w2c[:3, :3].T @ w2c[:3, 3])
        self.ctx.enable(moderngl.DEPTH_TEST)
        # masks, inside the hands' box only: hands alone, then scene depth + hands
        h, w = self.height, self.width
        full = np.zeros((h, w), np.uint8)
        visible = np.zeros((h, w), np.uint8)
        box = self._hand_box(w2c)
        if box is not None:
            x0, y0, x1, y1 = box
            s = self.mask_scale
            self.mask_fbo.use()
            self.mask_fbo.scissor = (x0 * s, y0 * s, (x1 - x0) * s, (y1 - y0) * s)
            full[y0:y1, x0:x1] = self._mask_pass(box, occluders=False)
            visible[y0:y1, x0:x1] = self._mask_pass(box, occluders=True)
            self.mask_fbo.scissor = None
        # shadow map from the light, then the shaded scene
        if self.shadow_size:
            self.id_prog["u_view"].write(_mat(np.eye(4)))
            self.id_prog["u_proj"].write(_mat(self._light_vp))
            self.shadow_fbo.use()
            self.shadow_fbo.clear(depth=1.0)
            for d in [*self.meshes, *self.hands.values()]:
                if d.casts_shadow:
                    self._draw_id(d, 0)
            self.id_prog["u_view"].write(view)
            self.id_prog["u_proj"].write(self._proj)
            self.shadow_map.use(location=0)
            self.shadow_raw.use(location=1)
        self.fbo.use()
        self.fbo.clear(0.0, 0.0, 0.0, 0.0, depth=1.0)
        for d in [*self.hands.values(), *reversed(self.meshes)]:  # roughly front to back: less overdraw
            self._draw(d)
        rgba = np.frombuffer(self.fbo.read(components=4, attachment=0), np.uint8).reshape(h, w, 4)
        depth = np.frombuffer(self.fbo.read(components=1, attachment=1, dtype="f4"), np.float32).reshape(h, w)
        return rgba[..., :3].copy(), depth.copy(), visible, full

    def release(self) -> None:
        self.clear_scene()
        self.fbo.release()
        self.mask_fbo.release()
        if self.shadow_size:
            self.shadow_fbo.release()
            self.shadow_raw.release()
            self.shadow_map.release()
        for tex in self.photos.values():
            tex.release()
        self.photos = {}
        self.ctx.release()
