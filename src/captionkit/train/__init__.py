"""Fine-tuning encoder-decoder captioners and cleaning training data."""
