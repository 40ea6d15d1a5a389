"""Hosted and OpenAI-compatible vision APIs: ``openai:``, ``openai-compatible:``, ``gemini:``,
``anthropic:``. Each module is one provider's request body; the shared loop is ``common``."""
