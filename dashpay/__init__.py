"""dashpay: a self-hosted, watch-only Dash payment processor."""

__version__ = "0.1.0"
