"""The engine: the evaluation plan and its back-ends (diagonal seeds, column windows,
sparsity, compiled loops)."""
