"""One aiohttp session per client, borrowed from the caller or created on first use.

A caller that passes its own :class:`aiohttp.ClientSession` keeps owning it (the client never
closes it); otherwise the client creates one lazily, inside the running event loop, and closes it
in :meth:`HttpSession.close`. A session found closed is replaced by a new one of the client's own.
"""

from __future__ import annotations

import aiohttp

__all__ = ["USER_AGENT", "HttpSession"]

USER_AGENT = "marketlake/0.1"


class HttpSession:
    """Holds a client's session.

    Args:
        session: A session to borrow; ``None`` creates one on first use.
        limit: Connections the created session's connector keeps at most.
        auto_decompress: Whether the created session undoes ``Content-Encoding`` (the trade
            archives are ``.csv.gz`` bodies that must stay compressed).
    """

    def __init__(
        self, session: aiohttp.ClientSession | None = None, *, limit: int = 64, auto_decompress: bool = True
    ) -> None:
        self._session = session
        self._own = session is None
        self._limit = limit
        self._auto_decompress = auto_decompress

    def get(self) -> aiohttp.ClientSession:
        """The session to send with (created now if there is none or it was closed)."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._limit),
                headers={"User-Agent": USER_AGENT},
                auto_decompress=self._auto_decompress,
            )
            self._own = True
        return self._session

    async def close(self) -> None:
        """Close the session if it is the client's own."""
        if self._own and self._session is not None:
            await self._session.close()
            self._session = None
