"""The web console: server-rendered pages over the config and the state store.

Served by the daemon's operations endpoint (``http.listen``; loaded on the first page request,
so an idle daemon never imports it) and by ``scheduler web`` (:mod:`scheduler.web.server`).
Modules: ``wire`` (request and response), ``auth`` (token, sessions, CSRF), ``app`` (routes),
``views`` (what the pages show), ``words`` (schedules in words), ``chart`` (the SVG chart),
``spec`` (the masked job spec), ``templates/`` and ``static/`` (shipped as package data).
This package imports nothing at its top level.
"""
