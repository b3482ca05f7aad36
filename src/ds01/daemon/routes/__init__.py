"""The API's route tables: one module per noun, each ``routes(services) -> list[web.RouteDef]``.

A route is thin: parse the body/query (``daemon.http``), call one service method in a worker
thread, respond. ``daemon.main.build_app`` adds every table to the application.
"""
