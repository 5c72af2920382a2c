"""Opening the package or reading a TIFF must not import TensorFlow (a multi-second import)."""

import subprocess
import sys
import textwrap


def test_import_and_tiff_reading_do_not_import_tensorflow(tmp_path):
    code = textwrap.dedent(
        f"""
        import sys, numpy, tifffile
        tifffile.imwrite({str(tmp_path / "x.tif")!r}, numpy.zeros((2, 8, 8), 'uint8'))
        import napari_em_unet
        from napari_em_unet import cli
        from napari_em_unet.io import tiff as tiff_io
        from napari_em_unet.learning import metrics, targets, synthetic
        from napari_em_unet.segmentation import watershed
        from napari_em_unet.analysis import measure, proofread
        from napari_em_unet.io import voxel_size
        from napari_em_unet.model.files import read_info, bundled_model_path
        from napari_em_unet.segmentation import tiling, pipeline
        tiff_io.read_tiff({str(tmp_path / "x.tif")!r})
        heavy = [m for m in ("tensorflow", "keras", "openvino") if m in sys.modules]
        print(",".join(heavy) or "clean")
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "clean"
