"""Serve the sandbox partner on its own: python -m app.sandbox --host 127.0.0.1 --port 9100."""

from __future__ import annotations

import argparse

import uvicorn

from app.sandbox.app import create_sandbox_app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m app.sandbox", description="Serve the sandbox partner API."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--token-ttl", type=int, default=3600, help="access token lifetime in seconds")
    parser.add_argument("--client-id", default="sandbox-client")
    parser.add_argument("--client-secret", default="sandbox-secret")
    args = parser.parse_args(argv)
    app = create_sandbox_app(
        client_id=args.client_id, client_secret=args.client_secret, token_ttl=args.token_ttl
    )
    # Warning level and no access log: the test-suite and load tests run it as a quiet subprocess.
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
