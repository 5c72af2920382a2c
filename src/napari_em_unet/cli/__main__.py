"""``python -m napari_em_unet.cli``."""

import sys

from . import main

sys.exit(main())
