"""Shared fixtures: a scripted chat-completions server on 127.0.0.1 (see tests/llm_server.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from llm_server import ScriptedChatServer


@pytest.fixture(scope="session")
def _chat_server_session() -> Iterator[ScriptedChatServer]:
    server = ScriptedChatServer()
    yield server
    server.close()


@pytest.fixture()
def chat_server(_chat_server_session: ScriptedChatServer) -> ScriptedChatServer:
    """The running server with an empty request log and the default script (reply "ok")."""
    _chat_server_session.set_script("ok")
    return _chat_server_session
