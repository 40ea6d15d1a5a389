"""Grounded captioning: models turn pixels into facts; a writer turns the facts into words."""
