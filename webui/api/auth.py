"""HTTP Basic auth for the API routes when the server has credentials (`--api-auth`, else the UI's)."""

from __future__ import annotations

import fastapi
from fastapi.security import HTTPBasic, HTTPBasicCredentials


def basic_auth_dependency(credentials) -> fastapi.params.Depends:
    """A FastAPI dependency answering 401 unless the request carries one of `credentials.users`."""
    basic = HTTPBasic(auto_error=False)

    def check(given: HTTPBasicCredentials | None = fastapi.Depends(basic)) -> None:
        if given is None or not credentials.check(given.username, given.password):
            raise fastapi.HTTPException(401, "Incorrect or missing username/password",
                                        headers={"WWW-Authenticate": "Basic"})

    return fastapi.Depends(check)
