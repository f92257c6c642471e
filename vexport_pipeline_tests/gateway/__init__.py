"""The download gateway over real HTTP (uvicorn on a free port), the links CLI and a real browser."""
