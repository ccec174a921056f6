"""Build backend of pyproject.toml: setuptools', except that a regular (non-editable) wheel is refused.

The suite's top-level packages are named ``utils``, ``evaluation``, ``quantization`` and ``resnet`` (fixed by the
user's scripts); a regular install would copy a package named ``utils`` into site-packages, where it collides
with other projects. ``pip install -e .`` maps the four names to this checkout instead, and that is the only way
this project installs.
"""
from setuptools.build_meta import *  # noqa: F403  (PEP 517/660 hooks: sdist, editable, metadata)
from setuptools.build_meta import build_wheel as _setuptools_build_wheel  # noqa: F401


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):  # noqa: ARG001
    raise SystemExit("model-lightweight-suite installs only in editable mode: pip install -e . (a regular install "
                     "would put packages named utils/evaluation/quantization/resnet into site-packages)")
