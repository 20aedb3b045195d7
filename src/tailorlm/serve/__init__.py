"""`tailor serve`: an OpenAI-compatible server for Systems, with feedback, A/B tests, auth and rate limits."""
