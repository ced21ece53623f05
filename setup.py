"""Build glue that pyproject.toml cannot express: the package list under the ``codecs/`` -> ``modelcodecs``
mapping, and the native extensions (C++ cores in ``native/`` with thin Cython faces)."""

import os

import numpy
from Cython.Build import cythonize
from setuptools import Extension, find_packages, setup

# DELTAVAULT_BOUNDSCHECK=1 builds the Cython faces with bounds checks on, to debug them (the suite passes either way).
checked = os.environ.get("DELTAVAULT_BOUNDSCHECK") == "1"
directives = {"language_level": 3, "boundscheck": checked, "wraparound": checked, "initializedcheck": checked}

extensions = [
    Extension(
        "modelcodecs._fmdelta",
        sources=["native/fmdelta/_fmdelta.pyx", "native/fmdelta/fmdelta.cpp"],
        depends=["native/fmdelta/fmdelta.h", "native/fmdelta/fmdelta_core.inc", "native/common/isa.h"],
        include_dirs=["native/fmdelta", "native/common", numpy.get_include()],
        language="c++",
        extra_compile_args=["-O3", "-std=c++17", "-fno-strict-aliasing"],
    ),
    Extension(
        "modelcodecs._lossy_kernels",
        sources=["native/lossy/_lossy_kernels.pyx", "native/lossy/lossy.cpp"],
        depends=["native/lossy/lossy.h", "native/lossy/lossy_core.inc", "native/common/isa.h"],
        include_dirs=["native/lossy", "native/common"],
        language="c++",
        # no fused multiply-add or reassociation: the decoders reproduce the format's reference arithmetic bit for
        # bit; no FP traps or errno, so the branch-free loops vectorise (neither changes a result)
        extra_compile_args=["-O3", "-std=c++17", "-fno-strict-aliasing", "-ffp-contract=off", "-fno-math-errno",
                            "-fno-trapping-math"],
    ),
]

setup(
    packages=["modelcodecs", *(f"modelcodecs.{p}" for p in find_packages("codecs"))]
    + find_packages(include=["webapp", "webapp.*", "workers", "workers.*"]),
    ext_modules=cythonize(extensions, compiler_directives=directives),
)
