"""The MLflow pyfunc model of a trained linear classifier, as code (MLflow's "models from code").

MLflow copies this file into the model and runs it on load. A pixel model imports nothing from linclass: it
loads wherever mlflow, numpy and pandas are installed. A model on image features computes them with
linclass.features, which travels with it (the model's code/ folder: linclass.features and the modules it
imports) and needs pydantic besides. Logged by linclass.tracking.registry.

Input: raw images, uint8 (N, 32, 32, 3) (height, width, RGB channel), as a numpy array.
Everything travels in the artifact `weights` (.npz): W (C, D), b (C,), class_names (C,), output
("probabilities" or "scores") and the input's preprocessing. The scores are computed with the same float32
operations as the pipeline's, so they are its scores, bit for bit. A pixel model (mean_image (D,), scale):
    x = image.transpose(channel, height, width).reshape(D)     CIFAR's row layout: R, G, B planes
    X = (x - mean_image) / scale                               the design matrix (N, D), never formed:
    scores = X @ W.T + b = (float32(x) @ W.T - W @ mean_image) / scale + b,   on blocks of 32 rows
A features model (features: the settings of linclass.features.image_features as JSON; feature_mean,
feature_std (D,): the training split's statistics):
    X = (image_features(images, **features) - feature_mean) / feature_std,   scores = X @ W.T + b
Output: a DataFrame with `class` (the predicted class name, argmax of the scores) and one column per
class name: the softmax probabilities (output "probabilities", softmax models) or the raw scores
(output "scores", SVM models).
"""
import json

import numpy as np
import pandas as pd
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel


class LinearClassifier(PythonModel):
    # The input is a uint8 tensor that the signature describes; MLflow's type-hint validation is not
    # used (without this, MLflow suggests type hints at every log and load).
    _skip_type_hint_validation = True

    def load_context(self, context):
        with np.load(context.artifacts["weights"]) as arrays:
            self.W, self.b = arrays["W"], arrays["b"]
            self.class_names, self.output = arrays["class_names"].tolist(), str(arrays["output"])
            self.features = json.loads(str(arrays["features"])) if "features" in arrays else None
            if self.features is None:
                self.mean_image, self.scale = arrays["mean_image"], np.float32(arrays["scale"])
            else:
                self.feature_mean, self.feature_std = arrays["feature_mean"], arrays["feature_std"]

    def scores(self, images):
        """(N, C) scores of uint8 images (N, H, W, 3), computed exactly as the pipeline does."""
        images = np.asarray(images)
        if images.ndim == 3:
            images = images[None]
        if images.dtype != np.uint8 or images.shape[1:] != (32, 32, 3):
            raise ValueError(f"expected uint8 images (N, 32, 32, 3), got {images.dtype} {images.shape}")
        if self.features is not None:
            from linclass.features import image_features, standardize  # from the model's code/ folder

            X = standardize(image_features(images, **self.features), self.feature_mean, self.feature_std)
            return X @ self.W.T + self.b   # linclass.core.model.class_scores on float rows
        dim = self.W.shape[1]
        rows = images.transpose(0, 3, 1, 2).reshape(len(images), dim)
        scores = np.empty((len(rows), len(self.b)), dtype=self.W.dtype)
        for lo in range(0, len(rows), 32):  # the blocks of linclass.core.pixels.BLOCK_ROWS rows
            np.matmul(rows[lo:lo + 32].astype(self.W.dtype), self.W.T, out=scores[lo:lo + 32])
        scores -= self.W @ self.mean_image
        scores /= self.scale
        scores += self.b
        return scores

    def predict(self, context, model_input, params=None):
        scores = self.scores(model_input)
        values = scores
        if self.output == "probabilities":
            shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
            values = shifted / shifted.sum(axis=1, keepdims=True)
        table = pd.DataFrame(values, columns=self.class_names)
        table.insert(0, "class", np.asarray(self.class_names)[np.argmax(scores, axis=1)])
        return table


set_model(LinearClassifier())
