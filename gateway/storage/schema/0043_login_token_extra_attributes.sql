-- The OIDC mapping provider's extra attributes (``extra_attributes``, ``get_extra_attributes``):
-- a JSON object kept with the login token, added to the /login response that redeems it.
ALTER TABLE login_tokens ADD COLUMN extra_attributes TEXT;
