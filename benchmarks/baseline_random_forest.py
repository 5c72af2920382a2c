"""The ilastik-style baseline: a random forest on multiscale filter features.

Features per scale (sigma 0.7 to 10, as ilastik's pixel classification offers): Gaussian
smoothing, gradient magnitude, Laplacian of Gaussian, difference of Gaussians and the two
Hessian eigenvalues, plus the raw intensity. Trained on a random sample of labelled pixels;
its membrane probability goes through the same watershed as the U-Net's.
"""

from __future__ import annotations

import numpy as np

SIGMAS = (0.7, 1.0, 1.6, 3.5, 5.0, 10.0)


def features(image: np.ndarray) -> np.ndarray:
    """(H, W, F) float32 feature stack of one normalised slice."""
    from scipy import ndimage
    from skimage.feature import hessian_matrix, hessian_matrix_eigvals

    image = image.astype(np.float32)
    out = [image]
    for s in SIGMAS:
        smooth = ndimage.gaussian_filter(image, s)
        out.append(smooth)
        out.append(ndimage.gaussian_gradient_magnitude(image, s))
        out.append(ndimage.gaussian_laplace(image, s))
        out.append(smooth - ndimage.gaussian_filter(image, s * 1.6))
        eig = hessian_matrix_eigvals(
            hessian_matrix(image, s, order="rc", use_gaussian_derivatives=False)
        )
        out.extend([eig[0], eig[1]])
    return np.stack(out, axis=-1).astype(np.float32)


class RandomForestBaseline:
    def __init__(self, n_estimators: int = 100, samples_per_slice: int = 15000, seed: int = 0):
        from sklearn.ensemble import RandomForestClassifier

        self.samples = samples_per_slice
        self.rng = np.random.default_rng(seed)
        self.forest = RandomForestClassifier(
            n_estimators=n_estimators, min_samples_leaf=5, n_jobs=2, random_state=seed
        )

    def fit(self, images: list[np.ndarray], labels: list[np.ndarray]) -> RandomForestBaseline:
        xs, ys = [], []
        for image, lab in zip(images, labels, strict=True):
            f = features(image).reshape(-1, len(SIGMAS) * 6 + 1)
            idx = self.rng.choice(f.shape[0], self.samples, replace=False)
            xs.append(f[idx])
            ys.append((lab.ravel()[idx] == 0).astype(np.uint8))
        self.forest.fit(np.concatenate(xs), np.concatenate(ys))
        return self

    def membrane_probability(self, image: np.ndarray) -> np.ndarray:
        f = features(image)
        return self.forest.predict_proba(f.reshape(-1, f.shape[-1]))[:, 1].reshape(image.shape)
