"""The built-in guardrail checks; `guardrails.registry` maps their dotted names to classes."""
