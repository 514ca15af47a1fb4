"""Gateway's default pages and emails (Jinja templates), shipped as package data.

Operators override them one file at a time with ``templates.custom_template_directory``.
"""
