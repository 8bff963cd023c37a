"""The whole training recipe in order: world synth -> autoencoder -> teacher -> distill ode -> distill dmd.

Design choices:
- Each stage calls the same library function as its own command (``synthesize``,
  ``train_autoencoder``, ``train_teacher``, ``run_distill``) with the preset's YAML config
  (``configs/{autoencoder,teacher,distill}_{preset}.yaml``); no subprocesses.
- Resumable: a stage whose release (``final/model.safetensors``) exists is skipped; an
  interrupted stage resumes from its latest checkpoint (the world synth skips complete shards).
- Overrides address one stage: ``--set teacher.optim.steps=100``, ``--set dmd.dmd.critic_steps=2``
  (first component = stage: autoencoder | teacher | ode | dmd).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["RECIPES", "Recipe", "run_recipe"]

STAGES = ("world", "autoencoder", "teacher", "ode", "dmd")


@dataclass(frozen=True)
class Recipe:
    """A preset's data settings (the model settings live in its YAML configs).

    Attributes:
        clips, frames, size: synthetic-world clips, frames per clip, resolution.
        data: dataset folder (relative to ``outputs_dir()`` unless absolute).
    """

    clips: int = 2000
    frames: int = 17
    size: int = 128
    data: str = "data/world_128_2k"


RECIPES: dict[str, Recipe] = {
    "tiny": Recipe(),  # v4: 128x128, the conv autoencoder
    "composite": Recipe(clips=1000, size=256, data="data/world_256_1k"),  # v5: 256x256 over the warped photo
}


def _split_overrides(assignments: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {s: [] for s in STAGES}
    for item in assignments:
        stage, _, rest = item.partition(".")
        if stage not in out or not rest:
            raise ValueError(f"recipe override {item!r} must start with a stage: {', '.join(STAGES[1:])}")
        out[stage].append(rest)
    return out


def _released(run_dir: Path) -> bool:
    return (run_dir / "final" / "model.safetensors").is_file()


def run_recipe(preset: str = "tiny", clips: int | None = None, data: str | None = None, workers: int = 2,
               overrides: list[str] | None = None, config_dir: str | Path | None = None,
               stop_after: str | None = None, recipe: Recipe | None = None) -> dict[str, Any]:
    """Run (or resume) the recipe of ``preset``; returns ``{stage: "skipped" | summary}``.

    Args:
        preset: names the configs (``configs/*_{preset}.yaml``) and the data settings (``RECIPES``).
        clips, data: override the preset's clip count / dataset folder.
        workers: world-synth processes.
        overrides: ``STAGE.key=value`` config overrides.
        config_dir: where the YAML configs are (default: the repository's ``configs/``).
        stop_after: last stage to run.
        recipe: data settings instead of ``RECIPES[preset]`` (tests).
    """
    from hand2world.distill.config import DistillRunConfig
    from hand2world.distill.run import run_distill
    from hand2world.paths import REPO_ROOT, outputs_dir
    from hand2world.train import (
        AutoencoderRunConfig,
        TeacherRunConfig,
        load_run_config,
        resolve_run_dir,
        train_autoencoder,
        train_teacher,
    )
    from hand2world.world.synth import synthesize

    if recipe is None and preset not in RECIPES:
        raise ValueError(f"unknown recipe preset {preset!r}; known: {sorted(RECIPES)}")
    if stop_after is not None and stop_after not in STAGES:
        raise ValueError(f"stop_after must be one of {STAGES}")
    r = recipe or RECIPES[preset]
    conf = Path(config_dir) if config_dir else REPO_ROOT / "configs"
    sets = _split_overrides(overrides or [])
    root = Path(data or r.data).expanduser()
    root = root if root.is_absolute() else outputs_dir() / root
    n_clips = clips or r.clips
    report: dict[str, Any] = {}

    def summary(out: dict[str, Any]) -> dict[str, Any]:
        losses = out["losses"]
        return {"steps": len(losses), "steps_per_s": round(out["steps_per_s"], 3),
                "last_loss": losses[-1][1] if losses else None, "final": str(out["final"])}

    for stage in STAGES:
        if stage == "world":
            import json

            index = root / "index.json"
            if index.is_file() and json.loads(index.read_text()).get("num_clips", 0) >= n_clips:
                report[stage] = "skipped"
            else:
                log.info("recipe: world synth -> %s (%d clips)", root, n_clips)
                res = synthesize(root, n_clips, r.frames, r.size, seed=0, workers=workers)
                report[stage] = {"made": res["made"], "seconds": res["seconds"]}
        elif stage == "autoencoder":
            cfg = load_run_config(conf / f"autoencoder_{preset}.yaml", AutoencoderRunConfig,
                                  [f"data.root={root}", *sets[stage]])
            ae_dir = resolve_run_dir(cfg.out_dir)
            report[stage] = "skipped" if _released(ae_dir) else summary(train_autoencoder(cfg))
        elif stage == "teacher":
            cfg = load_run_config(conf / f"teacher_{preset}.yaml", TeacherRunConfig,
                                  [f"data.root={root}", f"autoencoder={ae_dir}", *sets[stage]])
            teacher_dir = resolve_run_dir(cfg.out_dir)
            report[stage] = "skipped" if _released(teacher_dir) else summary(train_teacher(cfg))
        else:
            cfg = load_run_config(conf / f"distill_{preset}.yaml", DistillRunConfig,
                                  [f"stage={stage}", f"teacher={teacher_dir}", *sets[stage]])
            run_dir = resolve_run_dir(cfg.run_dir_name())
            report[stage] = "skipped" if _released(run_dir) else summary(run_distill(cfg))
        log.info("recipe: %s %s", stage, report[stage] if isinstance(report[stage], str) else "done")
        if stage == stop_after:
            break
    return report
