"""`hand2world export`: a student release becomes a verified, size-checked weights folder."""

from __future__ import annotations

import json

import pytest

from hand2world.checkpoints import ChecksumError, load_video_model, random_student, write_student_release
from hand2world.export import export_release
from hand2world.models import DIT_PRESETS, StreamConfig


def _release(tmp_path):
    model, ae = random_student(DIT_PRESETS["tiny"])
    return write_student_release(tmp_path / "run" / "final", model, ae, StreamConfig(steps=2), checksums=False)


def test_export_writes_checksums_lineage_and_loads(tmp_path):
    src = _release(tmp_path)
    out = tmp_path / "weights" / "default"
    with pytest.raises(FileNotFoundError, match="MODEL_CARD"):
        export_release(src, out)
    out.mkdir(parents=True)
    (out / "MODEL_CARD.md").write_text("# card\n")
    summary = export_release(src, out)
    assert 10 < summary["size_mb"] < 50
    sums = json.loads((out / "checksums.json").read_text())
    assert {"model.safetensors", "autoencoder.safetensors", "stream.json", "config.json"} <= set(sums)
    lineage = json.loads((out / "training.json").read_text())["lineage"]
    assert lineage and lineage[0]["run"] == "run"
    model, _, stream, _ = load_video_model(out)
    assert stream.steps == 2 and model.config == DIT_PRESETS["tiny"]
    with (out / "model.safetensors").open("r+b") as fh:  # a corrupted shipped file is refused at load
        fh.seek(200)
        fh.write(b"\x00\x01\x02\x03")
    with pytest.raises(ChecksumError):
        load_video_model(out)


def test_export_refuses_oversize_and_non_student(tmp_path):
    src = _release(tmp_path)
    out = tmp_path / "w"
    with pytest.raises(ValueError, match="MB"):
        export_release(src, out, max_mb=1.0, allow_no_card=True)
    (src / "stream.json").unlink()
    with pytest.raises(FileNotFoundError, match="not a student release"):
        export_release(src, tmp_path / "w2", allow_no_card=True)


def test_export_sets_the_streaming_window(tmp_path):
    """``cache_window`` changes only the exported config's KV window (recorded in training.json); the
    generator then evicts to it."""
    from hand2world.stream import StreamingGenerator

    src = _release(tmp_path)
    out = tmp_path / "w"
    export_release(src, out, allow_no_card=True, cache_window=2)
    model, _, _, _ = load_video_model(out)
    assert model.config.cache_window == 2 and DIT_PRESETS["tiny"].cache_window == 8
    assert json.loads((out / "training.json").read_text())["cache_window"] == {"trained": 8, "exported": 2}
    gen = StreamingGenerator.from_pretrained(out)
    import numpy as np

    gen.start(np.zeros((128, 128, 3), np.uint8))
    for _ in range(5):
        gen.step(np.zeros((1, 128, 128, 3), np.uint8), np.eye(4)[None])
    assert gen.cache.frames <= 1 + 2 + 1  # sink + window + the block just committed
