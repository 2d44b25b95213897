"""sftctl: validated, reproducible ms-swift SFT runs from YAML presets."""

__version__ = "0.1.0"
