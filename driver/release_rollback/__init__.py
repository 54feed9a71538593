"""release-rollback: roll a whole release back to the previous known-good release."""

__version__ = "1.0.0"
