"""kitbuilder: build, sign, verify and apply offline kits."""

__version__ = "0.1.0"
