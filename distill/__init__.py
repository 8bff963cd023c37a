"""hand2world.distill: teacher -> causal student distillation; built in a later issue."""
