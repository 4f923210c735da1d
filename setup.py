"""Build the C share-check extension; everything else is declared in pyproject.toml.

The extension is compiled with -O3 and no -march flag: the SHA-NI code path is enabled per function with
target attributes and chosen at run time (cpuid), so one wheel runs on every x86-64 and non-x86 machine.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "pool._sharecheck",
            sources=["pool/_sharecheck.c"],
            extra_compile_args=["-O3", "-std=c99", "-Wall", "-Wextra"],
        )
    ]
)
