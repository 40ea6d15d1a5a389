"""Hosted and OpenAI-compatible vision APIs: ``openai:``, ``openai-compatible:``, ``gemini:``,
``anthropic:``. The shared loop is ``common``; each vendor's wire format is its
:mod:`captionkit.providers` class, so a module here is only the vendor's option defaults."""
