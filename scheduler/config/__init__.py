"""Configuration: load YAML job definitions into frozen, validated models.

Use :func:`load_config`; it returns a :class:`Config` or raises ``ConfigError`` listing every
problem with file, line, job and field.
"""

from scheduler.config.loader import JOB_MODELS, Config, config_files, json_schema, load_config

__all__ = ["JOB_MODELS", "Config", "config_files", "json_schema", "load_config"]
