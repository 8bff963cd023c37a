"""hand2world.eval: `hand2world eval` (adapters, metrics, scores, report, driver) and the built-in
benchmarks; docs/eval.md."""
