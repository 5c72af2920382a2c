"""Length units as microscopy files write them (ImageJ, OME-XML, OME-Zarr), in nanometres."""

from __future__ import annotations

UNIT_TO_NM = {
    "angstrom": 0.1,
    "nm": 1.0,
    "nanometer": 1.0,
    "nanometre": 1.0,
    # micro sign, Greek mu, and the escaped form ImageJ sometimes writes literally
    "um": 1e3,
    "\u00b5m": 1e3,
    "\u03bcm": 1e3,
    "\\u00b5m": 1e3,
    "micron": 1e3,
    "microns": 1e3,
    "micrometer": 1e3,
    "micrometre": 1e3,
    "mm": 1e6,
    "millimeter": 1e6,
    "cm": 1e7,
    "centimeter": 1e7,
    "m": 1e9,
    "meter": 1e9,
}
"""Nanometres per unit, keyed by the lower-case unit name."""
