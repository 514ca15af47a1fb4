"""Gateway as the spec's OAuth 2.0 authorisation server.

Spec: https://spec.matrix.org/latest/client-server-api/#oauth-20-api

- ``clients``: client metadata rules (RFC 7591 and the spec's "Client metadata"), redirect URIs
- ``scopes``: the Matrix scope tokens
- ``pkce``: RFC 7636 ``S256``
- ``metadata``: server metadata (``auth_metadata``) and OpenID discovery
- ``service``: clients, grants, sessions and tokens (codes, refresh rotation, revocation,
  the device grant), all in the database
- ``id_tokens``: the RS256 key (in the database), its JWKS and ``id_token``
- ``pages``: the browser side (login, upstream IdPs, registration, consent, device code
  entry, account management)
"""
