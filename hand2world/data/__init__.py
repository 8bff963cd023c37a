"""hand2world.data: the sharded clip format every training source writes and ``ClipDataset`` reads.

See ``clips`` for the on-disk layout and the per-clip keys.
"""

from hand2world.data.clips import (
    ACTION_DIM,
    ARRAY_KEYS,
    MAX_OBJECTS,
    REQUIRED_KEYS,
    ClipDataset,
    ClipWriter,
    actions_from,
    read_index,
    scene_image,
    validate_clip,
    write_index,
    write_shard,
)

__all__ = [
    "ACTION_DIM",
    "ARRAY_KEYS",
    "MAX_OBJECTS",
    "REQUIRED_KEYS",
    "ClipDataset",
    "ClipWriter",
    "actions_from",
    "read_index",
    "scene_image",
    "validate_clip",
    "write_index",
    "write_shard",
]
