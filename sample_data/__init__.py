"""The synthetic ssTEM-like sample shipped with the package (see README.md in this folder)."""
