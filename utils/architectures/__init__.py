"""Model definitions the torchvision zoo lacks; utils/models.py is the registry that builds them by name."""
