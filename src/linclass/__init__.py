"""linclass: linear classifiers f(x, W) = Wx + b on CIFAR-10 with reproducible experiment tracking.

The numerical core lives in small modules read top to bottom:
model (scores, init), losses (SVM / squared SVM / softmax), regularizers (L1 / L2 / elastic net),
sgd (minibatch SGD), metrics (accuracy, confusion matrix).
"""

__version__ = "0.1.0"
