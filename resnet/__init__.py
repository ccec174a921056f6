"""The one-command end-to-end run: ``python -m resnet.run``."""
