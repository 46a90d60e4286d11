"""Packaging (metadata in setup.cfg). Two things setup.cfg cannot say:

* the twistd plugin `twisted/plugins/proxyd_plugin.py` ships as a module of the
  `twisted.plugins` namespace (there is no `twisted/plugins/__init__.py` here, and there must
  not be: Twisted's own package owns it), so `twistd proxyd` and `twistd proxyd-smsc` work
  from any directory wherever the distribution is installed;
* `conf/` (the example config, the filter word lists, the systemd unit, the monitoring files)
  is copied into the built package as `proxyd/_conf`, where `proxyd.shipped` finds it
  (`proxyd-admin init DIR` writes it out). A checkout (an editable install) uses `conf/`
  itself.
"""
import os
import shutil

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))


class BuildWithConf(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return      # an editable install reads conf/ from the checkout
        src = os.path.join(HERE, "conf")
        dst = os.path.join(self.build_lib, "proxyd", "_conf")
        if os.path.isdir(dst):
            shutil.rmtree(dst)
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*~", "*.pyc", "__pycache__"))


setup(
    packages=find_packages(include=["proxyd", "proxyd.*"]) + ["twisted.plugins"],
    cmdclass={"build_py": BuildWithConf},
)
