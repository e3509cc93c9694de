"""The client's version, as the distribution ``sandkeeper-client`` carries it."""

__version__ = "0.1.0"
USER_AGENT = f"sandkeeper-client-python/{__version__}"
