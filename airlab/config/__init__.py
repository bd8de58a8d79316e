"""Config schemas and start-up validation."""

from airlab.config.validation import validate_config

__all__ = ["validate_config"]
