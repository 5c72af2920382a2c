"""The network and its files: the U-Net, ``.keras`` model files with our metadata,
bioimage.io packages, ONNX export, and the one place TensorFlow is imported (backend)."""
