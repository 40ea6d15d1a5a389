"""Captioning metrics, reference datasets and reports. Scores texts; never imports a backend."""
