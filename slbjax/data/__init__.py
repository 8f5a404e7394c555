"""Loaders, feature extraction, windowing, splits and synthetic cohorts."""
