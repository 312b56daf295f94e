"""Imported by Hydra's plugin scan when DVC composes conf/ (`dvc exp run -S ...`; DVC's hydra.plugins_path
is the project root): registers the settings check, so that a bad override fails the composition before
DVC writes params.yaml or deletes any output, and exposes the two plugins that refuse an unknown option
of a conf/ group (`-S loss=hinge`) in one line. See linclass.config.register and unknown_option_plugins.
"""
import sys
from pathlib import Path

_SRC = str(Path(__file__).resolve().parents[2] / "src")
if _SRC not in sys.path:
    sys.path.insert(0, _SRC)   # this project's library, also when dvc is not the venv's

from linclass.config import register, unknown_option_plugins  # noqa: E402

register()
UnknownOptions, AfterConf = unknown_option_plugins()
