"""Learning from labels: training targets, augmentation, the training loop, the ISBI 2012
scores, and the synthetic data the tests and the sample use."""
