"""An example third-party zoo plugin."""
