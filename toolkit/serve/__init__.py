"""`toolkit serve`: an OpenAI-compatible HTTP server that batches every open stream into one
step (engine.py), with the stream's state as a value the client can hold (state_token.py).

Needs the `serve` extra (FastAPI, uvicorn, prometheus-client); the runtime path does not.
"""
