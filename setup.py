"""Wirelab's protocol modules compiled with mypyc where a C compiler is at hand (see
`src/wirelab/_compiled.py` for why and which); without one, or with WIRELAB_PURE_PYTHON set, the
same modules install as plain Python. Everything else about the package is in pyproject.toml."""

import os
import runpy

from setuptools import setup


def extensions() -> list[object]:
    listed = runpy.run_path("src/wirelab/_compiled.py")
    if os.environ.get(listed["PURE_PYTHON_ENV"]):
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        return []
    paths = ["src/" + name.replace(".", "/") + ".py" for name in listed["COMPILED"]]
    modules = mypycify(paths, opt_level="3")
    for module in modules:
        module.optional = True  # a failed build leaves the plain Python modules in place
    return modules


setup(ext_modules=extensions())
