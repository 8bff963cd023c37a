"""Benchmark plumbing for ``hand2world bench ...``: registration, common options, summaries.

Rules: speed is measured by benchmarks (medians and p95), never by timed tests. Every benchmark
is a function ``fn(args) -> dict`` registered with ``add_benchmark``; the common options
(``--threads``, ``--json``) and the printing/writing live here once. This module sits at the
ground floor: it imports no package of ours, so every package can register benchmarks.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

__all__ = ["add_benchmark", "summarize"]


def summarize(ms: list[float]) -> dict:
    """Median / p95 / mean of a list of milliseconds."""
    a = np.asarray(ms, dtype=np.float64)
    return {"median_ms": float(np.median(a)), "p95_ms": float(np.percentile(a, 95)), "mean_ms": float(a.mean()),
            "n": int(a.size)}


def _set_threads(n: int) -> None:
    import cv2

    torch.set_num_threads(n)
    cv2.setNumThreads(n)


def add_benchmark(bench: argparse._SubParsersAction, name: str, help: str,
                  fn: Callable[[argparse.Namespace], dict],
                  configure: Callable[[argparse.ArgumentParser], None] | None = None,
                  threads: int = 1) -> argparse.ArgumentParser:
    """Register ``hand2world bench NAME``: ``fn(args)`` returns a JSON-able dict of results."""
    p = bench.add_parser(name, help=help)
    p.add_argument("--threads", type=int, default=threads, help="CPU threads (torch + OpenCV)")
    p.add_argument("--json", help="also write the result here")
    if configure is not None:
        configure(p)

    def run(args: argparse.Namespace) -> int:
        _set_threads(args.threads)
        result = {"benchmark": name, "threads": args.threads, "cpu_count": os.cpu_count(), "torch": torch.__version__,
                  **fn(args)}
        text = json.dumps(result, indent=2)
        print(text)
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(text)
        return 0

    p.set_defaults(func=run)
    return p
