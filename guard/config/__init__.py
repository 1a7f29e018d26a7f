"""Configuration: the settings model (``settings``), loaded from TOML then the environment, and its reference (``reference``)."""
