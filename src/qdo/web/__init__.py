"""``qdo serve``: a web dashboard and a JSON REST API over the queues (the ``web`` extra:
``pip install 'qdo-queue[web]'``, Starlette and uvicorn).

Everything needs the server's token: ``Authorization: Bearer TOKEN``, or the cookie
``qdo_authkey`` that ``POST /site/login`` (form field ``password``: the token) sets, as
the original QDO web server's clients expect.  See ``qdo.web.app`` for the routes.
"""
