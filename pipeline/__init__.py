"""publish: a newsletter pipeline from Markdown issues to email that works in every inbox."""

__version__ = "0.1.0"
