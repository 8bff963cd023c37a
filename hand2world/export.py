"""`hand2world export`: a trained student release -> a shippable weights folder (``weights/NAME``).

Design choices:
- The folder is the release itself (config.json, model.safetensors, autoencoder.*, stream.json,
  run.json) plus ``checksums.json`` (verified by ``load_video_model`` at every load) and
  ``training.json``: the lineage of runs that made it (autoencoder -> teacher -> ODE -> DMD),
  each with its steps, wall time and final loss read from the run's own ``metrics.jsonl``.
  The model card (``MODEL_CARD.md``) is prose written by people; ``export`` only refuses to
  ship without one unless ``--allow-no-card``.
- Size guard: the folder must stay under ``--max-mb`` (default 50 MB, the repository budget).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["export_release", "run_lineage"]

_FILES = ("config.json", "model.safetensors", "autoencoder.json", "autoencoder.safetensors", "stream.json", "run.json")


def _run_summary(run_dir: Path) -> dict[str, Any]:
    """Steps, wall time and last loss of a training run folder (from ``metrics.jsonl``)."""
    rows = []
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file():
        rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    out: dict[str, Any] = {"run": run_dir.name}
    if rows:
        tail = rows[-min(50, len(rows)):]
        out.update(steps=rows[-1]["step"], last_loss_mean50=round(sum(r["loss"] for r in tail) / len(tail), 5))
        # ``time`` restarts at 0 in every resumed process: add the segments up.
        wall, prev = 0.0, 0.0
        for r in rows:
            t = float(r.get("time", 0.0))
            if t < prev:
                wall += prev
            prev = t
        out["wall_s"] = round(wall + prev, 1)
    return out


def run_lineage(release: Path) -> list[dict[str, Any]]:
    """The chain of runs behind a release: follow ``teacher`` / ``init`` / ``autoencoder`` in run configs."""
    from hand2world.paths import checkpoint_path

    chain, seen, todo = [], set(), [release]
    while todo:
        folder = todo.pop(0)
        state_file = folder / "train_state.json"  # a step checkpoint (e.g. the init of a warm-started run)
        state = json.loads(state_file.read_text()) if state_file.is_file() else None
        run_dir = folder.parent if folder.name == "final" else folder.parent.parent if state is not None else folder
        if run_dir in seen:
            continue
        seen.add(run_dir)
        run_json = folder / "run.json"
        if run_json.is_file():
            cfg = json.loads(run_json.read_text())
        else:
            cfg = state.get("run_config", {}) if state is not None else {}
        summary = _run_summary(run_dir)
        if state is not None:
            summary.update(run=f"{run_dir.name}/{folder.name}", steps=state.get("step"))
        chain.append({**summary, "stage": cfg.get("stage", "teacher" if "p_drop_hands" in cfg else "autoencoder")})
        links = dict(cfg)
        if cfg.get("stage") == "dmd" and not cfg.get("init") and "{stage}" in str(cfg.get("out_dir", "")):
            links["init"] = cfg["out_dir"].format(stage="ode")  # the DMD stage starts from the ODE run
        for key in ("init", "teacher", "autoencoder"):
            name = links.get(key)
            if isinstance(name, str) and not name.startswith("preset:"):
                try:
                    todo.append(checkpoint_path(name))
                except FileNotFoundError:
                    pass
    return chain


def export_release(release: str | Path, out: str | Path, max_mb: float = 50.0, allow_no_card: bool = False,
                   cache_window: int | None = None) -> dict:
    """Copy a student release to ``out`` with checksums and lineage; returns a summary.

    ``cache_window`` sets the streaming KV window (latent frames besides the sink) of the exported
    ``config.json``: a streaming setting, not a weight (how much generated history each new frame
    attends to), chosen on validation rollouts; recorded in ``training.json``."""
    from hand2world.checkpoints import load_video_model, write_checksums
    from hand2world.paths import checkpoint_path

    if cache_window is not None and cache_window < 0:
        raise ValueError(f"cache_window must be >= 0, got {cache_window}")
    src = checkpoint_path(release)
    missing = [f for f in _FILES if not (src / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{src} is not a student release (missing {missing})")
    out = Path(out)
    card = out / "MODEL_CARD.md"
    if not card.is_file() and not allow_no_card:
        raise FileNotFoundError(f"{card} missing: write the model card first (or pass --allow-no-card)")
    out.mkdir(parents=True, exist_ok=True)
    for f in _FILES:
        shutil.copy2(src / f, out / f)
    info: dict[str, Any] = {"source": str(src), "lineage": run_lineage(src)}
    if cache_window is not None:
        from hand2world.models.config import load_config, save_config

        cfg = load_config(out / "config.json")
        info["cache_window"] = {"trained": cfg.cache_window, "exported": cache_window}
        save_config(dataclasses.replace(cfg, cache_window=cache_window), out / "config.json")
    (out / "training.json").write_text(json.dumps(info, indent=1) + "\n")
    write_checksums(out)
    size_mb = sum(p.stat().st_size for p in out.iterdir() if p.is_file()) / 2**20
    if size_mb > max_mb:
        raise ValueError(f"{out} is {size_mb:.1f} MB > {max_mb} MB")
    load_video_model(out)  # loads (and verifies checksums) like serve will
    log.info("exported %s -> %s (%.1f MB)", src, out, size_mb)
    return {"out": str(out), "size_mb": round(size_mb, 2), "source": str(src)}


def _cmd_export(args: argparse.Namespace) -> int:
    print(json.dumps(export_release(args.release, args.out, args.max_mb, args.allow_no_card, args.cache_window),
                     indent=2))
    return 0


def register(sub: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="a student release -> a shippable weights folder (checksums, lineage)")
    p.add_argument("release", help="run name or folder (e.g. student_tiny_dmd)")
    p.add_argument("--out", default="weights/default", help="destination folder (default weights/default)")
    p.add_argument("--max-mb", type=float, default=50.0)
    p.add_argument("--allow-no-card", action="store_true")
    p.add_argument("--cache-window", type=int, default=None,
                   help="streaming KV window (latent frames besides the sink) of the exported model")
    p.set_defaults(func=_cmd_export)
