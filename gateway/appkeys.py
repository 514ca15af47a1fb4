"""Typed aiohttp application keys."""

from aiohttp import web

from .server import HomeServer

HS = web.AppKey("homeserver", HomeServer)
