"""DS01: one shared GPU server turned into a data-science lab."""

__version__ = "0.1.0"
