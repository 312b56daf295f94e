"""linclass: linear classifiers f(x, W) = Wx + b on CIFAR-10 with reproducible experiment tracking.

Packages, from the maths out:
    settings, files, config   every setting declared once; files that appear whole or not at all; conf/ -> params.yaml
    core/                     model, losses, regularizers, sgd, metrics, uint8 pixels (the maths)
    data/                     download, cifar (the official layout), preprocess, synthetic
    features, plots           image features (hue, value, HOG); the pictures of the stages and studies
    studies/                  weight scaling, loss questions, hard cases, regularization path, report
    tracking/                 MLflow: the store, runs, what they record, the registry, the served model and UI
    plumbing/                 what a DVC stage runs on: its entry point, file layout, threads, progress
    orchestration/            commands around the pipeline: sweeps (queue, Ray), the team stack, the guard
    cli                       the `linclass` command
"""

__version__ = "0.1.0"
