"""Build the optional compiled masking routine; everything else is in pyproject.toml.

``optional=True``: without a C compiler the build still succeeds and wsclient uses its
pure-Python masking instead.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "wsclient.protocol._mask",
            sources=["src/wsclient/protocol/_mask.c"],
            optional=True,
        )
    ]
)
