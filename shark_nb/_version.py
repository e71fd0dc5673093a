"""The package's one version string: ``shark_nb.__version__``, the client's User-Agent and
pyproject.toml's ``[tool.setuptools.dynamic] version`` all read it from here."""

__version__ = "0.1.0"
