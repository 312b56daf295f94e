"""linclass: linear classifiers f(x, W) = Wx + b on CIFAR-10 with reproducible experiment tracking.

Layers, each importing only the ones above it:
    constraints, files   allowed parameter values; files that appear whole or not at all
    core/                model, losses, regularizers, sgd, metrics (the maths)
    data/                download, cifar (the official layout), preprocess, synthetic
    studies/             weight scaling, loss questions, hard cases, pictures, report
    plumbing/            config, stage, paths, tracking, sweep (what the DVC stages run on)
"""

__version__ = "0.1.0"
