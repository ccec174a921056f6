"""Evaluation: runners (one per runtime) and the one loop they all share."""
