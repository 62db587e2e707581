"""localmodel: keeps Docker Model Runner engine settings declared, applied and verified."""

__version__ = "0.1.0"
