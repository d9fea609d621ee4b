"""lth: lottery tickets, supermasks and the ticket file."""

__version__ = "0.1.0"
