"""Reference: Granian (ASGI, uvloop) answering with the mock's own responses, no upstream hop.

It is what serving the same bytes costs the server stack itself, with nothing relayed: the
ceiling of any ASGI app under Granian on this machine, and the floor of its memory per
open stream.

    granian --interface asgi --loop uvloop bench.granian_bare:app
"""

from __future__ import annotations

from fastgw.mock.asgi import make_asgi_app

app = make_asgi_app("")
