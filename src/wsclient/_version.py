"""The version of wsclient, read by the build backend and exposed as ``wsclient.__version__``."""

__version__ = "0.1.0"
