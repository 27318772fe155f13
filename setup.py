"""Build the optional compiled helpers (masking, small-frame parsing); everything else is in
pyproject.toml.

``optional=True``: without a C compiler the build still succeeds and wsclient uses its
pure-Python implementations instead.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "wsclient.protocol._speedups",
            sources=["src/wsclient/protocol/_speedups.c"],
            optional=True,
        )
    ]
)
