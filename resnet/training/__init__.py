"""Training: the one SGD/cosine loop (loop.py), the resnet.train recipe (recipe.py), the demo model (demo_model.py)."""
