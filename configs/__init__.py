"""Shipped presets: this folder is installed as the package sftctl.configs (see pyproject.toml)."""
