"""How a clip looks: the key light, ambient light, shadow softness and the person's skin.

Rules:
- A look is drawn from its own generator, ``numpy.random.default_rng([seed, index, LOOK_STREAM])``,
  apart from the one that draws the scene's geometry, the head motion and the hands' motion:
  changing how things look never changes what happens in clip ``(seed, index)``.
- One person per clip: both hands and both forearms share one skin material.
- Skin tones are continuous along ``SKIN_TONES`` (light to dark albedos), with an undertone
  jitter (olive to pink) and +-6 % in value. Each skin gets blotches (a redder tone), fine grain,
  small marks and palm creases of a random strength (``Material.detail``), a lighter palm side
  whose contrast grows with the tone's darkness, light wrapped past the terminator (0.15-0.45)
  and a weak sheen.
- The key light: elevation 20-85 degrees at any azimuth, colour temperature 2,700-7,500 K
  (a black-body fit, normalised to unit luminance, raised to the power 0.4: the cast a
  camera's auto white balance leaves) at intensity 0.45-1.05. Ambient 0.1-0.5 of a
  sky tint from above and a bounce from below tinted by the table. Shadows from hard (a sun's
  0.3 degrees) to soft (a window's or a lamp shade's 8.6 degrees): the light's angular radius is
  log-uniform over that range (``WorldRenderer.set_light(softness=...)``).
- Real photographs (``photos.photo_pool``), drawn after everything above so a look without
  photos is the same with or without a pool: the table top (70 %), the floor (70 %) and the
  walls (75 %, one photo for all three, like wallpaper) each show a photo with a random tile
  size, rotation, square crop (35-100 % of the shorter side), saturation and tint; 35 % of
  the boxes and cylinders wear one as a label. Grey photos (brick, gravel) get a random colour.
- The camera, drawn last: a lens blur (Gaussian, sigma 0.3-0.9 px at 256 px, scaled with the
  image size), a vignette (0-25 % darker in the corners) and sensor noise (sigma 0.5-3 grey
  levels, fresh per frame from the clip's ``CAMERA_STREAM`` generator) on every frame and on
  the scene photo alike; labels (masks, depth, joints) are untouched.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass, field

import cv2
import numpy as np

from hand2world.world.gl import PATTERNS, Material
from hand2world.world.photos import PhotoPool
from hand2world.world.scene import Scene

__all__ = ["CAMERA_STREAM", "LOOK_STREAM", "SKIN_TONES", "Camera", "Look", "kelvin_rgb", "photo_material",
           "sample_look", "skin_material"]

#: third entry of the look generator's seed (``default_rng([seed, index, LOOK_STREAM])``)
LOOK_STREAM = 1
#: third entry of the sensor-noise generator's seed
CAMERA_STREAM = 2

#: skin albedos (linear-ish RGB 0..1), light to dark
SKIN_TONES: np.ndarray = np.array([
    (0.96, 0.80, 0.69), (0.92, 0.74, 0.62), (0.86, 0.66, 0.52), (0.78, 0.57, 0.42),
    (0.66, 0.46, 0.33), (0.52, 0.35, 0.24), (0.40, 0.27, 0.19), (0.30, 0.20, 0.14),
])
_PALM_TONE = np.array([0.86, 0.64, 0.55])  # palms of every tone tend toward this pinkish beige
_LUMA = np.array([0.2126, 0.7152, 0.0722])
_WHITE_BALANCE = 0.4  # a camera's auto white balance leaves this power of a light's colour cast


@dataclass
class Camera:
    """What the camera adds to a rendered image: lens ``blur`` (Gaussian sigma, px at 256 px), ``vignette``
    (corner darkening 0..1) and sensor ``noise`` (sigma, grey levels)."""

    blur: float = 0.0
    vignette: float = 0.0
    noise: float = 0.0

    def apply(self, rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """uint8 ``[H, W, 3]`` -> the same image as this camera records it (noise drawn from ``rng``)."""
        h, w = rgb.shape[:2]
        img = rgb.astype(np.float32)
        sigma = self.blur * max(h, w) / 256.0
        if sigma > 0:
            img = cv2.GaussianBlur(img, (0, 0), sigma)
        if self.vignette > 0:
            y, x = np.ogrid[-1:1:h * 1j, -1:1:w * 1j]
            img *= (1.0 - self.vignette * 0.5 * (x * x + y * y))[..., None].astype(np.float32)
        if self.noise > 0:
            img += rng.normal(0.0, self.noise, img.shape).astype(np.float32)
        return np.clip(img + 0.5, 0, 255).astype(np.uint8)


@dataclass
class Look:
    """Lighting and skin of one clip (see module rules); ``tone`` in [0, 1] is the skin's place from light to dark."""

    light_dir: np.ndarray
    light_color: np.ndarray
    ambient: np.ndarray
    ground: np.ndarray
    softness: float
    kelvin: float
    tone: float
    skin: Material
    surfaces: dict[str, Material] = field(default_factory=dict)  # role ("table", "floor", "wall") -> material
    objects: dict[int, Material] = field(default_factory=dict)  # object index -> material
    camera: Camera = field(default_factory=Camera)


def kelvin_rgb(kelvin: float) -> np.ndarray:
    """RGB ``[3]`` of a black body at ``kelvin`` (Tanner Helland's fit, 1,000-40,000 K), unit luminance."""
    t = kelvin / 100.0
    r = 1.0 if t <= 66 else 1.2929 * (t - 60) ** -0.1332
    g = 0.3901 * np.log(t) - 0.6318 if t <= 66 else 1.1299 * (t - 60) ** -0.0755
    b = 1.0 if t >= 66 else (0.0 if t <= 19 else 0.5432 * np.log(t - 10) - 1.1963)
    rgb = np.clip(np.array([r, g, b], np.float64), 0.0, 1.0)
    return rgb / float(rgb @ _LUMA)


def skin_material(rng: np.random.Generator) -> tuple[Material, float]:
    """A person's skin (see module rules) and its tone position in [0, 1] (0 lightest)."""
    tone = float(rng.uniform(0.0, 1.0))
    x = tone * (len(SKIN_TONES) - 1)
    k = min(int(x), len(SKIN_TONES) - 2)
    base = SKIN_TONES[k] + (x - k) * (SKIN_TONES[k + 1] - SKIN_TONES[k])
    under = rng.uniform(-1.0, 1.0)  # -1 olive (more green), +1 pink (more red)
    base = base * np.array([1 + 0.05 * under, 1 - 0.02 * abs(under), 1 - 0.04 * under]) * rng.uniform(0.94, 1.06)
    base = np.clip(base, 0.0, 1.0)
    blotch = np.clip(base * np.array([1.03, 0.88, 0.86]) * rng.uniform(0.9, 1.0), 0.0, 1.0)
    palm = np.clip(base + (0.12 + 0.5 * tone) * (_PALM_TONE - base), 0.0, 1.0)
    mat = Material(tuple(base), tuple(blotch), PATTERNS.index("skin"), scale=float(rng.uniform(250, 400)),
                   shine=float(rng.uniform(8, 24)), spec=float(rng.uniform(0.06, 0.2)),
                   wrap=float(rng.uniform(0.15, 0.45)), detail=float(rng.uniform(0.4, 1.0)), palm=tuple(palm))
    return mat, tone


def photo_material(rng: np.random.Generator, pool: PhotoPool, tile: tuple[float, float],
                   crop: tuple[float, float] = (0.35, 1.0)) -> Material:
    """A surface showing a random photo of ``pool``: tile size (m) and crop share drawn from the given ranges."""
    photo = pool.photos[int(rng.integers(len(pool)))]
    h, w = photo.rgb.shape[:2]
    c = rng.uniform(*crop) * min(h, w)
    du, dv = c / w, c / h
    u0, v0 = rng.uniform(0, 1 - du), rng.uniform(0, 1 - dv)
    if photo.grey:
        tint = np.array(colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.1, 0.5), rng.uniform(0.6, 1.1)))
    else:
        tint = rng.uniform(0.7, 1.05) * (1 + rng.uniform(-0.08, 0.08, 3))
    return Material(tuple(np.clip(tint, 0, 1.2)), photo=photo.name, photo_tile=float(rng.uniform(*tile)),
                    photo_angle=float(rng.uniform(0, 2 * np.pi)), photo_crop=(u0, v0, du, dv),
                    photo_saturation=float(rng.uniform(0.5, 1.1)))


def sample_look(rng: np.random.Generator, scene: Scene, pool: PhotoPool | None = None) -> Look:
    """Draw a clip's look (module rules); ``pool``: photos for surfaces (None or empty: procedural only)."""
    table_color = np.asarray(scene.surfaces[scene.surface_roles.index("table")][1].color_a)
    elev, azim = np.deg2rad(rng.uniform(20, 85)), rng.uniform(0, 2 * np.pi)
    light_dir = np.array([np.cos(elev) * np.cos(azim), np.cos(elev) * np.sin(azim), np.sin(elev)])
    kelvin = float(rng.uniform(2700, 7500))
    light_color = rng.uniform(0.45, 1.05) * kelvin_rgb(kelvin) ** _WHITE_BALANCE
    sky = kelvin_rgb(float(rng.uniform(5500, 11000))) ** _WHITE_BALANCE  # sky and room light: neutral to blue
    ambient = rng.uniform(0.1, 0.5) * sky
    ground = ambient * rng.uniform(0.35, 0.8) * (0.5 + 0.5 * np.asarray(table_color, np.float64))
    softness = float(np.exp(rng.uniform(np.log(0.005), np.log(0.15))))
    skin, tone = skin_material(rng)
    look = Look(light_dir, light_color, ambient, ground, softness, kelvin, tone, skin)
    if pool is not None and len(pool):
        for role, p, tile in (("table", 0.7, (0.15, 0.6)), ("floor", 0.7, (0.3, 1.2)), ("wall", 0.75, (0.5, 2.0))):
            if rng.random() < p:
                look.surfaces[role] = photo_material(rng, pool, tile)
        for i, obj in enumerate(scene.objects):
            if obj.kind in ("box", "cylinder") and rng.random() < 0.35:
                big = float(max(obj.size))
                mat = photo_material(rng, pool, (big, 2 * big), crop=(0.2, 0.7))
                mat.shine = obj.material.shine
                look.objects[i] = mat
    look.camera = Camera(float(rng.uniform(0.3, 0.9)), float(rng.uniform(0.0, 0.25)), float(rng.uniform(0.5, 3.0)))
    return look
