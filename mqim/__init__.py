"""mqim: instant messaging over MQTT."""

__version__ = "0.1.0"
__all__ = ["__version__"]
