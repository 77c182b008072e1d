"""Studies whose question is answered: each keeps its docs page, and its script to rerun it.

- `bench_decoder_scale`: the decoder scale's data-dependent start against the authors' zero
  start (docs/benchmarks_decoder_scale.md);
- `bench_cifar_photos`: the CIFAR-10 example on crops of photographs
  (docs/benchmarks_cifar_photos.md; needs the `[bench]` extra, for scikit-image's photographs);
- `bench_stability`: the ResNet VAE at five times the default learning rate
  (docs/benchmarks_stability.md).

Run from the repository root, e.g. `python -m bench.studies.bench_stability --help`.
"""
