"""Text-only LLM runtimes used by the grounded writer and the rewrite stage."""
