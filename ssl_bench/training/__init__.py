"""The training primitives every transfer strategy uses: :class:`~.context.FitContext` (the
facade), a fold's batches, network and optimiser builders, the training loop, device and
precision handling, CUDA graphs, progress display and scoring."""
