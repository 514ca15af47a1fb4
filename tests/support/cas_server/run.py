"""Entry point: migrate, create the test users, serve on 127.0.0.1:<port>, print READY <url>."""

import json
import os
import sys

import django


def main() -> None:
    port = int(sys.argv[1])
    django.setup()
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler
    from django.core.wsgi import get_wsgi_application

    call_command("migrate", verbosity=0, interactive=False)
    for name, (password, full_name, staff) in json.loads(os.environ["CAS_TEST_USERS"]).items():
        first, _, last = full_name.partition(" ")
        User.objects.create_user(name, email=f"{name.lower()}@cas.test", password=password, first_name=first,
                                 last_name=last, is_staff=staff)
    httpd = ThreadedWSGIServer(("127.0.0.1", port), WSGIRequestHandler)
    httpd.set_app(get_wsgi_application())
    print(f"READY http://127.0.0.1:{port}/cas", flush=True)
    httpd.serve_forever()


if __name__ == "__main__":
    main()
